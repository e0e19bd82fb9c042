// int8 kernels: the arithmetic of docs/quantization.md, integer only between the
// input and output boundaries, so that results are bit for bit those of
// `dws_core::int8` (whose functions each kernel names). Integer sums are exact,
// so the order of accumulation (threads, tiles) does not change any result.
// Compiled with --fmad=false: the f32 boundaries must round like the CPU.
#include "common.cuh"

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

#define DWS_I32_MIN (-2147483647 - 1)

// `quant::softmax_q15` over z[0..n) in shared memory; e is n u32 of shared
// scratch. Leaves Q15 probabilities in z. Every thread of the block calls it.
DWS_DEV void softmax_q15_block(i32 *z, u32 *e, i32 n, Req r, i64 *red) {
  i32 mx = DWS_I32_MIN;
  DWS_BLOCK_FOR(j, n) mx = z[j] > mx ? z[j] : mx;
  mx = block_max_i32(mx, red);
  u64 sum = 0;
  DWS_BLOCK_FOR(j, n) {
    i64 diff = (i64)mx - (i64)z[j];
    if (diff > 2147483647LL) diff = 2147483647LL;
    i32 t = req_apply(r, (i32)diff);
    t = t < 0 ? 0 : (t > 4095 ? 4095 : t);
    u32 ej = (u32)(((u64)EXP_HI[t >> 8] * (u64)EXP_LO[t & 255]) >> 16);
    e[j] = ej;
    sum += ej;
  }
  sum = block_sum_u64(sum, red);
  if (sum < 1) sum = 1;
  DWS_BLOCK_FOR(j, n) z[j] = (i32)((((u64)e[j] << 15) + sum / 2) / sum);
  DWS_SYNC();
}

