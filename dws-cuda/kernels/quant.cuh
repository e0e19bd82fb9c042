// The quantized kernels, written once over the mode of docs/quantization.md
// and instantiated as `extern "C"` entry points per mode by int8.cu (int8
// activations, int32 accumulators) and int16x8.cu (16x8: int16 activations,
// int64 biases, accumulators and scores). Integer only between the f32 input
// and output boundaries, so that results are bit for bit those of
// `dws_core::quantized` (whose functions each kernel names). Integer sums are
// exact, or wrap in int32 exactly where the core's do, so the order of
// accumulation (threads, tiles) never changes a result. Compiled with
// --fmad=false: the f32 boundaries must round like the CPU.
#pragma once
#include "common.cuh"

// ---------------------------------------------------------------------------
// The modes (`dws_core::quantized::Act`).
// ---------------------------------------------------------------------------
struct Int8Mode {
  typedef i8 Act;  // activations, -127..=127
  typedef i32 Acc; // linear accumulators, scores, biases and batch-norm
                   // offsets: int32, wrapping
  static constexpr i32 MAX = 127;
};

struct Int16x8Mode {
  typedef i16 Act; // activations, -32767..=32767
  typedef i64 Acc; // int64, exact
  static constexpr i32 MAX = 32767;
};

// Typed view of a location (`dws_ptr`).
template <class T> DWS_DEV T *dws_at(const Ctx &c, u64 loc) { return (T *)dws_ptr(c, loc); }

#define DWS_I32_MIN (-2147483647 - 1)

// ---------------------------------------------------------------------------
// Fixed point (`dws_core::quant`).
// ---------------------------------------------------------------------------
DWS_DEV i32 clamp32(i64 v) {
  return (i32)(v < -2147483648LL ? -2147483648LL : (v > 2147483647LL ? 2147483647LL : v));
}

// `Requant::apply` on an int32 value: the 64-bit product is exact.
DWS_DEV i32 req_apply(Req r, i32 x) {
  return clamp32(((i64)x * (i64)r.m + ((i64)1 << (r.shift - 1))) >> r.shift);
}

// `Requant::apply_wide` on an int64 value: the same definition in 128 bits,
// from 32-bit halves (no __int128 or __mul64hi needed, so the emulator runs
// this very code). With x = xh 2^32 + xl (xh signed, 0 <= xl < 2^32) and
// 0 <= m < 2^31: low = xl m + 2^(s-1) < 2^64 and
// x m + 2^(s-1) = c 2^32 + (low mod 2^32) with c = xh m + (low >> 32).
DWS_DEV i32 req_apply_wide(Req r, i64 x) {
  if (x >= (i64)DWS_I32_MIN && x <= 2147483647LL) return req_apply(r, (i32)x);
  const i64 xh = x >> 32;
  const u64 xl = (u64)x & 0xffffffffull;
  const u64 low = xl * (u64)r.m + ((u64)1 << (r.shift - 1));
  const i64 c = xh * (i64)r.m + (i64)(low >> 32);
  if (r.shift >= 32) return clamp32(c >> (r.shift - 32));
  // floor((c 2^32 + lo) / 2^s) = c 2^(32-s) + (lo >> s): at least 2^32 in
  // magnitude, so saturated, once |c| >= 2^31.
  if (c >= ((i64)1 << 31)) return 2147483647;
  if (c < -((i64)1 << 31)) return DWS_I32_MIN;
  return clamp32(c * ((i64)1 << (32 - r.shift)) + (i64)((low & 0xffffffffull) >> r.shift));
}

// An accumulator's requantization (`Accum::requant`).
DWS_DEV i32 req_acc(Req r, i32 acc) { return req_apply(r, acc); }
DWS_DEV i32 req_acc(Req r, i64 acc) { return req_apply_wide(r, acc); }

// Output `o`'s requantization of a linear layer: mantissa `ms[o]` when the
// layer has one per output channel (`Requants::get`).
DWS_DEV Req req_at(Req r, const i32 *ms, i32 o) {
  if (ms) r.m = ms[o];
  return r;
}

// `sat8` / `sat16`.
template <class M> DWS_DEV i32 sat(i32 v) { return v < -M::MAX ? -M::MAX : (v > M::MAX ? M::MAX : v); }

