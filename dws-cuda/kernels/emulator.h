// Host definitions that let the kernels compile as plain C++ (see common.cuh).
// The emulator (`src/emulator.cpp`) runs a grid block by block with ONE
// thread per block, so `__syncthreads` is a no-op and shared memory is a
// per-thread static buffer.
#pragma once
#include <math.h>

struct dws_dim3 {
  unsigned x, y, z;
};
extern thread_local dws_dim3 blockIdx, threadIdx, blockDim, gridDim;
extern "C" void *dws_emu_dyn_smem(void);

#define DWS_KERNEL extern "C"
#define DWS_DEV static inline
#define DWS_SHARED static thread_local
#define DWS_SYNC() ((void)0)
#define DWS_DYN_SMEM(T, name) T *name = (T *)dws_emu_dyn_smem()
#define DWS_CONST static const
#define DWS_NEG_INF (-INFINITY)
