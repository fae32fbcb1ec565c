// Minimal node-addon-api addon: proves the native build pipeline and tells
// the TypeScript side where the gantry-untar executable is (it is built into
// the same directory as this .node file).
#include <dlfcn.h>
#include <napi.h>

#include <string>

namespace {

Napi::Value Version(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), "gantry-native 0.1.0");
}

// Absolute path of gantry-untar next to this addon, or null if unknown.
Napi::Value UntarPath(const Napi::CallbackInfo& info) {
  Dl_info dl;
  if (dladdr(reinterpret_cast<void*>(&UntarPath), &dl) != 0 && dl.dli_fname != nullptr) {
    std::string p(dl.dli_fname);
    std::string::size_type slash = p.rfind('/');
    if (slash != std::string::npos) {
      return Napi::String::New(info.Env(), p.substr(0, slash + 1) + "gantry-untar");
    }
  }
  return info.Env().Null();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::Function::New(env, Version, "version"));
  exports.Set("untarPath", Napi::Function::New(env, UntarPath, "untarPath"));
  return exports;
}

}  // namespace

NODE_API_MODULE(gantry_native, Init)
