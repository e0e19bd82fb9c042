// The CPU emulator of the CUDA kernels: the very kernel sources, compiled by
// the host C++ compiler (build.rs), each grid run block by block with one
// thread per block. Used by the tests to check the lowering and the kernel
// arithmetic without a GPU; see kernels/common.cuh.
#include "common.cuh"
#include "f32.cu"
#include "int8.cu"
#include "int16x8.cu"

#include <string.h>
#include <vector>

thread_local dws_dim3 blockIdx, threadIdx, blockDim, gridDim;
static thread_local std::vector<unsigned long long> dyn_smem;

extern "C" void *dws_emu_dyn_smem(void) { return dyn_smem.data(); }

#define DWS_EMU_KERNELS(X)                                                     \
  X(normalize_f32, NormArgs)                                                   \
  X(gather_f32, GatherArgs)                                                    \
  X(bias_act_f32, BiasActArgs)                                                 \
  X(set_pool_f32, SetPoolArgs)                                                 \
  X(attention_f32, AttnArgs)                                                   \
  X(attention_set_f32, AttnArgs)                                               \
  X(scatter_f32, ScatterArgs)                                                  \
  X(resample_gather_f32, ResGatherArgs)                                        \
  X(resample_scatter_f32, ResScatterArgs)                                      \
  X(affine_relu_f32, AffineArgs)                                               \
  X(input_skip_f32, SkipArgs)                                                  \
  X(head_pool_f32, HeadPoolArgs)                                               \
  X(quantize_i8, QuantArgs)                                                    \
  X(quantize_i16, QuantArgs)                                                   \
  X(gather_i8, GatherArgs)                                                     \
  X(gather_i16, GatherArgs)                                                    \
  X(linear_i8, LinearQArgs)                                                    \
  X(linear_i16, LinearQArgs)                                                   \
  X(set_pool_i8, SetPoolArgs)                                                  \
  X(set_pool_i16, SetPoolArgs)                                                 \
  X(attention_i8, AttnQArgs)                                                   \
  X(attention_i16, AttnQArgs)                                                  \
  X(attention_set_i8, AttnQArgs)                                               \
  X(attention_set_i16, AttnQArgs)                                              \
  X(scatter_i8, ScatterQArgs)                                                  \
  X(scatter_i16, ScatterQArgs)                                                 \
  X(resample_gather_i8, ResGatherArgs)                                         \
  X(resample_gather_i16, ResGatherArgs)                                        \
  X(resample_scatter_i8, ResScatterQArgs)                                      \
  X(resample_scatter_i16, ResScatterQArgs)                                     \
  X(affine_relu_i8, AffineArgs)                                                \
  X(affine_relu_i16, AffineArgs)                                               \
  X(input_skip_i8, SkipArgs)                                                   \
  X(input_skip_i16, SkipArgs)                                                  \
  X(head_pool_i8, HeadPoolArgs)                                                \
  X(head_pool_i16, HeadPoolArgs)                                               \
  X(dequant_i8, DequantArgs)                                                   \
  X(dequant_i16, DequantArgs)

// Size of the argument struct of kernel `name`, or -1 for an unknown kernel.
extern "C" long long dws_emu_args_size(const char *name) {
#define DWS_SIZE(k, A)                                                         \
  if (strcmp(name, #k) == 0) return (long long)sizeof(A);
  DWS_EMU_KERNELS(DWS_SIZE)
#undef DWS_SIZE
  return -1;
}

// Runs kernel `name` over the grid (gx, gy, gz) with `smem` bytes of dynamic
// shared memory. Returns 0, -1 for an unknown kernel, -2 for an argument
// buffer of the wrong size.
extern "C" int dws_emu_launch(const char *name, unsigned gx, unsigned gy,
                              unsigned gz, unsigned smem, const void *args,
                              unsigned long long args_len) {
  dyn_smem.assign(smem / 8 + 2, 0ull);
  blockDim.x = blockDim.y = blockDim.z = 1;
  threadIdx.x = threadIdx.y = threadIdx.z = 0;
  gridDim.x = gx;
  gridDim.y = gy;
  gridDim.z = gz;
#define DWS_RUN(k, A)                                                          \
  if (strcmp(name, #k) == 0) {                                                 \
    if (args_len != sizeof(A)) return -2;                                      \
    A a;                                                                       \
    memcpy(&a, args, sizeof(A));                                               \
    for (unsigned z = 0; z < gz; z++)                                          \
      for (unsigned y = 0; y < gy; y++)                                        \
        for (unsigned x = 0; x < gx; x++) {                                    \
          blockIdx.x = x;                                                      \
          blockIdx.y = y;                                                      \
          blockIdx.z = z;                                                      \
          k(a);                                                                \
        }                                                                      \
    return 0;                                                                  \
  }
  DWS_EMU_KERNELS(DWS_RUN)
#undef DWS_RUN
  return -1;
}

// Test hooks: the kernels' fixed-point helpers on the CPU, which the Rust
// tests compare with `dws_core::quant` (`emulator::fixed`).
extern "C" int dws_emu_req_apply(int m, int shift, int x) {
  Req r = {m, shift};
  return req_apply(r, x);
}

extern "C" int dws_emu_req_apply_wide(int m, int shift, long long x) {
  Req r = {m, shift};
  return req_apply_wide(r, x);
}

extern "C" int dws_emu_exp_arg(int mx, int z, int m, int shift) {
  Req r = {m, shift};
  return exp_arg(mx, z, r);
}

extern "C" int dws_emu_exp_arg_wide(long long mx, long long z, int m, int shift) {
  Req r = {m, shift};
  return exp_arg((i64)mx, (i64)z, r);
}
