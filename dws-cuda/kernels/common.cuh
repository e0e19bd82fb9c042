// Shared definitions of the dws CUDA kernels.
//
// Compiled two ways:
//  * by NVRTC at run time (`__CUDACC__` defined): the real GPU kernels;
//  * by the host C++ compiler in `build.rs` (`src/emulator.cpp`): the same
//    kernel bodies run block by block with one thread per block, so the CPU
//    test suite checks the lowering and the kernel arithmetic without a GPU.
//
// Every kernel is therefore written to be correct for any blockDim.x (block-
// and grid-stride loops, reductions through shared memory) and never relies on
// warp size. The argument structs below are mirrored field by field by
// `#[repr(C)]` structs in `src/args.rs`; `tests/emulator.rs` checks the sizes.
#pragma once

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef int i32;
typedef short i16;
typedef signed char i8;

#if defined(__CUDACC__)
#define DWS_KERNEL extern "C" __global__
#define DWS_DEV __device__ __forceinline__
#define DWS_SHARED __shared__
#define DWS_SYNC() __syncthreads()
#define DWS_DYN_SMEM(T, name)                                                  \
  extern __shared__ __align__(16) unsigned char dws_dyn_smem_[];               \
  T *name = (T *)dws_dyn_smem_
#define DWS_CONST __constant__
#define DWS_NEG_INF __int_as_float(0xff800000u)
#else
#include "emulator.h"
#endif

// ---------------------------------------------------------------------------
// Locations. A `Loc` is a u64: all ones is "none"; with bit 63 set it is a byte
// offset into the parameter buffer; otherwise a per-sample byte offset into
// the activation arena, whose regions all scale with the batch:
// address = arena + loc * batch.
// ---------------------------------------------------------------------------
#define DWS_NONE 0xFFFFFFFFFFFFFFFFull
#define DWS_PARAM_BIT 0x8000000000000000ull

struct Ctx {
  u64 arena;
  u64 params;
  i64 batch;
};

DWS_DEV char *dws_ptr(const Ctx &c, u64 loc) {
  if (loc == DWS_NONE) return 0;
  if (loc & DWS_PARAM_BIT) return (char *)(c.params + (loc & ~DWS_PARAM_BIT));
  return (char *)(c.arena + loc * (u64)c.batch);
}
DWS_DEV float *dws_f32(const Ctx &c, u64 loc) { return (float *)dws_ptr(c, loc); }
DWS_DEV i32 *dws_i32(const Ctx &c, u64 loc) { return (i32 *)dws_ptr(c, loc); }

// Grid-stride loop over `total` items (64-bit: batches can be large).
#define DWS_FOR_EACH(i, total)                                                 \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(total);   \
       i += (i64)gridDim.x * blockDim.x)

// Block-stride loop over `n` items of the current block.
#define DWS_BLOCK_FOR(i, n)                                                    \
  for (i32 i = (i32)threadIdx.x; i < (i32)(n); i += (i32)blockDim.x)

// Enumerations shared with `src/plan.rs` (values fixed).
#define RED_MAX 0
#define RED_MEAN 1
#define RED_SUM 2
#define SET_NONE 0
#define SET_ROWS 1
#define SET_COLS 2
#define SET_CELLS 3
#define AXIS_NONE 0
#define AXIS_ROWS 1
#define AXIS_COLS 2
#define POOL_ATTENTION 3

// Threads per block of every kernel; block reductions use this many slots.
#define DWS_THREADS 256

// ---------------------------------------------------------------------------
// Block reductions (correct for any blockDim.x <= DWS_THREADS). Every thread
// of the block must call them; the result is returned to every thread.
// ---------------------------------------------------------------------------
DWS_DEV float block_max_f32(float v, float *red) {
  red[threadIdx.x] = v;
  DWS_SYNC();
  if (threadIdx.x == 0) {
    float m = red[0];
    for (u32 t = 1; t < blockDim.x; t++) m = fmaxf(m, red[t]);
    red[0] = m;
  }
  DWS_SYNC();
  float r = red[0];
  DWS_SYNC();
  return r;
}

