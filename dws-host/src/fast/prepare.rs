//! The plan, decoded once into what the batched executor needs: packed weights,
//! gather and scatter index maps, pooling and accumulator layouts.
//!
//! Every decision is taken here, at load time, from the same [`dws_core::plan`]
//! the core walks; [`super::exec`] only follows it.

use super::attention;
use super::gemm::PackedB;
use anyhow::{bail, ensure, Result};
use dws_core::blob::Precision;
use dws_core::plan::{
    Axis, Block, DwsLayer, Head, Linear, Map, Mlp, Op, ParamRef, Reduction, SetAxis, SetLayer,
    SetPooling,
};
use dws_core::Model;

/// Linear layers with a ReLU between consecutive ones, packed.
#[derive(Debug, Clone)]
pub(crate) struct FMlp {
    pub layers: Vec<PackedB>,
}

impl FMlp {
    pub fn fout(&self) -> usize {
        self.layers.last().map_or(0, |l| l.n())
    }
}

/// How a DeepSets layer pools its set.
#[derive(Debug, Clone)]
pub(crate) enum DsPool {
    Reduce(Reduction),
    Attention(Vec<f32>),
}

/// A set layer over groups of `n` rows.
#[derive(Debug, Clone)]
pub(crate) enum FSet {
    DeepSets {
        gamma: FMlp,
        lambda: FMlp,
        pool: DsPool,
    },
    /// Set attention; `qkv` maps a row to `[q | k / sqrt(dv) | v]`.
    Sab {
        heads: usize,
        dv: usize,
        qkv: PackedB,
        o: PackedB,
    },
}

/// A block's map.
#[derive(Debug, Clone)]
pub(crate) enum FMap {
    Mlp(FMlp),
    Set(FSet),
}

/// Which reduced view of a source tensor a block reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The tensor itself.
    Tensor,
    /// A pooled view at this offset (floats) of the input's pool area.
    Pool(usize),
}

/// Where a block's mapped rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Straight into the destination tensor (the rows depend on both axes).
    Full,
    /// Into an accumulator at this offset (floats) of the input's accumulator area,
    /// broadcast over the missing axis when the layer ends.
    Acc(usize),
}

/// One block, ready to run: `target += scale * map(gather(view))`.
#[derive(Debug, Clone)]
pub(crate) struct FBlock {
    pub src: usize,
    pub dst: usize,
    pub view: View,
    /// Cells of the view.
    pub view_cells: usize,
    /// Rows of the gathered matrix and vectors folded into each.
    pub n: usize,
    pub m: usize,
    /// `n * m` view cells feeding the gathered matrix, `None` when it is the view itself.
    pub gather: Option<Vec<u32>>,
    pub map: FMap,
    /// Output vectors per row.
    pub m_out: usize,
    pub target: Target,
    /// Target cells.
    pub target_cells: usize,
    /// Mapped vector feeding each target cell, `None` when one-to-one.
    pub scatter: Option<Vec<u32>>,
    pub scale: f32,
    /// A one-to-one cell-wise MLP: runs as GEMMs from the source tensor straight
    /// into the destination, the scale folded into its last layer.
    pub direct: bool,
    /// A direct block that is the first to write its destination tensor: it
    /// stores instead of adding, and the tensor is not zeroed first.
    pub store: bool,
    /// A cell-wise direct block that is its tensor's only full writer: it runs in
    /// the layer's last pass, a few grid rows at a time, each finished at once.
    pub tail: bool,
}

/// Per tensor: offsets of its pooled views (over rows: `[cols]` cells, over columns:
/// `[rows]` cells, over both: one cell) in an input's pool area.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PoolSlot {
    pub over_rows: Option<usize>,
    pub over_cols: Option<usize>,
    pub over_both: Option<usize>,
}

/// Per tensor: offsets of its broadcast accumulators in an input's accumulator
/// area: `[rows]` cells (constant along columns), `[cols]` cells, one cell.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccSlot {
    pub rows: Option<usize>,
    pub cols: Option<usize>,
    pub all: Option<usize>,
}

/// The `W_0` down/up-sampling of a layer.
#[derive(Debug, Clone)]
pub(crate) struct FResample {
    pub rows: usize,
    pub down: FSet,
    pub up: FSet,
    pub skip: FMlp,
}

/// What follows a layer and is fused into its last pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct Post {
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    pub relu: bool,
}

