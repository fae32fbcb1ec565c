// cuda-vecadd-rt: the same check as cuda-vecadd.c, through the CUDA runtime API, built with
// `nvcc -cudart static` (optional: only where nvcc exists). The static runtime finds the driver
// the way every CUDA application does (dlopen of libcuda.so.1), so in a sandbox it works only
// when GPU injection worked. It needs a driver at least as new as the toolkit it was built with:
// an older driver gives cudaErrorInsufficientDriver, which the check reports as SKIP.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define N (1 << 20)
#define BLOCK 256

__global__ void vecadd(const float *a, const float *b, float *c, unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = __fadd_rn(a[i], b[i]);
}

static void check(cudaError_t r, const char *what) {
  if (r == cudaSuccess) return;
  printf("cuda-vecadd-rt: FAILED: %s returned %d %s (%s)\n", what, (int)r, cudaGetErrorName(r), cudaGetErrorString(r));
  exit(1);
}

int main() {
  int count = 0, driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  printf("cuda-vecadd-rt: driver supports CUDA %d.%d, runtime is CUDA %d.%d\n",
         driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties(0)");
  check(cudaSetDevice(0), "cudaSetDevice(0)");
  size_t bytes = (size_t)N * sizeof(float);
  float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
  unsigned seed = 12345;
  for (int i = 0; i < N; i++) {
    seed = seed * 1664525u + 1013904223u;
    a[i] = (float)(seed >> 8) / 65536.0f;
    seed = seed * 1664525u + 1013904223u;
    b[i] = (float)(seed >> 8) / 1048576.0f - 8.0f;
  }
  float *da, *db, *dc;
  check(cudaMalloc(&da, bytes), "cudaMalloc(a)");
  check(cudaMalloc(&db, bytes), "cudaMalloc(b)");
  check(cudaMalloc(&dc, bytes), "cudaMalloc(c)");
  check(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(a)");
  check(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(b)");
  vecadd<<<(N + BLOCK - 1) / BLOCK, BLOCK>>>(da, db, dc, N);
  check(cudaGetLastError(), "vecadd<<<>>>");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  check(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy(c)");
  long bad = 0;
  for (int i = 0; i < N; i++) {
    volatile float want = a[i] + b[i];
    if (c[i] != want) bad++;
  }
  if (bad) {
    printf("cuda-vecadd-rt: FAILED: %ld of %d results wrong\n", bad, N);
    return 1;
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  printf("cuda-vecadd-rt: OK device=%s n=%d\n", prop.name, N);
  return 0;
}