DWS_DEV float block_sum_f32(float v, float *red) {
  red[threadIdx.x] = v;
  DWS_SYNC();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (u32 t = 0; t < blockDim.x; t++) s += red[t];
    red[0] = s;
  }
  DWS_SYNC();
  float r = red[0];
  DWS_SYNC();
  return r;
}

// ---------------------------------------------------------------------------
// Gather index logic (`dws_core::kernels::block::source_range`).
// ---------------------------------------------------------------------------
struct Range {
  i32 lo, hi;
};

DWS_DEV Range source_range(i32 pool, i32 set_axis, i32 fold, i32 rows_axis,
                           i32 size, i32 other, i32 i, i32 j) {
  Range r;
  if (pool) {
    r.lo = 0;
    r.hi = size;
    return r;
  }
  i32 set_here = rows_axis ? SET_ROWS : SET_COLS;
  i32 axis = rows_axis ? AXIS_ROWS : AXIS_COLS;
  i32 at;
  if (set_axis == set_here)
    at = i;
  else if (fold == axis)
    at = j;
  else if (set_axis == SET_CELLS)
    at = rows_axis ? i / other : i % other;
  else
    at = 0;
  r.lo = at;
  r.hi = at + 1;
  return r;
}

// Row of the block's output that destination entry (r, c) reads, and the
// unfolded position inside that row (`dws_core::kernels::block::scatter`).
DWS_DEV i32 place_index(i32 place, i32 r, i32 c, i32 cols) {
  switch (place) {
  case SET_ROWS: return r;
  case SET_COLS: return c;
  case SET_CELLS: return r * cols + c;
  default: return 0;
  }
}

DWS_DEV i32 unfold_index(i32 unfold, i32 r, i32 c) {
  switch (unfold) {
  case AXIS_ROWS: return r;
  case AXIS_COLS: return c;
  default: return 0;
  }
}

// Index of the tensor holding element `e`, given `count + 1` boundaries.
DWS_DEV i32 tensor_of(const i32 *bounds, i32 count, i64 e) {
  i32 t = 0;
  while (t + 1 < count && e >= (i64)bounds[t + 1]) t++;
  return t;
}

// ---------------------------------------------------------------------------
// f32 map outputs. Every map writes a matrix Y[G * n, ld]; its value is
//   resid[row, col] + act(Y[row, col] + bias[col]) - sub[row / n, col]
// with each term optional. This fuses the last bias of an MLP, the DeepSets
// `- Lambda(pool(x))` and the set-attention `O + relu(fc_o(O))` into the
// kernels that consume map outputs (scatter, resample, head).
// ---------------------------------------------------------------------------
struct MapOut {
  u64 y;     // arena: [G * n, ld] f32
  u64 bias;  // params: [ld] f32, or none
  u64 sub;   // arena: [G, ld] f32, or none
  u64 resid; // arena: [G * n, ld] f32, or none
  i32 ld;    // row width
  i32 n;     // rows per group (for `sub`)
  i32 relu;  // act = relu
  i32 pad;
};

DWS_DEV float map_value(const Ctx &c, const MapOut &mo, i64 row, i32 col) {
  const float *y = dws_f32(c, mo.y);
  float v = y[row * mo.ld + col];
  if (mo.bias != DWS_NONE) v += dws_f32(c, mo.bias)[col];
  if (mo.relu) v = fmaxf(v, 0.0f);
  if (mo.resid != DWS_NONE) v = dws_f32(c, mo.resid)[row * mo.ld + col] + v;
  if (mo.sub != DWS_NONE) v -= dws_f32(c, mo.sub)[(row / mo.n) * mo.ld + col];
  return v;
}

