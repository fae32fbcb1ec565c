{
  "targets": [
    {
      "target_name": "gantry-untar",
      "type": "executable",
      "sources": ["src/untar.c", "src/sha256.c"],
      "cflags!": ["-O3", "-Wno-unused-parameter"],
      "cflags": ["-std=c11", "-O2", "-Wall", "-Wextra"],
      "ldflags!": ["-rdynamic"]
    },
    {
      "target_name": "gantry-exec",
      "type": "executable",
      "sources": ["src/exec.c", "src/plan.c"],
      "cflags!": ["-O3", "-Wno-unused-parameter"],
      "cflags": ["-std=c11", "-O2", "-Wall", "-Wextra"],
      "ldflags!": ["-rdynamic"]
    },
    {
      "target_name": "gantry-cuda-version",
      "type": "executable",
      "sources": ["src/cuda-version.c"],
      "cflags!": ["-O3", "-Wno-unused-parameter"],
      "cflags": ["-std=c11", "-O2", "-Wall", "-Wextra"],
      "ldflags!": ["-rdynamic"],
      "libraries": ["-ldl"]
    },
    {
      "target_name": "gantry_native",
      "sources": ["src/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