// The core's `saturating_add` / `saturating_sub` on int32 (combining two
// requantized terms) and wrapping additions (int32 sums, int64 accumulators),
// without signed overflow.
DWS_DEV i32 add_sat(i32 a, i32 b) { return clamp32((i64)a + (i64)b); }
DWS_DEV i32 sub_sat(i32 a, i32 b) { return clamp32((i64)a - (i64)b); }
DWS_DEV i32 add_wrap(i32 a, i32 b) { return (i32)((u32)a + (u32)b); }
DWS_DEV i64 add_wrap(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }

// `max(acc, 0)` (`Accum::relu`).
template <class T> DWS_DEV T relu0(T v) { return v > 0 ? v : 0; }

// ---------------------------------------------------------------------------
// softmax_q15 (`dws_core::quant::softmax`).
// ---------------------------------------------------------------------------
// round(2^30 * exp(-i)), i in 0..16 (`dws_core::quant::EXP_HI`).
DWS_CONST u32 EXP_HI[16] = {
  1073741824u, 395007542u, 145315154u, 53458458u, 19666268u, 7234816u,
  2661540u, 979126u, 360200u, 132510u, 48748u, 17933u, 6597u, 2427u, 893u,
  328u};
// round(2^16 * exp(-f / 256)), f in 0..256 (`dws_core::quant::EXP_LO`).
DWS_CONST u32 EXP_LO[256] = {
  65536u, 65280u, 65026u, 64772u, 64520u, 64268u, 64018u, 63768u, 63520u,
  63272u, 63025u, 62780u, 62535u, 62291u, 62048u, 61806u, 61565u, 61325u,
  61086u, 60848u, 60611u, 60375u, 60139u, 59905u, 59671u, 59439u, 59207u,
  58976u, 58746u, 58517u, 58289u, 58062u, 57835u, 57610u, 57385u, 57162u,
  56939u, 56717u, 56496u, 56275u, 56056u, 55837u, 55620u, 55403u, 55187u,
  54972u, 54757u, 54544u, 54331u, 54119u, 53908u, 53698u, 53489u, 53280u,
  53073u, 52866u, 52660u, 52454u, 52250u, 52046u, 51843u, 51641u, 51440u,
  51239u, 51039u, 50841u, 50642u, 50445u, 50248u, 50052u, 49857u, 49663u,
  49469u, 49276u, 49084u, 48893u, 48702u, 48512u, 48323u, 48135u, 47947u,
  47760u, 47574u, 47389u, 47204u, 47020u, 46836u, 46654u, 46472u, 46291u,
  46110u, 45931u, 45752u, 45573u, 45395u, 45218u, 45042u, 44867u, 44692u,
  44517u, 44344u, 44171u, 43999u, 43827u, 43656u, 43486u, 43317u, 43148u,
  42980u, 42812u, 42645u, 42479u, 42313u, 42148u, 41984u, 41820u, 41657u,
  41495u, 41333u, 41172u, 41011u, 40851u, 40692u, 40534u, 40376u, 40218u,
  40061u, 39905u, 39750u, 39595u, 39440u, 39286u, 39133u, 38981u, 38829u,
  38677u, 38527u, 38376u, 38227u, 38078u, 37929u, 37781u, 37634u, 37487u,
  37341u, 37196u, 37051u, 36906u, 36762u, 36619u, 36476u, 36334u, 36192u,
  36051u, 35911u, 35771u, 35631u, 35492u, 35354u, 35216u, 35079u, 34942u,
  34806u, 34670u, 34535u, 34400u, 34266u, 34133u, 34000u, 33867u, 33735u,
  33604u, 33473u, 33342u, 33212u, 33083u, 32954u, 32825u, 32697u, 32570u,
  32443u, 32316u, 32190u, 32065u, 31940u, 31815u, 31691u, 31568u, 31445u,
  31322u, 31200u, 31078u, 30957u, 30836u, 30716u, 30596u, 30477u, 30358u,
  30240u, 30122u, 30005u, 29888u, 29771u, 29655u, 29539u, 29424u, 29310u,
  29195u, 29081u, 28968u, 28855u, 28743u, 28631u, 28519u, 28408u, 28297u,
  28187u, 28077u, 27967u, 27858u, 27750u, 27642u, 27534u, 27426u, 27319u,
  27213u, 27107u, 27001u, 26896u, 26791u, 26687u, 26583u, 26479u, 26376u,
  26273u, 26170u, 26068u, 25967u, 25866u, 25765u, 25664u, 25564u, 25465u,
  25365u, 25266u, 25168u, 25070u, 24972u, 24875u, 24778u, 24681u, 24585u,
  24489u, 24394u, 24298u, 24204u};