// One block's contribution to a destination tensor (f32).
struct Contrib {
  MapOut mo;
  i32 n;      // rows per sample of the block's output
  i32 m;      // unfolded positions per row (`kout / f`)
  i32 place;  // SET_*
  i32 unfold; // AXIS_*
  float scale;
  i32 pad;
};

// ---------------------------------------------------------------------------
// Quantized modes (`dws_core::quant`, docs/quantization.md; the arithmetic is
// in quant.cuh).
// ---------------------------------------------------------------------------
// `Requant { m, shift }`: apply(x) = sat32(floor((x m + 2^(shift-1)) / 2^shift)).
struct Req {
  i32 m;
  i32 shift;
};

// One block's contribution to a destination tensor (quantized).
struct ContribQ {
  u64 y;     // arena: [B * n, m * f] activations
  i32 n;     // rows per sample
  i32 m;     // unfolded positions per row
  i32 place; // SET_*
  i32 unfold;
  Req req; // map output to the destination accumulator
};

// A pooled segment of the invariant head: `count` entries starting at element
// `start` of a sample, `stride` elements apart, reduced per feature.
struct HeadGroup {
  i32 start;
  i32 count;
  i32 stride;
  i32 seg; // requantization index (quantized)
};

// ---------------------------------------------------------------------------
// Kernel arguments: every kernel takes one of these by value; `ctx` is always
// the first field (the runtime patches it for every launch). Mirrored by
// `src/args.rs` (same fields, same order; no implicit padding).
// ---------------------------------------------------------------------------
struct NormArgs { // normalize_f32
  Ctx ctx;
  u64 x, mean, std, out;
  i64 len;
};

struct GatherArgs { // gather_f32, gather_q
  Ctx ctx;
  u64 src, out;
  i64 src_stride, src_off;
  i32 rows, cols, f, n, m, pool_rows, pool_cols, set_axis, fold, red;
  Req req; // quantized: reduced value to the gathered scale
};

struct BiasActArgs { // bias_act_f32
  Ctx ctx;
  u64 y, bias;
  i64 rows_per_sample;
  i32 cols, relu;
};

struct SetPoolArgs { // set_pool_f32, set_pool_q
  Ctx ctx;
  u64 x, out, query;
  i64 groups_per_sample;
  i32 n, k, mode, pad;
  Req pooled, score; // quantized
};

struct AttnArgs { // attention_f32, attention_set_f32
  Ctx ctx;
  u64 qkv, bias, out;
  i64 rows_per_sample;
  i32 n, dv, heads;
  i32 heads_per_pass; // attention_set_f32: heads whose scores share memory
};

struct ScatterArgs { // scatter_f32
  Ctx ctx;
  u64 out, contribs, affine_scale, affine_shift;
  i64 out_stride, out_off;
  i32 rows, cols, f, ncontrib, relu, pad;
};

struct ResGatherArgs { // resample_gather_f32, resample_gather_q
  Ctx ctx;
  u64 src, out;
  i64 src_stride;
  i32 din, d1, f, pad;
};

struct ResScatterArgs { // resample_scatter_f32
  Ctx ctx;
  MapOut mo, skip;
  u64 out, affine_scale, affine_shift;
  i64 out_stride;
  i32 dout, d1, f, combine, relu, pad;
};

struct AffineArgs { // affine_relu_f32, affine_relu_q
  Ctx ctx;
  u64 x, scale, shift, bounds;
  i64 stride;
  i32 cells_total, f, ntensors, relu, has_affine, shift_bits;
};

struct SkipArgs { // input_skip_f32, input_skip_q
  Ctx ctx;
  u64 x0, x, w, bias, bounds, cur, lin;
  i64 x0_stride, x_stride;
  i32 cells_total, fin, fout, ntensors;
};

struct HeadPoolArgs { // head_pool_f32, head_pool_q
  Ctx ctx;
  u64 x, groups, reqs, out;
  i64 x_stride;
  i32 f, ngroups, red, pad;
};

