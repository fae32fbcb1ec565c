/*
 * cuda-vecadd: a CUDA smoke test that needs no CUDA toolkit to build (only a C compiler).
 *
 * It loads the driver library at run time (dlopen("libcuda.so.1"), as the CUDA runtime does),
 * so the binary itself contains nothing of NVIDIA's and runs only where the driver's user-space
 * library was made visible: in a Gantry sandbox, only when GPU injection worked.
 *
 * Steps: cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet(0), cuDeviceGetName,
 * cuCtxCreate, cuModuleLoadDataEx (the PTX below, JIT-compiled by the driver for whatever GPU
 * is there), cuMemAlloc x3, cuMemcpyHtoD x2, cuLaunchKernel (c = a + b on 1M floats),
 * cuCtxSynchronize, cuMemcpyDtoH, then every c[i] is compared with a[i] + b[i] computed here.
 *
 * Success: prints "cuda-vecadd: OK device=<name> n=1048576" and exits 0.
 * Failure: prints the failing call, the CUresult code, cuGetErrorName and cuGetErrorString
 * (and the JIT log for a module that does not load) and exits 1.
 *
 * Build: cc -O2 -o cuda-vecadd cuda-vecadd.c -ldl
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;   /* the _v2 API: 64-bit device pointers */
typedef int CUjit_option;

#define CU_JIT_INFO_LOG_BUFFER 3
#define CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

#define N (1 << 20)
#define BLOCK 256

/* c[i] = a[i] + b[i] for i < n. PTX ISA 6.0 for sm_50: every driver since CUDA 9 JIT-compiles it
 * for the GPU at hand (PTX is forward compatible), so no SASS for a particular GPU is needed. */
static const char vecadd_ptx[] =
    ".version 6.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry vecadd(\n"
    "    .param .u64 param_a,\n"
    "    .param .u64 param_b,\n"
    "    .param .u64 param_c,\n"
    "    .param .u32 param_n\n"
    ")\n"
    "{\n"
    "    .reg .pred %p<2>;\n"
    "    .reg .f32 %f<4>;\n"
    "    .reg .b32 %r<6>;\n"
    "    .reg .b64 %rd<11>;\n"
    "\n"
    "    ld.param.u64 %rd1, [param_a];\n"
    "    ld.param.u64 %rd2, [param_b];\n"
    "    ld.param.u64 %rd3, [param_c];\n"
    "    ld.param.u32 %r1, [param_n];\n"
    "    mov.u32 %r2, %ctaid.x;\n"
    "    mov.u32 %r3, %ntid.x;\n"
    "    mov.u32 %r4, %tid.x;\n"
    "    mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "    setp.ge.u32 %p1, %r5, %r1;\n"
    "    @%p1 bra DONE;\n"
    "    cvta.to.global.u64 %rd4, %rd1;\n"
    "    cvta.to.global.u64 %rd5, %rd2;\n"
    "    cvta.to.global.u64 %rd6, %rd3;\n"
    "    mul.wide.u32 %rd7, %r5, 4;\n"
    "    add.s64 %rd8, %rd4, %rd7;\n"
    "    add.s64 %rd9, %rd5, %rd7;\n"
    "    add.s64 %rd10, %rd6, %rd7;\n"
    "    ld.global.f32 %f1, [%rd8];\n"
    "    ld.global.f32 %f2, [%rd9];\n"
    "    add.rn.f32 %f3, %f1, %f2;\n"
    "    st.global.f32 [%rd10], %f3;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n";

static void *libcuda;