// `Score::exp_arg`: clamp(R(max - z), 0, 4095) in 1/256 units of the real
// exponent. int8 scores: the difference first clamped to 2^31 - 1; 16x8
// scores: the (wrapping) int64 difference, requantized in 128 bits.
DWS_DEV i32 exp_arg(i32 mx, i32 z, Req r) {
  i64 diff = (i64)mx - (i64)z;
  if (diff > 2147483647LL) diff = 2147483647LL;
  const i32 t = req_apply(r, (i32)diff);
  return t < 0 ? 0 : (t > 4095 ? 4095 : t);
}
DWS_DEV i32 exp_arg(i64 mx, i64 z, Req r) {
  const i32 t = req_apply_wide(r, (i64)((u64)mx - (u64)z));
  return t < 0 ? 0 : (t > 4095 ? 4095 : t);
}

// exp(-t / 256) in Q30 (`softmax::exp_q30`).
DWS_DEV u32 exp_q30(i32 t) { return (u32)(((u64)EXP_HI[t >> 8] * (u64)EXP_LO[t & 255]) >> 16); }

// The largest of every thread's `v` (block reduction, see common.cuh).
template <class S> DWS_DEV S block_max(S v, i64 *red) {
  red[threadIdx.x] = (i64)v;
  DWS_SYNC();
  if (threadIdx.x == 0) {
    i64 m = red[0];
    for (u32 t = 1; t < blockDim.x; t++) m = red[t] > m ? red[t] : m;
    red[0] = m;
  }
  DWS_SYNC();
  const S r = (S)red[0];
  DWS_SYNC();
  return r;
}

DWS_DEV u64 block_sum_u64(u64 v, i64 *red) {
  red[threadIdx.x] = (i64)v;
  DWS_SYNC();
  if (threadIdx.x == 0) {
    u64 s = 0;
    for (u32 t = 0; t < blockDim.x; t++) s += (u64)red[t];
    red[0] = (i64)s;
  }
  DWS_SYNC();
  const u64 r = (u64)red[0];
  DWS_SYNC();
  return r;
}

// The smallest value of a score type (the start of a max).
DWS_DEV i32 lowest(i32) { return DWS_I32_MIN; }
DWS_DEV i64 lowest(i64) { return (i64)(-9223372036854775807LL - 1); }

// `quant::softmax_q15` over the scores z[0..n) (shared memory), by the whole
// block: leaves the Q15 probabilities in e[0..n) (shared). Every thread calls it.
template <class S> DWS_DEV void softmax_q15_block(const S *z, u32 *e, i32 n, Req r, i64 *red) {
  S mx = lowest(S());
  DWS_BLOCK_FOR(j, n) mx = z[j] > mx ? z[j] : mx;
  mx = block_max(mx, red);
  u64 sum = 0;
  DWS_BLOCK_FOR(j, n) {
    e[j] = exp_q30(exp_arg(mx, z[j], r));
    sum += e[j];
  }
  sum = block_sum_u64(sum, red);
  if (sum < 1) sum = 1;
  DWS_BLOCK_FOR(j, n) e[j] = (u32)((((u64)e[j] << 15) + sum / 2) / sum);
  DWS_SYNC();
}

