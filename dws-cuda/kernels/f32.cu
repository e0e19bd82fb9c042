// f32 kernels: everything of an f32 plan except the linear layers, which run
// as cuBLAS GEMMs (`src/gpu.rs`). Semantics follow `dws_core` (kernels/*.rs,
// model.rs); each kernel names the core function it mirrors.
#include "common.cuh"

// `Op::Normalize`: x0 = (x - mean) / std per input element.
DWS_KERNEL void normalize_f32(const NormArgs a) {
  const float *x = dws_f32(a.ctx, a.x);
  const float *mean = dws_f32(a.ctx, a.mean);
  const float *sd = dws_f32(a.ctx, a.std);
  float *out = dws_f32(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * a.len) {
    i64 i = e % a.len;
    out[e] = (x[e] - mean[i]) / sd[i];
  }
}

// `block::gather`: X[b * n + i, j * f + c] = reduce over the source range of
// (i, j) of src[b][(r * cols + col) * f + c]. One thread per output element.
DWS_KERNEL void gather_f32(const GatherArgs a) {
  const float *src = dws_f32(a.ctx, a.src);
  float *out = dws_f32(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.n * a.m * a.f) {
    const GatherSite g = gather_site(a, e);
    const float *s = src + g.b * a.src_stride + a.src_off;
    float acc = a.red == RED_MAX ? DWS_NEG_INF : 0.0f;
    for (i32 r = g.rr.lo; r < g.rr.hi; r++) {
      for (i32 col = g.cr.lo; col < g.cr.hi; col++) {
        float v = s[((i64)r * a.cols + col) * a.f + g.c];
        acc = a.red == RED_MAX ? fmaxf(acc, v) : acc + v;
      }
    }
    if (a.red == RED_MEAN) acc /= (float)((g.rr.hi - g.rr.lo) * (g.cr.hi - g.cr.lo));
    out[e] = acc;
  }
}

// Hidden layers of an MLP: y = act(y + bias) in place, after the GEMM.
DWS_KERNEL void bias_act_f32(const BiasActArgs a) {
  float *y = dws_f32(a.ctx, a.y);
  const float *bias = dws_f32(a.ctx, a.bias);
  DWS_FOR_EACH(e, a.ctx.batch * a.rows_per_sample * a.cols) {
    float v = y[e];
    if (bias) v += bias[e % a.cols];
    if (a.relu) v = fmaxf(v, 0.0f);
    y[e] = v;
  }
}

// DeepSets pooling (`set_layer::set_layer`, `attention_pool`): one block per
// group of n rows of width k; out[g, c] = reduce_i x[g * n + i, c], or the
// attention-weighted sum with weights softmax_i(x_i . query).
// Dynamic shared memory: n floats (attention only).
DWS_KERNEL void set_pool_f32(const SetPoolArgs a) {
  DWS_SHARED float red[DWS_THREADS];
  DWS_DYN_SMEM(float, p);
  const i64 g = blockIdx.x;
  const float *x = dws_f32(a.ctx, a.x) + g * a.n * a.k;
  float *out = dws_f32(a.ctx, a.out) + g * a.k;
  if (a.mode == POOL_ATTENTION) {
    const float *q = dws_f32(a.ctx, a.query);
    float mx = DWS_NEG_INF;
    DWS_BLOCK_FOR(i, a.n) {
      float s = 0.0f;
      for (i32 c = 0; c < a.k; c++) s += x[(i64)i * a.k + c] * q[c];
      p[i] = s;
      mx = fmaxf(mx, s);
    }
    mx = block_max_f32(mx, red);
    float sum = 0.0f;
    DWS_BLOCK_FOR(i, a.n) {
      p[i] = expf(p[i] - mx);
      sum += p[i];
    }
    sum = block_sum_f32(sum, red);
    DWS_BLOCK_FOR(i, a.n) p[i] = p[i] / sum;
    DWS_SYNC();
    DWS_BLOCK_FOR(c, a.k) {
      float acc = 0.0f;
      for (i32 i = 0; i < a.n; i++) acc += p[i] * x[(i64)i * a.k + c];
      out[c] = acc;
    }
  } else {
    DWS_BLOCK_FOR(c, a.k) {
      float acc = a.mode == RED_MAX ? DWS_NEG_INF : 0.0f;
      for (i32 i = 0; i < a.n; i++) {
        float v = x[(i64)i * a.k + c];
        acc = a.mode == RED_MAX ? fmaxf(acc, v) : acc + v;
      }
      if (a.mode == RED_MEAN) acc /= (float)a.n;
      out[c] = acc;
    }
  }
}