/// A DWS layer.
#[derive(Debug, Clone)]
pub(crate) struct FLayer {
    pub fin: usize,
    pub fout: usize,
    pub red: Reduction,
    /// Grids inside the layer (`W_0` down-sampled when resampling).
    pub grids: Vec<(usize, usize)>,
    pub pools: Vec<PoolSlot>,
    /// Floats of one input's pool area.
    pub pool_len: usize,
    pub accs: Vec<AccSlot>,
    /// Floats of one input's accumulator area.
    pub acc_len: usize,
    pub blocks: Vec<FBlock>,
    pub resample: Option<FResample>,
    pub post: Post,
    /// Per tensor: zero the destination before the blocks run.
    pub zero: Vec<bool>,
    /// The next layer's pooled views, computed in this layer's last pass (the next
    /// layer then skips its pooling pass).
    pub feed: Option<Feed>,
    /// This layer's pooled views were computed by the previous layer.
    pub fed: bool,
}

/// The pooled views a layer computes for the next one.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    pub red: Reduction,
    pub pools: Vec<PoolSlot>,
    pub pool_len: usize,
}

/// One step.
#[derive(Debug, Clone)]
pub(crate) enum FOp {
    Normalize {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    Layer(Box<FLayer>),
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Relu,
    InputSkip(PackedB),
    Head {
        red: Reduction,
        mlp: FMlp,
        width: usize,
    },
}

/// The whole prepared model.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub dims: Vec<usize>,
    /// Grids of the weight space's tensors.
    pub grids: Vec<(usize, usize)>,
    /// Cell offset of each tensor.
    pub offsets: Vec<usize>,
    pub cells: usize,
    pub input_features: usize,
    /// Widest features of any activation.
    pub fmax: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub ops: Vec<FOp>,
}

struct Ctx<'a> {
    params: &'a [f32],
}

impl Ctx<'_> {
    fn get(&self, r: ParamRef) -> Result<&[f32]> {
        let (a, b) = (r.offset as usize, r.offset as usize + r.len as usize);
        ensure!(b <= self.params.len(), "parameter out of bounds");
        Ok(&self.params[a..b])
    }

    fn linear(&self, l: &Linear, scale: f32) -> Result<PackedB> {
        let (k, n) = (l.fin as usize, l.fout as usize);
        let w = self.get(l.weight)?;
        let bias = l.bias.map(|b| self.get(b)).transpose()?;
        if scale == 1.0 {
            return Ok(PackedB::from_linear(w, k, n, bias));
        }
        let sb: Option<Vec<f32>> = bias.map(|b| b.iter().map(|v| v * scale).collect());
        Ok(PackedB::from_fn(
            k,
            n,
            |kk, j| w[j * k + kk] * scale,
            sb.as_deref(),
        ))
    }

    /// The MLP, with `scale` folded into its last layer.
    fn mlp(&self, m: &Mlp, scale: f32) -> Result<FMlp> {
        let n = m.layers.len();
        let layers = m
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| self.linear(l, if i + 1 == n { scale } else { 1.0 }))
            .collect::<Result<Vec<_>>>()?;
        Ok(FMlp { layers })
    }

    fn set(&self, s: &SetLayer) -> Result<FSet> {
        Ok(match s {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => FSet::DeepSets {
                gamma: self.mlp(gamma, 1.0)?,
                lambda: self.mlp(lambda, 1.0)?,
                pool: match pooling {
                    SetPooling::Reduce(r) => DsPool::Reduce(*r),
                    SetPooling::Attention { query } => {
                        DsPool::Attention(self.get(*query)?.to_vec())
                    }
                },
            },
            SetLayer::Attention {
                heads,
                fc_q,
                fc_k,
                fc_v,
                fc_o,
            } => {
                let dv = fc_q.fout as usize;
                let k = fc_q.fin as usize;
                let heads = *heads as usize;
                ensure!(
                    heads >= 1 && dv.is_multiple_of(heads),
                    "attention heads do not divide dim_V"
                );
                let w = dv / heads;
                // [q | k | v], each part's columns in the attention kernel's order,
                // the keys scaled for its base-2 softmax.
                let parts = [(fc_q, 1.0), (fc_k, attention::key_scale(dv)), (fc_v, 1.0)];
                let mut src_col = vec![0usize; dv];
                for h in 0..heads {
                    for c in 0..w {
                        src_col[attention::column(heads, dv, h, c)] = h * w + c;
                    }
                }
                let mut ws = Vec::new();
                let mut bias = vec![0f32; 3 * dv];
                for (p, (l, s)) in parts.iter().enumerate() {
                    ws.push(self.get(l.weight)?);
                    if let Some(b) = l.bias {
                        let b = self.get(b)?;
                        for (j, o) in bias[p * dv..(p + 1) * dv].iter_mut().enumerate() {
                            *o = b[src_col[j]] * s;
                        }
                    }
                }
                let qkv = PackedB::from_fn(
                    k,
                    3 * dv,
                    |kk, j| {
                        let (p, jj) = (j / dv, j % dv);
                        ws[p][src_col[jj] * k + kk] * parts[p].1
                    },
                    Some(&bias),
                );
                FSet::Sab {
                    heads,
                    dv,
                    qkv,
                    o: self.linear(fc_o, 1.0)?,
                }
            }
        })
    }
}