// `quant::softmax_q15` on one row, in order (one thread).
DWS_DEV void softmax_q15_row(i32 *z, u32 *e, i32 n, Req r) {
  i32 mx = z[0];
  for (i32 j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
  u64 sum = 0;
  for (i32 j = 0; j < n; j++) {
    i64 diff = (i64)mx - (i64)z[j];
    if (diff > 2147483647LL) diff = 2147483647LL;
    i32 t = req_apply(r, (i32)diff);
    t = t < 0 ? 0 : (t > 4095 ? 4095 : t);
    e[j] = (u32)(((u64)EXP_HI[t >> 8] * (u64)EXP_LO[t & 255]) >> 16);
    sum += e[j];
  }
  if (sum < 1) sum = 1;
  for (i32 j = 0; j < n; j++) z[j] = (i32)((((u64)e[j] << 15) + sum / 2) / sum);
}

// The input boundary (`exec::quantize_input`): normalize when the model has
// statistics, then round half away from zero to the tensor's input scale.
DWS_KERNEL void quantize_i8(const QuantArgs a) {
  const float *x = dws_f32(a.ctx, a.x);
  const float *mean = dws_f32(a.ctx, a.mean);
  const float *sd = dws_f32(a.ctx, a.std);
  const float *scales = dws_f32(a.ctx, a.scales);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  i8 *out = dws_i8(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * a.len) {
    const i64 i = e % a.len;
    const i32 t = tensor_of(bounds, a.ntensors, i);
    float v = x[e];
    if (mean) v = (v - mean[i]) / sd[i];
    float q = roundf(v / scales[t]);
    q = fminf(fmaxf(q, -127.0f), 127.0f);
    out[e] = (i8)(i32)q;
  }
}

// `exec::gather8`: pooled entries reduced in int32 (max or sum), then
// requantized to the gathered scale.
DWS_KERNEL void gather_i8(const GatherArgs a) {
  const i8 *src = dws_i8(a.ctx, a.src);
  i8 *out = dws_i8(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.n * a.m * a.f) {
    const GatherSite g = gather_site(a, e);
    const i8 *s = src + g.b * a.src_stride + a.src_off;
    i32 v = a.red == RED_MAX ? DWS_I32_MIN : 0;
    for (i32 r = g.rr.lo; r < g.rr.hi; r++) {
      for (i32 col = g.cr.lo; col < g.cr.hi; col++) {
        i32 x = (i32)s[((i64)r * a.cols + col) * a.f + g.c];
        v = a.red == RED_MAX ? (x > v ? x : v) : v + x;
      }
    }
    out[e] = (i8)sat8(req_apply(a.req, v));
  }
}

// A linear layer on int8 rows (`kernels::linear8`, `mlp8`, the last layers of
// `set8` and `head`): acc = bias[o] + sum_i x[row, i] w[o, i], then the mode's
// epilogue. 32 x 32 output tiles; grid (row tiles, output tiles).
#define LT 32
DWS_KERNEL void linear_i8(const Linear8Args a) {
  DWS_SHARED i32 xs[LT][LT + 1];
  DWS_SHARED i32 ws[LT][LT + 1];
  DWS_SHARED i32 acc[LT][LT];
  const i8 *x = dws_i8(a.ctx, a.x);
  const i8 *w = dws_i8(a.ctx, a.w);
  const i32 *bias = dws_i32(a.ctx, a.bias);
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
      acc[r][o] += s;
    }
  }
  DWS_SYNC();
  DWS_BLOCK_FOR(t, LT * LT) {
    const i32 r = t / LT, o = t % LT;
    const i64 row = r0 + r;
    if (row < rows && o0 + o < a.fout) {
      const i32 v = acc[r][o];
      const i64 at = row * a.fout + o0 + o;
      if (a.mode == LIN8_OUT8) {
        i32 y = sat8(req_apply(a.req, v));
        if (a.relu && y < 0) y = 0;
        dws_i8(a.ctx, a.y)[at] = (i8)y;
      } else if (a.mode == LIN8_SUB8) {
        const i32 *sub = dws_i32(a.ctx, a.sub);
        dws_i8(a.ctx, a.y)[at] = (i8)sat8(sub_sat(req_apply(a.req, v), sub[(row / a.sub_n) * a.fout + o0 + o]));
      } else if (a.mode == LIN8_REQ32) {
        dws_i32(a.ctx, a.y)[at] = req_apply(a.req, v);
      } else {
        dws_f32(a.ctx, a.y)[at] = (float)v * a.logit_scale;
      }
    }
  }
}

// DeepSets pooling of `kernels::set8`: one block per group of n rows of width
// k; the pooled row (max, sum or attention-weighted sum in int32) requantized
// to int8. Dynamic shared memory: 2n i32 (attention only).
DWS_KERNEL void set_pool_i8(const SetPoolArgs a) {
  DWS_SHARED i64 red[DWS_THREADS];
  DWS_DYN_SMEM(i32, z);
  u32 *e = (u32 *)(z + a.n);
  const i64 g = blockIdx.x;
  const i8 *x = dws_i8(a.ctx, a.x) + g * a.n * a.k;
  i8 *out = dws_i8(a.ctx, a.out) + g * a.k;
  if (a.mode == POOL_ATTENTION) {
    const i8 *q = dws_i8(a.ctx, a.query);
    DWS_BLOCK_FOR(i, a.n) {
      i32 s = 0;
      for (i32 c = 0; c < a.k; c++) s += (i32)q[c] * (i32)x[(i64)i * a.k + c];
      z[i] = s;
    }
    softmax_q15_block(z, e, a.n, a.score, red);
    DWS_BLOCK_FOR(c, a.k) {
      i32 acc = 0;
      for (i32 i = 0; i < a.n; i++) acc += z[i] * (i32)x[(i64)i * a.k + c];
      out[c] = (i8)sat8(req_apply(a.pooled, acc));
    }
  } else {
    DWS_BLOCK_FOR(c, a.k) {
      i32 acc = a.mode == RED_MAX ? -128 : 0;
      for (i32 i = 0; i < a.n; i++) {
        i32 v = (i32)x[(i64)i * a.k + c];
        acc = a.mode == RED_MAX ? (v > acc ? v : acc) : acc + v;
      }
      out[c] = (i8)sat8(req_apply(a.pooled, acc));
    }
  }
}