// Multi-head set attention (`set_layer::set_layer`, SAB) without fc_o: one
// block per row i of a group of n rows. qkv holds [rows, 3 * dv] (Q | K | V,
// before their biases); out[i, h * w + c] = q_i[c] + sum_j softmax_j(q_i . k_j
// / sqrt(dv)) v_j[c] over the head's w channels.
// Dynamic shared memory: n + dv floats.
DWS_KERNEL void attention_f32(const AttnArgs a) {
  DWS_SHARED float red[DWS_THREADS];
  DWS_DYN_SMEM(float, p);
  float *q = p + a.n;
  const i64 row = blockIdx.x;
  const i64 g = row / a.n;
  const i32 dv = a.dv, w = a.dv / a.heads, ld = 3 * a.dv;
  const float *qkv = dws_f32(a.ctx, a.qkv);
  const float *bias = dws_f32(a.ctx, a.bias);
  const float *grp = qkv + g * a.n * ld;
  float *out = dws_f32(a.ctx, a.out) + row * dv;
  const float norm = sqrtf((float)dv);
  DWS_BLOCK_FOR(c, dv) q[c] = qkv[row * ld + c] + bias[c];
  DWS_SYNC();
  for (i32 h = 0; h < a.heads; h++) {
    const i32 c0 = h * w;
    float mx = DWS_NEG_INF;
    DWS_BLOCK_FOR(j, a.n) {
      const float *kj = grp + (i64)j * ld + dv;
      float s = 0.0f;
      for (i32 c = 0; c < w; c++) s += q[c0 + c] * (kj[c0 + c] + bias[dv + c0 + c]);
      s = s / norm;
      p[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = block_max_f32(mx, red);
    float sum = 0.0f;
    DWS_BLOCK_FOR(j, a.n) {
      p[j] = expf(p[j] - mx);
      sum += p[j];
    }
    sum = block_sum_f32(sum, red);
    DWS_BLOCK_FOR(j, a.n) p[j] = p[j] / sum;
    DWS_SYNC();
    DWS_BLOCK_FOR(c, w) {
      float acc = 0.0f;
      const float bv = bias[2 * dv + c0 + c];
      for (i32 j = 0; j < a.n; j++) acc += p[j] * (grp[(i64)j * ld + 2 * dv + c0 + c] + bv);
      out[c0 + c] = q[c0 + c] + acc;
    }
    DWS_SYNC();
  }
}

// The same for small sets, one block per group: the group's Q | K | V rows
// (biases added) stay in shared memory, scores of `heads_per_pass` heads at a
// time, and every softmax row is computed in order as on the CPU.
// Dynamic shared memory: n * 3 dv + heads_per_pass * n * n floats.
DWS_KERNEL void attention_set_f32(const AttnArgs a) {
  DWS_DYN_SMEM(float, s);
  const i32 n = a.n, dv = a.dv, ld = 3 * a.dv, w = a.dv / a.heads, hp = a.heads_per_pass;
  float *p = s + (i64)n * ld;
  const i64 g = blockIdx.x;
  const float *src = dws_f32(a.ctx, a.qkv) + g * n * ld;
  const float *bias = dws_f32(a.ctx, a.bias);
  float *out = dws_f32(a.ctx, a.out) + g * n * dv;
  const float norm = sqrtf((float)dv);
  DWS_BLOCK_FOR(t, n * ld) s[t] = src[t] + bias[t % ld];
  DWS_SYNC();
  for (i32 h0 = 0; h0 < a.heads; h0 += hp) {
    DWS_BLOCK_FOR(t, hp * n * n) {
      const i32 c0 = (h0 + t / (n * n)) * w;
      const i32 i = (t / n) % n, j = t % n;
      float acc = 0.0f;
      for (i32 c = 0; c < w; c++) acc += s[i * ld + c0 + c] * s[j * ld + dv + c0 + c];
      p[t] = acc / norm;
    }
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n) {
      float *row = p + (i64)t * n;
      float mx = DWS_NEG_INF;
      for (i32 j = 0; j < n; j++) mx = fmaxf(mx, row[j]);
      float sum = 0.0f;
      for (i32 j = 0; j < n; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
      }
      for (i32 j = 0; j < n; j++) row[j] = row[j] / sum;
    }
    DWS_SYNC();
    DWS_BLOCK_FOR(t, hp * n * w) {
      const i32 hh = t / (n * w), i = (t / w) % n, c = t % w;
      const i32 c0 = (h0 + hh) * w;
      const float *row = p + ((i64)hh * n + i) * n;
      float acc = 0.0f;
      for (i32 j = 0; j < n; j++) acc += row[j] * s[j * ld + 2 * dv + c0 + c];
      out[(i64)i * dv + c0 + c] = s[i * ld + c0 + c] + acc;
    }
    DWS_SYNC();
  }
}

// Folded batch norm and ReLU on a value of tensor entry channel `k`.
DWS_DEV float post_f32(float v, const float *scale, const float *shift, i32 k, i32 relu) {
  if (scale) v = v * scale[k] + shift[k];
  if (relu) v = fmaxf(v, 0.0f);
  return v;
}

// Every block of one destination tensor (`block::scatter` over the layer's
// blocks), then the fused post-ops: dst[r, c, o] = post(sum_blocks scale *
// map_value(Y, row(r, c), unfold(r, c) * f + o)). One thread per entry channel.
DWS_KERNEL void scatter_f32(const ScatterArgs a) {
  const Contrib *cs = (const Contrib *)dws_ptr(a.ctx, a.contribs);
  const float *scale = dws_f32(a.ctx, a.affine_scale);
  const float *shift = dws_f32(a.ctx, a.affine_shift);
  float *out = dws_f32(a.ctx, a.out);
  const i64 per = (i64)a.rows * a.cols * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.f;
    const i32 cell = rem / a.f;
    const i32 r = cell / a.cols, c = cell % a.cols;
    float acc = 0.0f;
    for (i32 k = 0; k < a.ncontrib; k++) {
      const Contrib &ct = cs[k];
      const i32 i = place_index(ct.place, r, c, a.cols);
      const i32 j = unfold_index(ct.unfold, r, c);
      acc += ct.scale * map_value(a.ctx, ct.mo, b * ct.n + i, j * a.f + o);
    }
    out[b * a.out_stride + a.out_off + rem] = post_f32(acc, scale, shift, o, a.relu);
  }
}