/// Cells of the pooled grid `(pr, pc)` and the view they come from.
fn pooled(grid: (usize, usize), b: &Block) -> (usize, usize) {
    (
        if b.pool.rows { 1 } else { grid.0 },
        if b.pool.cols { 1 } else { grid.1 },
    )
}

/// The view cell feeding row `i`, fold position `j` (the core's `source_range`).
fn source_cell(b: &Block, pc: usize, i: usize, j: usize) -> usize {
    let pick = |pool: bool, set_here: SetAxis, axis: Axis, cells: usize| -> usize {
        if pool {
            0
        } else if b.set_axis == set_here {
            i
        } else if b.fold == axis {
            j
        } else if b.set_axis == SetAxis::Cells {
            cells
        } else {
            0
        }
    };
    let r = pick(b.pool.rows, SetAxis::Rows, Axis::Rows, i / pc.max(1));
    let c = pick(b.pool.cols, SetAxis::Cols, Axis::Cols, i % pc.max(1));
    r * pc + c
}

fn identity(map: &[u32], len: usize) -> bool {
    map.len() == len && map.iter().enumerate().all(|(q, &v)| q == v as usize)
}

fn prepare_layer(
    ctx: &Ctx<'_>,
    l: &DwsLayer,
    blocks: &[Block],
    base_grids: &[(usize, usize)],
) -> Result<FLayer> {
    let (fin, fout) = (l.fin as usize, l.fout as usize);
    let mut grids = base_grids.to_vec();
    let resample = match &l.resample {
        Some(r) => {
            grids[0].0 = r.rows as usize;
            Some(FResample {
                rows: r.rows as usize,
                down: ctx.set(&r.down)?,
                up: ctx.set(&r.up)?,
                skip: ctx.mlp(&r.skip, 1.0)?,
            })
        }
        None => None,
    };
    let t = grids.len();
    let mut pools = vec![PoolSlot::default(); t];
    let mut pool_len = 0;
    let mut accs = vec![AccSlot::default(); t];
    let mut acc_len = 0;
    let mut out = Vec::new();
    for b in blocks {
        let (s, d) = (b.src as usize, b.dst as usize);
        ensure!(s < t && d < t, "block tensor out of range");
        let sg = grids[s];
        let dg = grids[d];
        let (pr, pc) = pooled(sg, b);
        let view = match (b.pool.rows, b.pool.cols) {
            (false, false) => View::Tensor,
            (rows, cols) => {
                let slot = &mut pools[s];
                let (field, len) = match (rows, cols) {
                    (true, false) => (&mut slot.over_rows, sg.1),
                    (false, true) => (&mut slot.over_cols, sg.0),
                    _ => (&mut slot.over_both, 1),
                };
                let off = *field.get_or_insert_with(|| {
                    pool_len += len * fin;
                    pool_len - len * fin
                });
                View::Pool(off)
            }
        };
        let n = match b.set_axis {
            SetAxis::None => 1,
            SetAxis::Rows => pr,
            SetAxis::Cols => pc,
            SetAxis::Cells => pr * pc,
        };
        let m = match b.fold {
            Axis::None => 1,
            Axis::Rows => pr,
            Axis::Cols => pc,
        };
        let view_cells = pr * pc;
        let gmap: Vec<u32> = (0..n * m)
            .map(|q| source_cell(b, pc, q / m, q % m) as u32)
            .collect();
        ensure!(
            gmap.iter().all(|&v| (v as usize) < view_cells),
            "gather out of range"
        );
        let gather = (!identity(&gmap, view_cells)).then_some(gmap);

        let m_out = match b.unfold {
            Axis::None => 1,
            Axis::Rows => dg.0,
            Axis::Cols => dg.1,
        };
        let (rows, cols) = dg;
        let dep_r = rows > 1
            && (matches!(b.place, SetAxis::Rows | SetAxis::Cells) || b.unfold == Axis::Rows);
        let dep_c = cols > 1
            && (matches!(b.place, SetAxis::Cols | SetAxis::Cells) || b.unfold == Axis::Cols);
        let index = |r: usize, c: usize| -> u32 {
            let i = match b.place {
                SetAxis::None => 0,
                SetAxis::Rows => r,
                SetAxis::Cols => c,
                SetAxis::Cells => r * cols + c,
            };
            let j = match b.unfold {
                Axis::None => 0,
                Axis::Rows => r,
                Axis::Cols => c,
            };
            (i * m_out + j) as u32
        };
        let slot = &mut accs[d];
        let mut acc = |field: &mut Option<usize>, len: usize| {
            *field.get_or_insert_with(|| {
                acc_len += len * fout;
                acc_len - len * fout
            })
        };
        let (target, smap): (Target, Vec<u32>) = if (dep_r || rows == 1) && (dep_c || cols == 1) {
            (
                Target::Full,
                (0..rows * cols)
                    .map(|q| index(q / cols, q % cols))
                    .collect(),
            )
        } else if dep_r {
            (
                Target::Acc(acc(&mut slot.rows, rows)),
                (0..rows).map(|r| index(r, 0)).collect(),
            )
        } else if dep_c {
            (
                Target::Acc(acc(&mut slot.cols, cols)),
                (0..cols).map(|c| index(0, c)).collect(),
            )
        } else {
            (Target::Acc(acc(&mut slot.all, 1)), vec![index(0, 0)])
        };
        ensure!(
            smap.iter().all(|&v| (v as usize) < n * m_out),
            "scatter out of range"
        );
        let target_cells = smap.len();
        let scatter = (!identity(&smap, n * m_out)).then_some(smap);
        let direct = matches!(b.map, Map::Mlp(_))
            && view == View::Tensor
            && gather.is_none()
            && target == Target::Full
            && scatter.is_none();
        let map = match &b.map {
            Map::Mlp(mlp) => FMap::Mlp(ctx.mlp(mlp, if direct { b.scale } else { 1.0 })?),
            Map::Set(s) => FMap::Set(ctx.set(s)?),
        };
        let (kin, kout) = match &map {
            FMap::Mlp(mlp) => (mlp.layers[0].k(), mlp.fout()),
            FMap::Set(FSet::DeepSets { gamma, .. }) => (gamma.layers[0].k(), gamma.fout()),
            FMap::Set(FSet::Sab { qkv, dv, .. }) => (qkv.k(), *dv),
        };
        ensure!(
            kin == m * fin && kout == m_out * fout,
            "block widths do not match its grids"
        );
        out.push(FBlock {
            src: s,
            dst: d,
            view,
            view_cells,
            n,
            m,
            gather,
            map,
            m_out,
            target,
            target_cells,
            scatter,
            scale: if direct { 1.0 } else { b.scale },
            direct,
            store: false,
            tail: false,
        });
    }
    // The first writer of a whole tensor stores when it is a direct block (and the
    // tensor is not W_0 inside a resampling layer, which lives in its own buffer).
    let mut zero = vec![true; t];
    let mut seen = vec![false; t];
    let mut writers = vec![0usize; t];
    for b in &out {
        if b.target == Target::Full {
            writers[b.dst] += 1;
        }
    }
    for b in &mut out {
        if b.target == Target::Full && !seen[b.dst] {
            seen[b.dst] = true;
            if b.direct && !(resample.is_some() && b.dst == 0) {
                b.store = true;
                zero[b.dst] = false;
                b.tail = resample.is_none()
                    && writers[b.dst] == 1
                    && b.m == 1
                    && b.m_out == 1
                    && grids[b.src] == grids[b.dst];
            }
        }
    }
    Ok(FLayer {
        zero,
        feed: None,
        fed: false,
        fin,
        fout,
        red: l.reduction,
        grids,
        pools,
        pool_len,
        accs,
        acc_len,
        blocks: out,
        resample,
        post: Post::default(),
    })
}