// `quant::softmax_q15` on one row, by one thread: probabilities in e[0..n).
template <class S> DWS_DEV void softmax_q15_row(const S *z, u32 *e, i32 n, Req r) {
  S mx = z[0];
  for (i32 j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
  u64 sum = 0;
  for (i32 j = 0; j < n; j++) {
    e[j] = exp_q30(exp_arg(mx, z[j], r));
    sum += e[j];
  }
  if (sum < 1) sum = 1;
  for (i32 j = 0; j < n; j++) e[j] = (u32)((((u64)e[j] << 15) + sum / 2) / sum);
}

// ---------------------------------------------------------------------------
// The kernels. Each `*_q<M>` is the body of one entry point per mode.
// ---------------------------------------------------------------------------

// The input boundary (`exec::quantize_input`): normalize when the model has
// statistics, then round half away from zero to the tensor's input scale and
// saturate to +-MAX (a NaN, which `as i32` makes 0 in the core, too).
template <class M> DWS_DEV void quantize_q(const QuantArgs &a) {
  const float *x = dws_f32(a.ctx, a.x);
  const float *mean = dws_f32(a.ctx, a.mean);
  const float *sd = dws_f32(a.ctx, a.std);
  const float *scales = dws_f32(a.ctx, a.scales);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  typename M::Act *out = dws_at<typename M::Act>(a.ctx, a.out);
  const float max = (float)M::MAX;
  DWS_FOR_EACH(e, a.ctx.batch * a.len) {
    const i64 i = e % a.len;
    const i32 t = tensor_of(bounds, a.ntensors, i);
    float v = x[e];
    if (mean) v = (v - mean[i]) / sd[i];
    float q = roundf(v / scales[t]);
    q = q != q ? 0.0f : fminf(fmaxf(q, -max), max);
    out[e] = (typename M::Act)(i32)q;
  }
}

// `exec::gather`: pooled entries reduced in int32 (max, or the wrapping sum),
// then requantized to the gathered scale.
template <class M> DWS_DEV void gather_q(const GatherArgs &a) {
  const typename M::Act *src = dws_at<typename M::Act>(a.ctx, a.src);
  typename M::Act *out = dws_at<typename M::Act>(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.n * a.m * a.f) {
    const GatherSite g = gather_site(a, e);
    const typename M::Act *s = src + g.b * a.src_stride + a.src_off;
    i32 v = a.red == RED_MAX ? DWS_I32_MIN : 0;
    for (i32 r = g.rr.lo; r < g.rr.hi; r++) {
      for (i32 col = g.cr.lo; col < g.cr.hi; col++) {
        const i32 x = (i32)s[((i64)r * a.cols + col) * a.f + g.c];
        v = a.red == RED_MAX ? (x > v ? x : v) : add_wrap(v, x);
      }
    }
    out[e] = (typename M::Act)sat<M>(req_apply(a.req, v));
  }
}

// A linear layer (`kernels::linear_q`, the MLPs, the last layers of
// `set_layer` and `head`): acc = bias[o] + sum_i x[row, i] w[o, i], then the
// epilogue `mode` (LINQ_*) with output o's requantization. 32 x 32 output
// tiles; grid (row tiles, output tiles). Each tile step's 32 products sum
// exactly in int32 (|x w| <= 32767 * 128) and are added to the accumulator:
// wrapping int32 (int8), exact int64 (16x8).
#define LT 32
template <class M> DWS_DEV void linear_q(const LinearQArgs &a) {
  typedef typename M::Act A;
  typedef typename M::Acc Acc;
  DWS_SHARED i32 xs[LT][LT + 1];
  DWS_SHARED i32 ws[LT][LT + 1];
  DWS_SHARED Acc acc[LT][LT];
  const A *x = dws_at<A>(a.ctx, a.x);
  const i8 *w = dws_at<i8>(a.ctx, a.w);
  const Acc *bias = dws_at<Acc>(a.ctx, a.bias);
  const i32 *ms = dws_i32(a.ctx, a.req_m);
  const i64 rows = a.ctx.batch * a.rows_per_sample;
  const i64 r0 = (i64)blockIdx.x * LT;
  const i32 o0 = (i32)blockIdx.y * LT;
  DWS_BLOCK_FOR(t, LT * LT) {
    const i32 o = o0 + t % LT;
    acc[t / LT][t % LT] = (bias && o < a.fout) ? bias[o] : 0;
  }
  for (i32 k0 = 0; k0 < a.fin; k0 += LT) {
    DWS_SYNC();
    DWS_BLOCK_FOR(t, LT * LT) {
      const i32 r = t / LT, kk = t % LT;
      const bool kin = k0 + kk < a.fin;
      xs[r][kk] = (kin && r0 + r < rows) ? (i32)x[(r0 + r) * a.fin + k0 + kk] : 0;
      ws[r][kk] = (kin && o0 + r < a.fout) ? (i32)w[(i64)(o0 + r) * a.fin + k0 + kk] : 0;
    }
    DWS_SYNC();
    DWS_BLOCK_FOR(t, LT * LT) {
      const i32 r = t / LT, o = t % LT;
      i32 s = 0;
      for (i32 kk = 0; kk < LT; kk++) s += xs[r][kk] * ws[o][kk];
      acc[r][o] = add_wrap(acc[r][o], (Acc)s);
    }
  }
  DWS_SYNC();
  DWS_BLOCK_FOR(t, LT * LT) {
    const i32 r = t / LT, o = t % LT;
    const i64 row = r0 + r;
    if (row < rows && o0 + o < a.fout) {
      const Acc v = acc[r][o];
      const i64 at = row * a.fout + o0 + o;
      const Req rq = req_at(a.req, ms, o0 + o);
      if (a.mode == LINQ_OUT) {
        i32 y = sat<M>(req_acc(rq, v));
        if (a.relu && y < 0) y = 0;
        dws_at<A>(a.ctx, a.y)[at] = (A)y;
      } else if (a.mode == LINQ_SUB) {
        const i32 *sub = dws_i32(a.ctx, a.sub);
        const i32 lam = sub[(row / a.sub_n) * a.fout + o0 + o];
        dws_at<A>(a.ctx, a.y)[at] = (A)sat<M>(sub_sat(req_acc(rq, v), lam));
      } else if (a.mode == LINQ_REQ32) {
        dws_i32(a.ctx, a.y)[at] = req_acc(rq, v);
      } else {
        dws_f32(a.ctx, a.y)[at] = (float)v * dws_f32(a.ctx, a.logit_scales)[o0 + o];
      }
    }
  }
}

// DeepSets pooling of `kernels::set_layer`: one block per group of n rows of
// width k; the pooled row (max, wrapping sum, or attention-weighted wrapping
// sum, in int32) requantized to activations. Attention pooling: scores
// z_i = query . x_i (Acc), softmax_q15. Dynamic shared memory (attention
// only): n Acc + n u32.
template <class M> DWS_DEV void set_pool_q(const SetPoolArgs &a) {
  typedef typename M::Act A;
  typedef typename M::Acc Acc;
  DWS_SHARED i64 red[DWS_THREADS];
  DWS_DYN_SMEM(Acc, z);
  u32 *e = (u32 *)(z + a.n);
  const i64 g = blockIdx.x;
  const A *x = dws_at<A>(a.ctx, a.x) + g * a.n * a.k;
  A *out = dws_at<A>(a.ctx, a.out) + g * a.k;
  if (a.mode == POOL_ATTENTION) {
    const i8 *q = dws_at<i8>(a.ctx, a.query);
    DWS_BLOCK_FOR(i, a.n) {
      Acc s = 0;
      for (i32 c = 0; c < a.k; c++) s = add_wrap(s, (Acc)((i32)q[c] * (i32)x[(i64)i * a.k + c]));
      z[i] = s;
    }
    softmax_q15_block(z, e, a.n, a.score, red);
    DWS_BLOCK_FOR(c, a.k) {
      i32 acc = 0;
      for (i32 i = 0; i < a.n; i++) acc = add_wrap(acc, (i32)e[i] * (i32)x[(i64)i * a.k + c]);
      out[c] = (A)sat<M>(req_apply(a.pooled, acc));
    }
  } else {
    DWS_BLOCK_FOR(c, a.k) {
      i32 acc = a.mode == RED_MAX ? DWS_I32_MIN : 0;
      for (i32 i = 0; i < a.n; i++) {
        const i32 v = (i32)x[(i64)i * a.k + c];
        acc = a.mode == RED_MAX ? (v > acc ? v : acc) : add_wrap(acc, v);
      }
      out[c] = (A)sat<M>(req_apply(a.pooled, acc));
    }
  }
}

// Set attention of `kernels::set_layer` after the Q, K, V projections, fc_o
// included: one block per row i of a group of n rows. Per head: scores
// z_j = k_j . q_i (Acc), softmax_q15, av = sum_j p_j v_j (wrapping int32),
// O = sat(o_q(q) + o_av(av)); then Y = sat(y_o(O) + y_fc[c](relu(fc_o(O)))).
// Dynamic shared memory: n Acc + n u32 + dv i32.
template <class M> DWS_DEV void attention_q(const AttnQArgs &a) {
  typedef typename M::Act A;
  typedef typename M::Acc Acc;
  DWS_SHARED i64 red[DWS_THREADS];
  DWS_DYN_SMEM(Acc, z);
  u32 *e = (u32 *)(z + a.n);
  i32 *orow = (i32 *)(e + a.n);
  const i64 row = blockIdx.x;
  const i64 g = row / a.n;
  const i32 dv = a.dv, w = a.dv / a.heads;
  const A *qi = dws_at<A>(a.ctx, a.q) + row * dv;
  const A *kg = dws_at<A>(a.ctx, a.k) + g * a.n * dv;
  const A *vg = dws_at<A>(a.ctx, a.v) + g * a.n * dv;
  const i8 *wo = dws_at<i8>(a.ctx, a.wo);
  const Acc *bo = dws_at<Acc>(a.ctx, a.bo);
  const i32 *ms = dws_i32(a.ctx, a.y_fc_m);
  A *out = dws_at<A>(a.ctx, a.out) + row * dv;
  for (i32 h = 0; h < a.heads; h++) {
    const i32 c0 = h * w;
    DWS_BLOCK_FOR(j, a.n) {
      Acc s = 0;
      for (i32 c = 0; c < w; c++)
        s = add_wrap(s, (Acc)((i32)kg[(i64)j * dv + c0 + c] * (i32)qi[c0 + c]));
      z[j] = s;
    }
    softmax_q15_block(z, e, a.n, a.score, red);
    DWS_BLOCK_FOR(c, w) {
      i32 av = 0;
      for (i32 j = 0; j < a.n; j++) av = add_wrap(av, (i32)e[j] * (i32)vg[(i64)j * dv + c0 + c]);
      orow[c0 + c] = sat<M>(add_sat(req_apply(a.o_q, (i32)qi[c0 + c]), req_apply(a.o_av, av)));
    }
    DWS_SYNC();
  }
  DWS_BLOCK_FOR(c, dv) {
    Acc acc = bo ? bo[c] : 0;
    for (i32 i = 0; i < dv; i++) acc = add_wrap(acc, (Acc)((i32)wo[(i64)c * dv + i] * orow[i]));
    const i32 fc = req_acc(req_at(a.y_fc, ms, c), relu0(acc));
    out[c] = (A)sat<M>(add_sat(req_apply(a.y_o, orow[c]), fc));
  }
}

// The same for small sets, one block per group: Q, K, V, O of the group in
// shared memory, scores of `heads_per_pass` heads at a time.
// Dynamic shared memory: hp n n (Acc + u32) + 4 n dv i32.
template <class M> DWS_DEV void attention_set_q(const AttnQArgs &a) {
  typedef typename M::Act A;
  typedef typename M::Acc Acc;
  DWS_DYN_SMEM(Acc, z);
  const i32 n = a.n, dv = a.dv, w = a.dv / a.heads, hp = a.heads_per_pass, nd = a.n * a.dv;
  u32 *e = (u32 *)(z + hp * n * n);
  i32 *q = (i32 *)(e + hp * n * n), *k = q + nd, *v = q + 2 * nd, *o = q + 3 * nd;
  const i64 g = blockIdx.x;
  const A *qg = dws_at<A>(a.ctx, a.q) + g * nd;
  const A *kg = dws_at<A>(a.ctx, a.k) + g * nd;
  const A *vg = dws_at<A>(a.ctx, a.v) + g * nd;
  const i8 *wo = dws_at<i8>(a.ctx, a.wo);
  const Acc *bo = dws_at<Acc>(a.ctx, a.bo);
  const i32 *ms = dws_i32(a.ctx, a.y_fc_m);
  A *out = dws_at<A>(a.ctx, a.out) + g * nd;
  DWS_BLOCK_FOR(t, nd) {
    q[t] = (i32)qg[t];
    k[t] = (i32)kg[t];
    v[t] = (i32)vg[t];
  }
  DWS_SYNC();
  for (i32 h0 = 0; h0 < a.heads; h0 += hp) {
    DWS_BLOCK_FOR(t, hp * n * n) {
      const i32 c0 = (h0 + t / (n * n)) * w;
      const i32 i = (t / n) % n, j = t % n;
      Acc acc = 0;
      for (i32 c = 0; c < w; c++) acc = add_wrap(acc, (Acc)(k[j * dv + c0 + c] * q[i * dv + c0 + c]));
      z[t] = acc;
    }
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n) softmax_q15_row(z + t * n, e + t * n, n, a.score);
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n * w) {
      const i32 hh = t / (n * w), i = (t / w) % n, c = t % w;
      const i32 c0 = (h0 + hh) * w;
      const u32 *p = e + (hh * n + i) * n;
      i32 av = 0;
      for (i32 j = 0; j < n; j++) av = add_wrap(av, (i32)p[j] * v[j * dv + c0 + c]);
      o[i * dv + c0 + c] = sat<M>(add_sat(req_apply(a.o_q, q[i * dv + c0 + c]), req_apply(a.o_av, av)));
    }
    DWS_SYNC();
  }
  DWS_BLOCK_FOR(t, nd) {
    const i32 i = t / dv, c = t % dv;
    Acc acc = bo ? bo[c] : 0;
    for (i32 m = 0; m < dv; m++) acc = add_wrap(acc, (Acc)((i32)wo[(i64)c * dv + m] * o[i * dv + m]));
    const i32 fc = req_acc(req_at(a.y_fc, ms, c), relu0(acc));
    out[t] = (A)sat<M>(add_sat(req_apply(a.y_o, o[t]), fc));
  }
}