// Down/up-sampling input: per feature ch, the set over d1 of rows of W_0:
// out[((b * f + ch) * d1 + n) * din + k] = src[b][(k * d1 + n) * f + ch].
DWS_KERNEL void resample_gather_f32(const ResGatherArgs a) {
  const float *src = dws_f32(a.ctx, a.src);
  float *out = dws_f32(a.ctx, a.out);
  DWS_FOR_EACH(e, a.ctx.batch * (i64)a.f * a.d1 * a.din) out[e] = src[resample_gather_src(a, e)];
}

// Back from the per-feature sets (`model.rs` `resample`): out[b][(r * d1 + n)
// * f + ch] = map_value(row (b * f + ch) * d1 + n, col r), plus with `combine`
// the skip MLP's value of that entry, then the post-ops of W_0.
DWS_KERNEL void resample_scatter_f32(const ResScatterArgs a) {
  const float *scale = dws_f32(a.ctx, a.affine_scale);
  const float *shift = dws_f32(a.ctx, a.affine_shift);
  float *out = dws_f32(a.ctx, a.out);
  const i64 per = (i64)a.dout * a.d1 * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 ch = rem % a.f;
    const i32 n = (rem / a.f) % a.d1;
    const i32 r = rem / (a.f * a.d1);
    float v = map_value(a.ctx, a.mo, (b * a.f + ch) * a.d1 + n, r);
    if (a.combine) v = map_value(a.ctx, a.skip, b * a.dout * a.d1 + (i64)r * a.d1 + n, ch) + v;
    out[b * a.out_stride + rem] = post_f32(v, scale, shift, ch, a.relu);
  }
}

