// Node-API binding of the UCX site transport (ucx_binding.cpp), registered from addon.cpp.
#pragma once
#include <napi.h>

void register_ucx_binding(Napi::Env env, Napi::Object exports);