// The folded batch norm (`Kernels::affine`: sat((x mult + off) >> shift) in
// wrapping 64-bit arithmetic, `off` an Acc) and the ReLU on a value of channel `k`.
template <class M>
DWS_DEV i32 post_q(i32 v, const i32 *mult, const typename M::Acc *offs, i32 shift, i32 k, i32 relu) {
  if (mult) {
    const i64 y = (i64)((u64)((i64)v * (i64)mult[k]) + (u64)(i64)offs[k]) >> shift;
    v = y < -M::MAX ? -M::MAX : (y > M::MAX ? M::MAX : (i32)y);
  }
  if (relu && v < 0) v = 0;
  return v;
}

// Every block of one destination tensor (`exec::dst_rows`): the int32
// accumulator of an entry collects contrib(Y) over the blocks (wrapping),
// then sat(out_req(acc)) and the fused post-ops.
template <class M> DWS_DEV void scatter_q(const ScatterQArgs &a) {
  typedef typename M::Act A;
  const ContribQ *cs = dws_at<const ContribQ>(a.ctx, a.contribs);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.mult) : 0;
  const typename M::Acc *offs = dws_at<typename M::Acc>(a.ctx, a.offs);
  A *out = dws_at<A>(a.ctx, a.out);
  const i64 per = (i64)a.rows * a.cols * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.f;
    const i32 cell = rem / a.f;
    const i32 r = cell / a.cols, c = cell % a.cols;
    i32 acc = 0;
    for (i32 k = 0; k < a.ncontrib; k++) {
      const ContribQ ct = cs[k];
      const i32 i = place_index(ct.place, r, c, a.cols);
      const i32 j = unfold_index(ct.unfold, r, c);
      const A *y = dws_at<A>(a.ctx, ct.y);
      acc = add_wrap(acc, req_apply(ct.req, (i32)y[(b * ct.n + i) * ((i64)ct.m * a.f) + (i64)j * a.f + o]));
    }
    const i32 v = sat<M>(req_apply(a.out_req, acc));
    out[b * a.out_stride + a.out_off + rem] = (A)post_q<M>(v, mult, offs, a.affine_shift, o, a.relu);
  }
}