// Set attention of `kernels::set8` after the Q, K, V projections, fc_o
// included: one block per row i of a group of n rows.
// Dynamic shared memory: 2n + dv i32.
DWS_KERNEL void attention_i8(const Attn8Args a) {
  DWS_SHARED i64 red[DWS_THREADS];
  DWS_DYN_SMEM(i32, z);
  u32 *e = (u32 *)(z + a.n);
  i32 *orow = z + 2 * a.n;
  const i64 row = blockIdx.x;
  const i64 g = row / a.n;
  const i32 dv = a.dv, w = a.dv / a.heads;
  const i8 *qi = dws_i8(a.ctx, a.q) + row * dv;
  const i8 *kg = dws_i8(a.ctx, a.k) + g * a.n * dv;
  const i8 *vg = dws_i8(a.ctx, a.v) + g * a.n * dv;
  const i8 *wo = dws_i8(a.ctx, a.wo);
  const i32 *bo = dws_i32(a.ctx, a.bo);
  i8 *out = dws_i8(a.ctx, a.out) + row * dv;
  for (i32 h = 0; h < a.heads; h++) {
    const i32 c0 = h * w;
    DWS_BLOCK_FOR(j, a.n) {
      i32 s = 0;
      for (i32 c = 0; c < w; c++) s += (i32)kg[(i64)j * dv + c0 + c] * (i32)qi[c0 + c];
      z[j] = s;
    }
    softmax_q15_block(z, e, a.n, a.score, red);
    DWS_BLOCK_FOR(c, w) {
      i32 av = 0;
      for (i32 j = 0; j < a.n; j++) av += z[j] * (i32)vg[(i64)j * dv + c0 + c];
      orow[c0 + c] = sat8(add_sat(req_apply(a.o_q, (i32)qi[c0 + c]), req_apply(a.o_av, av)));
    }
    DWS_SYNC();
  }
  DWS_BLOCK_FOR(c, dv) {
    i32 acc = bo ? bo[c] : 0;
    for (i32 i = 0; i < dv; i++) acc += (i32)wo[(i64)c * dv + i] * orow[i];
    out[c] = (i8)sat8(add_sat(req_apply(a.y_o, orow[c]), req_apply(a.y_fc, acc > 0 ? acc : 0)));
  }
}

// The same for small sets, one block per group: Q, K, V, O of the group in
// shared memory, scores of `heads_per_pass` heads at a time.
// Dynamic shared memory: 4 n dv + 2 heads_per_pass n n i32.
DWS_KERNEL void attention_set_i8(const Attn8Args a) {
  DWS_DYN_SMEM(i32, s);
  const i32 n = a.n, dv = a.dv, w = a.dv / a.heads, hp = a.heads_per_pass, nd = a.n * a.dv;
  i32 *q = s, *k = s + nd, *v = s + 2 * nd, *o = s + 3 * nd, *z = s + 4 * nd;
  u32 *e = (u32 *)(z + hp * n * n);
  const i64 g = blockIdx.x;
  const i8 *qg = dws_i8(a.ctx, a.q) + g * nd;
  const i8 *kg = dws_i8(a.ctx, a.k) + g * nd;
  const i8 *vg = dws_i8(a.ctx, a.v) + g * nd;
  const i8 *wo = dws_i8(a.ctx, a.wo);
  const i32 *bo = dws_i32(a.ctx, a.bo);
  i8 *out = dws_i8(a.ctx, a.out) + g * nd;
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
      i32 acc = 0;
      for (i32 c = 0; c < w; c++) acc += k[j * dv + c0 + c] * q[i * dv + c0 + c];
      z[t] = acc;
    }
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n) softmax_q15_row(z + t * n, e + t * n, n, a.score);
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n * w) {
      const i32 hh = t / (n * w), i = (t / w) % n, c = t % w;
      const i32 c0 = (h0 + hh) * w;
      const i32 *p = z + (hh * n + i) * n;
      i32 av = 0;
      for (i32 j = 0; j < n; j++) av += p[j] * v[j * dv + c0 + c];
      o[i * dv + c0 + c] = sat8(add_sat(req_apply(a.o_q, q[i * dv + c0 + c]), req_apply(a.o_av, av)));
    }
    DWS_SYNC();
  }
  DWS_BLOCK_FOR(t, nd) {
    const i32 i = t / dv, c = t % dv;
    i32 acc = bo ? bo[c] : 0;
    for (i32 m = 0; m < dv; m++) acc += (i32)wo[(i64)c * dv + m] * o[i * dv + m];
    out[t] = (i8)sat8(add_sat(req_apply(a.y_o, o[t]), req_apply(a.y_fc, acc > 0 ? acc : 0)));
  }
}