/// Decodes and prepares every op of a validated model.
pub(crate) fn prepare(model: &Model<'_>) -> Result<Prepared> {
    ensure!(
        model.precision() == Precision::F32,
        "the fast engine runs f32 models; this blob is {:?} (use the core engine)",
        model.precision()
    );
    let ctx = Ctx {
        params: model.params(),
    };
    let dims: Vec<usize> = model.dims().iter().map(|&d| d as usize).collect();
    let l = dims.len() - 1;
    let grids: Vec<(usize, usize)> = (0..2 * l)
        .map(|t| {
            if t < l {
                (dims[t], dims[t + 1])
            } else {
                (dims[t - l + 1], 1)
            }
        })
        .collect();
    let mut offsets = Vec::with_capacity(grids.len());
    let mut cells = 0;
    for g in &grids {
        offsets.push(cells);
        cells += g.0 * g.1;
    }
    let spec = model.spec();
    let input_features = spec.input_features as usize;
    let mut fmax = input_features;
    let ops: Vec<Op> = model
        .ops()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("decoding the plan: {e}"))?;
    let mut fops = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Normalize { mean, std } => fops.push(FOp::Normalize {
                mean: ctx.get(*mean)?.to_vec(),
                std: ctx.get(*std)?.to_vec(),
            }),
            Op::Dws(layer) => {
                let nb = layer.blocks as usize;
                let mut blocks = Vec::with_capacity(nb);
                for op in ops.iter().skip(i + 1).take(nb) {
                    let Op::Block(b) = op else {
                        bail!("DWS layer has fewer blocks than announced")
                    };
                    blocks.push(b.clone());
                }
                ensure!(
                    blocks.len() == nb,
                    "DWS layer has fewer blocks than announced"
                );
                i += nb;
                let mut fl = prepare_layer(&ctx, layer, &blocks, &grids)?;
                fmax = fmax.max(fl.fout).max(fl.fin);
                // Fuse a following folded batch norm and ReLU into the layer's last pass.
                if fl.resample.is_none() {
                    if let Some(Op::Affine { scale, shift }) = ops.get(i + 1) {
                        fl.post.affine =
                            Some((ctx.get(*scale)?.to_vec(), ctx.get(*shift)?.to_vec()));
                        i += 1;
                    }
                    if let Some(Op::Relu) = ops.get(i + 1) {
                        fl.post.relu = true;
                        i += 1;
                    }
                }
                fops.push(FOp::Layer(Box::new(fl)));
            }
            Op::Block(_) => bail!("block outside a DWS layer"),
            Op::Affine { scale, shift } => fops.push(FOp::Affine {
                scale: ctx.get(*scale)?.to_vec(),
                shift: ctx.get(*shift)?.to_vec(),
            }),
            Op::Relu => fops.push(FOp::Relu),
            Op::Quant(_) => bail!("quantization record in an f32 plan"),
            Op::InputSkip(lin) => fops.push(FOp::InputSkip(ctx.linear(lin, 1.0)?)),
            Op::Head(Head { reduction, mlp }) => {
                let mlp = ctx.mlp(mlp, 1.0)?;
                let width = mlp.layers[0].k();
                fops.push(FOp::Head {
                    red: *reduction,
                    mlp,
                    width,
                });
            }
        }
        i += 1;
    }
    // A layer directly followed by another (no resampling on either side) pools
    // the next layer's views in its last pass.
    for i in 1..fops.len() {
        let (head, tail) = fops.split_at_mut(i);
        if let (FOp::Layer(prev), FOp::Layer(next)) = (&mut head[i - 1], &mut tail[0]) {
            if prev.resample.is_none() && next.resample.is_none() && prev.fout == next.fin {
                prev.feed = Some(Feed {
                    red: next.red,
                    pools: next.pools.clone(),
                    pool_len: next.pool_len,
                });
                next.fed = true;
            }
        }
    }
    Ok(Prepared {
        dims,
        grids,
        offsets,
        cells,
        input_features,
        fmax,
        input_len: model.input_len(),
        output_len: model.output_len(),
        ops: fops,
    })
}