static CUresult (*p_cuGetErrorName)(CUresult, const char **);
static CUresult (*p_cuGetErrorString)(CUresult, const char **);
static CUresult (*p_cuInit)(unsigned int);
static CUresult (*p_cuDriverGetVersion)(int *);
static CUresult (*p_cuDeviceGetCount)(int *);
static CUresult (*p_cuDeviceGet)(CUdevice *, int);
static CUresult (*p_cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*p_cuCtxCreate)(CUcontext *, unsigned int, CUdevice);
static CUresult (*p_cuCtxDestroy)(CUcontext);
static CUresult (*p_cuCtxSynchronize)(void);
static CUresult (*p_cuModuleLoadDataEx)(CUmodule *, const void *, unsigned int, CUjit_option *, void **);
static CUresult (*p_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*p_cuModuleUnload)(CUmodule);
static CUresult (*p_cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*p_cuMemFree)(CUdeviceptr);
static CUresult (*p_cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*p_cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*p_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                                    unsigned int, unsigned int, unsigned int, CUstream, void **, void **);

/* The first of the names that the library exports (versioned entry points first). */
static void *sym(const char *name, const char *fallback) {
  void *p = dlsym(libcuda, name);
  if (!p && fallback) p = dlsym(libcuda, fallback);
  if (!p) {
    printf("cuda-vecadd: FAILED: symbol %s missing from libcuda.so.1\n", name);
    exit(1);
  }
  return p;
}

static void check(CUresult r, const char *what) {
  const char *name = NULL, *text = NULL;
  if (r == 0) return;
  if (!p_cuGetErrorName || p_cuGetErrorName(r, &name) != 0 || !name) name = "(unknown error)";
  if (!p_cuGetErrorString || p_cuGetErrorString(r, &text) != 0 || !text) text = "";
  printf("cuda-vecadd: FAILED: %s returned %d %s%s%s%s\n", what, r, name, *text ? " (" : "", text, *text ? ")" : "");
  exit(1);
}