// `exec::resample_w0` input: the per-feature sets over d1 of W_0's rows.
template <class M> DWS_DEV void resample_gather_q(const ResGatherArgs &a) {
  const typename M::Act *src = dws_at<typename M::Act>(a.ctx, a.src);
  typename M::Act *out = dws_at<typename M::Act>(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.f * a.d1 * a.din) out[e] = src[resample_gather_src(a, e)];
}

// `exec::resample_w0` output: stored as is (down-sampling), or combined with
// the skip MLP's output as sat(r_up(y) + r_skip(skip)) (up-sampling), then
// the post-ops of W_0.
template <class M> DWS_DEV void resample_scatter_q(const ResScatterQArgs &a) {
  typedef typename M::Act A;
  const A *y = dws_at<A>(a.ctx, a.y);
  const A *skip = dws_at<A>(a.ctx, a.skip);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.mult) : 0;
  const typename M::Acc *offs = dws_at<typename M::Acc>(a.ctx, a.offs);
  A *out = dws_at<A>(a.ctx, a.out);
  const i64 per = (i64)a.dout * a.d1 * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 ch = rem % a.f;
    const i32 n = (rem / a.f) % a.d1;
    const i32 r = rem / (a.f * a.d1);
    i32 v = (i32)y[((b * a.f + ch) * a.d1 + n) * a.dout + r];
    if (a.combine) {
      const i32 s = (i32)skip[(b * a.dout * a.d1 + (i64)r * a.d1 + n) * a.f + ch];
      v = sat<M>(add_sat(req_apply(a.r_up, v), req_apply(a.r_skip, s)));
    }
    out[b * a.out_stride + rem] = (A)post_q<M>(v, mult, offs, a.affine_shift, ch, a.relu);
  }
}