// Folded batch norm (int8) and ReLU on an int8 value of channel `k`.
DWS_DEV i32 post_i8(i32 v, const i32 *mult, const i32 *offs, i32 shift, i32 k, i32 relu) {
  if (mult) {
    i64 y = ((i64)v * (i64)mult[k] + (i64)offs[k]) >> shift;
    v = y < -127 ? -127 : (y > 127 ? 127 : (i32)y);
  }
  if (relu && v < 0) v = 0;
  return v;
}

// Every block of one destination tensor (`exec::layer`, phase 2): the int32
// accumulator of an entry collects contrib(Y) over the blocks, then
// sat8(out_req(acc)) and the fused post-ops.
DWS_KERNEL void scatter_i8(const Scatter8Args a) {
  const Contrib8 *cs = (const Contrib8 *)dws_ptr(a.ctx, a.contribs);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.mult) : 0;
  const i32 *offs = dws_i32(a.ctx, a.offs);
  i8 *out = dws_i8(a.ctx, a.out);
  const i64 per = (i64)a.rows * a.cols * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.f;
    const i32 cell = rem / a.f;
    const i32 r = cell / a.cols, c = cell % a.cols;
    i32 acc = 0;
    for (i32 k = 0; k < a.ncontrib; k++) {
      const Contrib8 ct = cs[k];
      const i32 i = place_index(ct.place, r, c, a.cols);
      const i32 j = unfold_index(ct.unfold, r, c);
      const i8 *y = dws_i8(a.ctx, ct.y);
      acc = add_wrap(acc, req_apply(ct.req, (i32)y[(b * ct.n + i) * ((i64)ct.m * a.f) + (i64)j * a.f + o]));
    }
    i32 v = sat8(req_apply(a.out_req, acc));
    out[b * a.out_stride + a.out_off + rem] = (i8)post_i8(v, mult, offs, a.affine_shift, o, a.relu);
  }
}

// `exec::resample8` input: the per-feature sets over d1 of W_0's rows.
DWS_KERNEL void resample_gather_i8(const ResGatherArgs a) {
  const i8 *src = dws_i8(a.ctx, a.src);
  i8 *out = dws_i8(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.f * a.d1 * a.din) out[e] = src[resample_gather_src(a, e)];
}

// `exec::resample8` output: stored as is (down-sampling), or combined with
// the skip MLP's output as sat8(r_up(y) + r_skip(skip)) (up-sampling), then
// the post-ops of W_0.
DWS_KERNEL void resample_scatter_i8(const ResScatter8Args a) {
  const i8 *y = dws_i8(a.ctx, a.y);
  const i8 *skip = dws_i8(a.ctx, a.skip);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.mult) : 0;
  const i32 *offs = dws_i32(a.ctx, a.offs);
  i8 *out = dws_i8(a.ctx, a.out);
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
      v = sat8(add_sat(req_apply(a.r_up, v), req_apply(a.r_skip, s)));
    }
    out[b * a.out_stride + rem] = (i8)post_i8(v, mult, offs, a.affine_shift, ch, a.relu);
  }
}

