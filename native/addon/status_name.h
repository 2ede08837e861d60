// The status names every binding puts in an error's `code` (the TypeScript wrapper maps them to typed
// errors): one table, so a status added to the C ABI reaches every binding.
#pragma once

#include "loramesh/core.h"

namespace lm::addon {

inline const char* status_name(lm_status s) {
  switch (s) {
    case LM_OK: return "LM_OK";
    case LM_ERR_ARGUMENT: return "LM_ERR_ARGUMENT";
    case LM_ERR_SHAPE: return "LM_ERR_SHAPE";
    case LM_ERR_DTYPE: return "LM_ERR_DTYPE";
    case LM_ERR_SLOT: return "LM_ERR_SLOT";
    case LM_ERR_DEVICE: return "LM_ERR_DEVICE";
    case LM_ERR_CUDA: return "LM_ERR_CUDA";
    case LM_ERR_MEMORY: return "LM_ERR_MEMORY";
    case LM_ERR_UNAVAILABLE: return "LM_ERR_UNAVAILABLE";
    case LM_ERR_NOT_FOUND: return "LM_ERR_NOT_FOUND";
  }
  return "LM_ERR_UNKNOWN";
}

}  // namespace lm::addon