// `Op::Affine` / `Op::Relu` when not fused into a scatter.
template <class M> DWS_DEV void affine_relu_q(const AffineArgs &a) {
  typedef typename M::Act A;
  A *x = dws_at<A>(a.ctx, a.x);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.scale) : 0;
  const typename M::Acc *offs = dws_at<typename M::Acc>(a.ctx, a.shift);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  const i64 per = (i64)a.cells_total * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 ch = rem % a.f;
    const i32 t = tensor_of(bounds, a.ntensors, rem / a.f);
    A *v = x + b * a.stride + rem;
    *v = (A)post_q<M>((i32)*v, mult ? mult + t * a.f : 0, offs ? offs + t * a.f : 0, a.shift_bits, ch, a.relu);
  }
}

// `Op::InputSkip`: acc = b[t, o] + w[o] . x0[e] (Acc); y = sat(cur(y) + lin(acc)).
template <class M> DWS_DEV void input_skip_q(const SkipArgs &a) {
  typedef typename M::Act A;
  typedef typename M::Acc Acc;
  const A *x0 = dws_at<A>(a.ctx, a.x0);
  A *x = dws_at<A>(a.ctx, a.x);
  const i8 *w = dws_at<i8>(a.ctx, a.w);
  const Acc *bias = dws_at<Acc>(a.ctx, a.bias);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  const Req *cur = dws_at<const Req>(a.ctx, a.cur);
  const Req *lin = dws_at<const Req>(a.ctx, a.lin);
  const i64 per = (i64)a.cells_total * a.fout;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.fout;
    const i32 cell = rem / a.fout;
    const i32 t = tensor_of(bounds, a.ntensors, cell);
    const A *xi = x0 + b * a.x0_stride + (i64)cell * a.fin;
    Acc acc = bias ? bias[t * a.fout + o] : 0;
    for (i32 i = 0; i < a.fin; i++) acc = add_wrap(acc, (Acc)((i32)w[(i64)o * a.fin + i] * (i32)xi[i]));
    A *y = x + b * a.x_stride + rem;
    *y = (A)sat<M>(add_sat(req_apply(cur[t], (i32)*y), req_acc(lin[t], acc)));
  }
}

