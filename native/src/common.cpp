#include "common.h"

#include <string>

namespace lm {

namespace {
thread_local std::string last_error;
}

lm_status fail(lm_status status, const std::string& message) {
  last_error = message;
  return status;
}

const char* last_error_message() { return last_error.c_str(); }

std::string shape_string(const lm_tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; i++) {
    if (i) s += ", ";
    s += std::to_string(t.shape[i]);
  }
  return s + "]";
}

lm_status check_tensor(const lm_tensor* t, const char* name, int ndim, std::initializer_list<lm_dtype> dtypes) {
  if (t == nullptr) return fail(LM_ERR_ARGUMENT, std::string(name) + " is required");
  if (t->ndim != ndim) {
    return fail(LM_ERR_SHAPE, std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                                  shape_string(*t));
  }
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] < 0) return fail(LM_ERR_SHAPE, std::string(name) + " has a negative dimension");
  }
  if (t->data == nullptr && numel(*t) > 0) return fail(LM_ERR_ARGUMENT, std::string(name) + " has no data");
  bool ok = false;
  std::string allowed;
  for (lm_dtype d : dtypes) {
    ok = ok || t->dtype == d;
    if (!allowed.empty()) allowed += " or ";
    allowed += dtype_name(d);
  }
  if (!ok) return fail(LM_ERR_DTYPE, std::string(name) + " must be " + allowed + ", got " + dtype_name(t->dtype));
  return LM_OK;
}

lm_status check_same_device(const char* op, std::initializer_list<const lm_tensor*> tensors, lm_device* device) {
  const lm_tensor* first = nullptr;
  for (const lm_tensor* t : tensors) {
    if (t == nullptr) continue;
    if (first == nullptr) {
      first = t;
      continue;
    }
    if (t->device != first->device || t->device_index != first->device_index) {
      return fail(LM_ERR_DEVICE, std::string(op) + ": tensors are on different devices");
    }
  }
  *device = first ? first->device : LM_CPU;
  return LM_OK;
}

}  // namespace lm