struct QuantArgs { // quantize_q
  Ctx ctx;
  u64 x, mean, std, scales, bounds, out;
  i64 len;
  i32 ntensors, pad;
};

// The epilogues of linear_q; R[o] is output o's requantization (`req` with
// mantissa `req_m[o]` when the layer has one per output channel).
#define LINQ_OUT 0    // y = max(sat(R[o](acc)), relu ? 0 : -MAX)
#define LINQ_SUB 1    // y = sat(R[o](acc) - sub[row / sub_n, o])
#define LINQ_REQ32 2  // y = R[o](acc) (int32)
#define LINQ_LOGITS 3 // y = (float)acc * logit_scales[o]

struct LinearQArgs { // linear_q
  Ctx ctx;
  u64 x, w, bias, y, sub;
  u64 req_m;        // params: fout i32 mantissas, or none (one for all: req.m)
  u64 logit_scales; // params: fout f32 (LINQ_LOGITS)
  i64 rows_per_sample;
  i32 fin, fout;
  Req req;
  i32 mode, relu, sub_n, pad;
};

struct AttnQArgs { // attention_q, attention_set_q
  Ctx ctx;
  u64 q, k, v, out, wo, bo;
  u64 y_fc_m; // params: dv i32 mantissas of y_fc per output channel, or none
  i64 rows_per_sample;
  i32 n, dv, heads;
  i32 heads_per_pass; // attention_set_q
  Req score, o_q, o_av, y_o, y_fc;
};

struct ScatterQArgs { // scatter_q
  Ctx ctx;
  u64 out, contribs, mult, offs;
  i64 out_stride, out_off;
  i32 rows, cols, f, ncontrib;
  Req out_req;
  i32 has_affine, affine_shift, relu, pad;
};

struct ResScatterQArgs { // resample_scatter_q
  Ctx ctx;
  u64 y, skip, out, mult, offs;
  i64 out_stride;
  i32 dout, d1, f, combine;
  Req r_up, r_skip;
  i32 has_affine, affine_shift, relu, pad;
};

struct DequantArgs { // dequant_q
  Ctx ctx;
  u64 x, scales, bounds, out;
  i64 x_stride, len;
  i32 ntensors, pad;
};

// ---------------------------------------------------------------------------
// Index maps shared by the f32 and quantized kernels of one op.

// Output element e of gather_*: its sample, feature and source ranges (one
// entry X[b * n + i, j * f + c] pools rows rr x cols cr of feature c).
struct GatherSite {
  i64 b;
  i32 c;
  Range rr, cr;
};

DWS_DEV GatherSite gather_site(const GatherArgs &a, i64 e) {
  const i32 pc = a.pool_cols ? 1 : a.cols;
  const i64 per = (i64)a.n * a.m * a.f;
  const i32 rem = (i32)(e % per);
  const i32 j = (rem / a.f) % a.m;
  const i32 i = rem / (a.f * a.m);
  GatherSite g;
  g.b = e / per;
  g.c = rem % a.f;
  g.rr = source_range(a.pool_rows, a.set_axis, a.fold, 1, a.rows, pc, i, j);
  g.cr = source_range(a.pool_cols, a.set_axis, a.fold, 0, a.cols, pc, i, j);
  return g;
}

// Output element e of resample_gather_*, out[((b * f + ch) * d1 + n) * din + k],
// reads src[b][(k * d1 + n) * f + ch]: its offset in src.
DWS_DEV i64 resample_gather_src(const ResGatherArgs &a, i64 e) {
  const i64 per = (i64)a.f * a.d1 * a.din;
  const i64 b = e / per;
  const i32 rem = (i32)(e % per);
  const i32 k = rem % a.din;
  const i32 n = (rem / a.din) % a.d1;
  const i32 ch = rem / (a.din * a.d1);
  return b * a.src_stride + ((i64)k * a.d1 + n) * a.f + ch;
}