// The invariant head's pooling (`exec::head`): each segment pooled in int32
// (max, or the wrapping sum) and requantized to the head scale.
template <class M> DWS_DEV void head_pool_q(const HeadPoolArgs &a) {
  typedef typename M::Act A;
  const A *x = dws_at<A>(a.ctx, a.x);
  const HeadGroup *gs = dws_at<const HeadGroup>(a.ctx, a.groups);
  const Req *reqs = dws_at<const Req>(a.ctx, a.reqs);
  A *out = dws_at<A>(a.ctx, a.out);
  const i64 per = (i64)a.ngroups * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 c = rem % a.f;
    const HeadGroup g = gs[rem / a.f];
    const A *s = x + b * a.x_stride + g.start + c;
    i32 acc = a.red == RED_MAX ? DWS_I32_MIN : 0;
    for (i32 i = 0; i < g.count; i++) {
      const i32 v = (i32)s[(i64)i * g.stride];
      acc = a.red == RED_MAX ? (v > acc ? v : acc) : add_wrap(acc, v);
    }
    out[e] = (A)sat<M>(req_apply(reqs[g.seg], acc));
  }
}

// The weight-space output boundary: q * s_out[t].
template <class M> DWS_DEV void dequant_q(const DequantArgs &a) {
  const typename M::Act *x = dws_at<typename M::Act>(a.ctx, a.x);
  const float *scales = dws_f32(a.ctx, a.scales);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  float *out = dws_f32(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * a.len) {
    const i64 b = e / a.len;
    const i64 i = e % a.len;
    out[e] = (float)x[b * a.x_stride + i] * scales[tensor_of(bounds, a.ntensors, i)];
  }
}
