// Node-API binding of the shared-memory rings (shm_binding.cpp), registered from addon.cpp.
#pragma once
#include <napi.h>

void register_shm_binding(Napi::Env env, Napi::Object exports);
