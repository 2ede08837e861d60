// Node-API binding of the shared-memory rings (shm_binding.cpp), registered from addon.cpp.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "../src/site_compute.h"

void register_shm_binding(Napi::Env env, Napi::Object exports);

// The packed adapter tables from JS (slots: string[], sites: RingSiteTable[]), copied; null and
// *error on malformed input. Shared by the ring and UCX servers' bindings.
std::shared_ptr<lm::Tables> tables_from_js(const Napi::Value& slots, const Napi::Value& sites, std::string* error);