// `Op::Affine` (int8) / `Op::Relu` when not fused into a scatter.
DWS_KERNEL void affine_relu_i8(const AffineArgs a) {
  i8 *x = dws_i8(a.ctx, a.x);
  const i32 *mult = a.has_affine ? dws_i32(a.ctx, a.scale) : 0;
  const i32 *offs = dws_i32(a.ctx, a.shift);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  const i64 per = (i64)a.cells_total * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 ch = rem % a.f;
    const i32 t = tensor_of(bounds, a.ntensors, rem / a.f);
    i8 *v = x + b * a.stride + rem;
    *v = (i8)post_i8((i32)*v, mult ? mult + t * a.f : 0, offs ? offs + t * a.f : 0, a.shift_bits, ch, a.relu);
  }
}

// `Op::InputSkip` (int8): acc = b[t, o] + w[o] . x0[e]; y = sat8(cur(y) + lin(acc)).
DWS_KERNEL void input_skip_i8(const SkipArgs a) {
  const i8 *x0 = dws_i8(a.ctx, a.x0);
  i8 *x = dws_i8(a.ctx, a.x);
  const i8 *w = dws_i8(a.ctx, a.w);
  const i32 *bias = dws_i32(a.ctx, a.bias);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  const Req *cur = (const Req *)dws_ptr(a.ctx, a.cur);
  const Req *lin = (const Req *)dws_ptr(a.ctx, a.lin);
  const i64 per = (i64)a.cells_total * a.fout;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.fout;
    const i32 cell = rem / a.fout;
    const i32 t = tensor_of(bounds, a.ntensors, cell);
    const i8 *xi = x0 + b * a.x0_stride + (i64)cell * a.fin;
    i32 acc = bias ? bias[t * a.fout + o] : 0;
    for (i32 i = 0; i < a.fin; i++) acc += (i32)w[(i64)o * a.fin + i] * (i32)xi[i];
    i8 *y = x + b * a.x_stride + rem;
    *y = (i8)sat8(add_sat(req_apply(cur[t], (i32)*y), req_apply(lin[t], acc)));
  }
}

// The invariant head's pooling (`exec::head`): each segment pooled in int32
// (max from -128, or the sum) and requantized to the head scale.
DWS_KERNEL void head_pool_i8(const HeadPoolArgs a) {
  const i8 *x = dws_i8(a.ctx, a.x);
  const HeadGroup *gs = (const HeadGroup *)dws_ptr(a.ctx, a.groups);
  const Req *reqs = (const Req *)dws_ptr(a.ctx, a.reqs);
  i8 *out = dws_i8(a.ctx, a.out);
  const i64 per = (i64)a.ngroups * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 c = rem % a.f;
    const HeadGroup g = gs[rem / a.f];
    const i8 *s = x + b * a.x_stride + g.start + c;
    i32 acc = a.red == RED_MAX ? -128 : 0;
    for (i32 i = 0; i < g.count; i++) {
      i32 v = (i32)s[(i64)i * g.stride];
      acc = a.red == RED_MAX ? (v > acc ? v : acc) : acc + v;
    }
    out[e] = (i8)sat8(req_apply(reqs[g.seg], acc));
  }
}

// The weight-space output boundary: q * s_out[t].
DWS_KERNEL void dequant_i8(const DequantArgs a) {
  const i8 *x = dws_i8(a.ctx, a.x);
  const float *scales = dws_f32(a.ctx, a.scales);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  float *out = dws_f32(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * a.len) {
    const i64 b = e / a.len;
    const i64 i = e % a.len;
    out[e] = (float)x[b * a.x_stride + i] * scales[tensor_of(bounds, a.ntensors, i)];
  }
}
