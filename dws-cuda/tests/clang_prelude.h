// Stand-ins for what NVRTC provides, so that clang can compile the kernel
// sources as CUDA device code without a CUDA installation
// (`tests/cuda_compile.rs`). Only declarations: the PTX is checked, not run.
#define __CUDACC__ 1
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#include "__clang_cuda_builtin_vars.h"
extern "C" __device__ float expf(float);
extern "C" __device__ float sqrtf(float);
extern "C" __device__ float fmaxf(float, float);
extern "C" __device__ float fminf(float, float);
extern "C" __device__ float roundf(float);
[[maybe_unused]] static __device__ __forceinline__ float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