int main(int argc, char **argv) {
  int verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
  libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!libcuda) {
    const char *err = dlerror();
    printf("cuda-vecadd: FAILED: dlopen(libcuda.so.1): %s\n", err ? err : "unknown error");
    return 1;
  }
  *(void **)&p_cuGetErrorName = sym("cuGetErrorName", NULL);
  *(void **)&p_cuGetErrorString = sym("cuGetErrorString", NULL);
  *(void **)&p_cuInit = sym("cuInit", NULL);
  *(void **)&p_cuDriverGetVersion = sym("cuDriverGetVersion", NULL);
  *(void **)&p_cuDeviceGetCount = sym("cuDeviceGetCount", NULL);
  *(void **)&p_cuDeviceGet = sym("cuDeviceGet", NULL);
  *(void **)&p_cuDeviceGetName = sym("cuDeviceGetName", NULL);
  *(void **)&p_cuCtxCreate = sym("cuCtxCreate_v2", "cuCtxCreate");
  *(void **)&p_cuCtxDestroy = sym("cuCtxDestroy_v2", "cuCtxDestroy");
  *(void **)&p_cuCtxSynchronize = sym("cuCtxSynchronize", NULL);
  *(void **)&p_cuModuleLoadDataEx = sym("cuModuleLoadDataEx", NULL);
  *(void **)&p_cuModuleGetFunction = sym("cuModuleGetFunction", NULL);
  *(void **)&p_cuModuleUnload = sym("cuModuleUnload", NULL);
  *(void **)&p_cuMemAlloc = sym("cuMemAlloc_v2", "cuMemAlloc");
  *(void **)&p_cuMemFree = sym("cuMemFree_v2", "cuMemFree");
  *(void **)&p_cuMemcpyHtoD = sym("cuMemcpyHtoD_v2", "cuMemcpyHtoD");
  *(void **)&p_cuMemcpyDtoH = sym("cuMemcpyDtoH_v2", "cuMemcpyDtoH");
  *(void **)&p_cuLaunchKernel = sym("cuLaunchKernel", NULL);

  check(p_cuInit(0), "cuInit");
  int version = 0, count = 0;
  check(p_cuDriverGetVersion(&version), "cuDriverGetVersion");
  check(p_cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (count < 1) {
    printf("cuda-vecadd: FAILED: cuDeviceGetCount found no device\n");
    return 1;
  }
  CUdevice dev;
  char name[256] = "";
  check(p_cuDeviceGet(&dev, 0), "cuDeviceGet(0)");
  check(p_cuDeviceGetName(name, (int)sizeof name - 1, dev), "cuDeviceGetName");
  if (verbose)
    printf("cuda-vecadd: driver API %d.%d, %d device(s), device 0: %s\n", version / 1000, version % 1000 / 10, count, name);

  CUcontext ctx;
  check(p_cuCtxCreate(&ctx, 0, dev), "cuCtxCreate");

  char info_log[8192] = "", error_log[8192] = "";
  CUjit_option opts[] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                         CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {info_log, (void *)(uintptr_t)sizeof info_log, error_log, (void *)(uintptr_t)sizeof error_log};
  CUmodule mod;
  CUresult r = p_cuModuleLoadDataEx(&mod, vecadd_ptx, 4, opts, vals);
  if (r != 0 && error_log[0]) printf("cuda-vecadd: JIT log: %s\n", error_log);
  check(r, "cuModuleLoadData(vecadd PTX)");
  CUfunction fn;
  check(p_cuModuleGetFunction(&fn, mod, "vecadd"), "cuModuleGetFunction(vecadd)");

  size_t bytes = (size_t)N * sizeof(float);
  float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
  if (!a || !b || !c) {
    printf("cuda-vecadd: FAILED: out of host memory\n");
    return 1;
  }
  uint32_t seed = 12345;
  for (int i = 0; i < N; i++) {
    seed = seed * 1664525u + 1013904223u;
    a[i] = (float)(seed >> 8) / 65536.0f;          /* up to 2^16, with fractional bits */
    seed = seed * 1664525u + 1013904223u;
    b[i] = (float)(seed >> 8) / 1048576.0f - 8.0f;
    c[i] = -1.0f;
  }
  CUdeviceptr da, db, dc;
  check(p_cuMemAlloc(&da, bytes), "cuMemAlloc(a)");
  check(p_cuMemAlloc(&db, bytes), "cuMemAlloc(b)");
  check(p_cuMemAlloc(&dc, bytes), "cuMemAlloc(c)");
  check(p_cuMemcpyHtoD(da, a, bytes), "cuMemcpyHtoD(a)");
  check(p_cuMemcpyHtoD(db, b, bytes), "cuMemcpyHtoD(b)");

  unsigned int n = N;
  void *params[] = {&da, &db, &dc, &n};
  check(p_cuLaunchKernel(fn, (N + BLOCK - 1) / BLOCK, 1, 1, BLOCK, 1, 1, 0, NULL, params, NULL), "cuLaunchKernel(vecadd)");
  check(p_cuCtxSynchronize(), "cuCtxSynchronize");
  check(p_cuMemcpyDtoH(c, dc, bytes), "cuMemcpyDtoH(c)");

  long bad = 0, first = -1;
  for (int i = 0; i < N; i++) {
    volatile float want = a[i] + b[i];   /* rounded to float, as add.rn.f32 does */
    if (c[i] != want) {
      if (first < 0) first = i;
      bad++;
    }
  }
  if (bad) {
    printf("cuda-vecadd: FAILED: %ld of %d results wrong; first at %ld: %g + %g gave %g\n",
           bad, N, first, (double)a[first], (double)b[first], (double)c[first]);
    return 1;
  }
  check(p_cuMemFree(da), "cuMemFree(a)");
  check(p_cuMemFree(db), "cuMemFree(b)");
  check(p_cuMemFree(dc), "cuMemFree(c)");
  check(p_cuModuleUnload(mod), "cuModuleUnload");
  check(p_cuCtxDestroy(ctx), "cuCtxDestroy");
  printf("cuda-vecadd: OK device=%s n=%d\n", name, N);
  return 0;
}