// `Op::Affine` / `Op::Relu` when not fused into a scatter.
DWS_KERNEL void affine_relu_f32(const AffineArgs a) {
  float *x = dws_f32(a.ctx, a.x);
  const float *scale = dws_f32(a.ctx, a.scale);
  const float *shift = dws_f32(a.ctx, a.shift);
  const i32 *bounds = dws_i32(a.ctx, a.bounds);
  const i64 per = (i64)a.cells_total * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 ch = rem % a.f;
    const i32 t = tensor_of(bounds, a.ntensors, rem / a.f);
    float *v = x + b * a.stride + rem;
    float y = *v;
    if (a.has_affine) y = y * scale[t * a.f + ch] + shift[t * a.f + ch];
    if (a.relu) y = fmaxf(y, 0.0f);
    *v = y;
  }
}

// `Op::InputSkip` (`model.rs` `input_skip`): x[e, o] += W[o] . x0[e] + b[o].
DWS_KERNEL void input_skip_f32(const SkipArgs a) {
  const float *x0 = dws_f32(a.ctx, a.x0);
  float *x = dws_f32(a.ctx, a.x);
  const float *w = dws_f32(a.ctx, a.w);
  const float *bias = dws_f32(a.ctx, a.bias);
  const i64 per = (i64)a.cells_total * a.fout;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 o = rem % a.fout;
    const i32 cell = rem / a.fout;
    const float *xi = x0 + b * a.x0_stride + (i64)cell * a.fin;
    float dot = 0.0f;
    for (i32 i = 0; i < a.fin; i++) dot += xi[i] * w[(i64)o * a.fin + i];
    float *y = x + b * a.x_stride + rem;
    *y += dot + (bias ? bias[o] : 0.0f);
  }
}

// The invariant head's pooling (`model.rs` `head`): out[b, g * f + c] reduces
// the group's entries. One thread per output value.
DWS_KERNEL void head_pool_f32(const HeadPoolArgs a) {
  const float *x = dws_f32(a.ctx, a.x);
  const HeadGroup *gs = (const HeadGroup *)dws_ptr(a.ctx, a.groups);
  float *out = dws_f32(a.ctx, a.out);
  const i64 per = (i64)a.ngroups * a.f;
  DWS_FOR_EACH(e, a.ctx.batch * per) {
    const i64 b = e / per;
    const i32 rem = (i32)(e % per);
    const i32 c = rem % a.f;
    const HeadGroup g = gs[rem / a.f];
    const float *s = x + b * a.x_stride + g.start + c;
    float acc = a.red == RED_MAX ? DWS_NEG_INF : 0.0f;
    for (i32 i = 0; i < g.count; i++) {
      float v = s[(i64)i * g.stride];
      acc = a.red == RED_MAX ? fmaxf(acc, v) : acc + v;
    }
    if (a.red == RED_MEAN) acc /= (float)g.count;
    out[e] = acc;
  }
}
