//! The work of one inference of an int8 plan, counted from the plan alone:
//! what any int8 executor has to compute, whatever its code looks like (the
//! profile says how many instructions today's code spends on it).

use dws_embedded::dws_core::kernels::block::Dims;
use dws_embedded::dws_core::kernels::linear::mlp_macs;
use dws_embedded::dws_core::plan::{Map, Mlp, Op, SetAxis, SetLayer, SetPooling};
use dws_embedded::dws_core::validate::block_dims;
use dws_embedded::dws_core::{Error, Model, Shape};
use std::collections::BTreeMap;

/// A kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    /// Multiply-accumulates of linear layers (block MLPs, DeepSets `Gamma`
    /// and `Lambda`, attention `fc_q`, `fc_k`, `fc_v`, `fc_o`, resampling,
    /// input skip, head MLP).
    LinearMacs,
    /// Outputs of those linear layers (one requantization each).
    LinearOutputs,
    /// Attention scores: `n * n` per head of a set attention block, `n` per
    /// attention pooling over `n` rows.
    Scores,
    /// Multiply-accumulates of the attention scores (`q . k`, `query . x`).
    ScoreMacs,
    /// Multiply-accumulates of the probability-weighted value sums.
    ValueMacs,
    /// Outputs of set attention, `O = Q + softmax(..) V`, before `fc_o`.
    AttentionOutputs,
    /// Source values read by the gathers (a pooled entry reads its whole
    /// row, column or grid).
    PoolReads,
    /// Values the gathers produce (rows of the blocks' input matrices).
    PooledValues,
    /// Values read by the DeepSets reductions over a block's rows.
    SetPoolReads,
    /// Outputs of the maps of the blocks that are not cell-wise (stored,
    /// then added into every destination entry they reach).
    StoredValues,
    /// Values added into destination tensors: one per destination value and
    /// block.
    ScatterAdds,
    /// Inputs of the cell-wise blocks (each requantized to the block's scale).
    CellValues,
    /// Values of the destination tensors of every DWS layer (one
    /// requantization each).
    DstValues,
    /// Values of the folded batch norms.
    AffineValues,
    /// Values of the ReLUs between layers.
    ReluValues,
    /// Input values quantized to int8.
    InputValues,
    /// Values the invariant head pools.
    HeadReads,
    /// Block records of the plan.
    Blocks,
}

impl Unit {
    /// What is counted, for the list of `--work`.
    pub fn name(self) -> &'static str {
        match self {
            Unit::LinearMacs => "MACs of linear layers",
            Unit::LinearOutputs => "outputs of linear layers",
            Unit::Scores => "attention scores",
            Unit::ScoreMacs => "MACs of attention scores",
            Unit::ValueMacs => "MACs of attention value sums",
            Unit::AttentionOutputs => "outputs of set attention (before fc_o)",
            Unit::PoolReads => "source values read by the gathers",
            Unit::PooledValues => "values gathered (block inputs)",
            Unit::SetPoolReads => "values read by DeepSets reductions",
            Unit::StoredValues => "block outputs stored (not cell-wise)",
            Unit::ScatterAdds => "block outputs added into destinations",
            Unit::CellValues => "inputs of cell-wise blocks",
            Unit::DstValues => "destination values of DWS layers",
            Unit::AffineValues => "batch norm values",
            Unit::ReluValues => "ReLU values",
            Unit::InputValues => "input values quantized",
            Unit::HeadReads => "values pooled by the invariant head",
            Unit::Blocks => "blocks",
        }
    }

    /// What one unit is called in the table.
    pub fn label(self) -> &'static str {
        match self {
            Unit::LinearMacs | Unit::ScoreMacs | Unit::ValueMacs => "MACs",
            Unit::LinearOutputs | Unit::AttentionOutputs => "outputs",
            Unit::Scores => "scores",
            Unit::PoolReads | Unit::SetPoolReads | Unit::HeadReads => "reads",
            Unit::PooledValues => "pooled values",
            Unit::StoredValues => "stored values",
            Unit::ScatterAdds => "adds",
            Unit::CellValues
            | Unit::DstValues
            | Unit::AffineValues
            | Unit::ReluValues
            | Unit::InputValues => "values",
            Unit::Blocks => "blocks",
        }
    }
}

/// Units of work per inference.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Work(pub BTreeMap<Unit, u64>);

impl Work {
    fn add(&mut self, u: Unit, n: usize) {
        *self.0.entry(u).or_default() += n as u64;
    }

    /// The count of `u` (0 if the plan has none).
    pub fn get(&self, u: Unit) -> u64 {
        self.0.get(&u).copied().unwrap_or(0)
    }

    fn mlp(&mut self, m: &Mlp, rows: usize) {
        self.add(Unit::LinearMacs, mlp_macs(m, rows) as usize);
        let outputs: usize = m.layers.iter().map(|l| rows * l.fout as usize).sum();
        self.add(Unit::LinearOutputs, outputs);
    }

    /// A set layer over `n` rows of width `k`.
    fn set(&mut self, s: &SetLayer, n: usize, k: usize) {
        match s {
            SetLayer::DeepSets {
                gamma,
                lambda,
                pooling,
            } => {
                self.mlp(gamma, n);
                self.mlp(lambda, 1);
                match pooling {
                    SetPooling::Reduce(_) => self.add(Unit::SetPoolReads, n * k),
                    SetPooling::Attention { .. } => {
                        self.add(Unit::Scores, n);
                        self.add(Unit::ScoreMacs, n * k);
                        self.add(Unit::ValueMacs, n * k);
                    }
                }
            }
            SetLayer::Attention {
                heads,
                fc_q,
                fc_k,
                fc_v,
                fc_o,
            } => {
                for l in [fc_q, fc_k, fc_v, fc_o] {
                    self.add(Unit::LinearMacs, n * l.fin as usize * l.fout as usize);
                    self.add(Unit::LinearOutputs, n * l.fout as usize);
                }
                let dv = fc_o.fout as usize;
                self.add(Unit::Scores, *heads as usize * n * n);
                self.add(Unit::ScoreMacs, n * n * dv);
                self.add(Unit::ValueMacs, n * n * dv);
                self.add(Unit::AttentionOutputs, n * dv);
            }
        }
    }
}

/// The work of one inference of `model` (an int8 or f32 plan: the same work).
pub fn count(model: &Model<'_>) -> Result<Work, Error> {
    let shape = model.shape();
    let cells = shape.total_cells();
    let mut w = Work::default();
    let mut feats = model.spec().input_features as usize;
    w.add(Unit::InputValues, cells * feats);
    // The layer being walked: its inner grid, widths and last destination.
    let mut layer: Option<(Shape, usize, usize, Option<u8>)> = None;
    for op in model.ops() {
        match op? {
            Op::Dws(l) => {
                let (fin, fout) = (l.fin as usize, l.fout as usize);
                let mut inner = shape;
                if let Some(r) = &l.resample {
                    let (d0, d1, ds) = (shape.dim(0), shape.dim(1), r.rows as usize);
                    w.mlp(&r.skip, d0 * d1);
                    // Per feature: a set over the d1 columns of W_0, rows of d0
                    // (down) or ds (up) values.
                    for _ in 0..fin {
                        w.set(&r.down, d1, d0);
                    }
                    for _ in 0..fout {
                        w.set(&r.up, d1, ds);
                    }
                    inner = shape.with_w0_rows(ds);
                }
                layer = Some((inner, fin, fout, None));
                feats = fout;
            }
            Op::Block(b) => {
                let Some((inner, fin, fout, last_dst)) = &mut layer else {
                    return Err(Error::InvalidPlan("block outside a DWS layer"));
                };
                let d = block_dims(&b, inner, *fin, *fout)?;
                w.add(Unit::Blocks, 1);
                let dst_values = inner.cells(b.dst as usize) * *fout;
                if *last_dst != Some(b.dst) {
                    w.add(Unit::DstValues, dst_values);
                    *last_dst = Some(b.dst);
                }
                w.add(Unit::ScatterAdds, dst_values);
                block(&mut w, &b.map, b.set_axis, b.pool.rows, b.pool.cols, &d);
            }
            Op::Affine { .. } => w.add(Unit::AffineValues, cells * feats),
            Op::Relu => w.add(Unit::ReluValues, cells * feats),
            Op::InputSkip(l) => {
                w.add(Unit::LinearMacs, cells * l.fin as usize * l.fout as usize);
                w.add(Unit::LinearOutputs, cells * l.fout as usize);
            }
            Op::Head(h) => {
                w.add(Unit::HeadReads, cells * feats);
                w.mlp(&h.mlp, 1);
            }
            Op::Normalize { .. } | Op::Quant(_) => {}
        }
    }
    Ok(w)
}

/// One block: its gather (or, cell-wise, the requantized entries), its map
/// and, unless cell-wise, its stored outputs.
fn block(w: &mut Work, map: &Map, set_axis: SetAxis, pool_rows: bool, pool_cols: bool, d: &Dims) {
    let gathered = d.n * d.k;
    // As the int8 executor does: a cell-wise block (one row per grid entry)
    // maps the entries of a destination row as they are needed.
    if set_axis == SetAxis::Cells {
        w.add(Unit::CellValues, gathered);
    } else {
        let span = |pooled: bool, size: usize| if pooled { size } else { 1 };
        w.add(Unit::PooledValues, gathered);
        w.add(
            Unit::PoolReads,
            gathered * span(pool_rows, d.src.0) * span(pool_cols, d.src.1),
        );
        w.add(Unit::StoredValues, d.n * d.kout);
    }
    match map {
        Map::Mlp(m) => w.mlp(m, d.n),
        Map::Set(s) => w.set(s, d.n, d.k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dws_embedded::dws_core::plan::Reduction;
    use dws_embedded::dws_core::quant::Requant;
    use dws_embedded::dws_core::quantized::{AttentionQ, Kernels, Portable};
    use std::ops::Range;
    use std::path::PathBuf;

    /// The portable kernels, counting the work they are handed.
    #[derive(Default)]
    struct Counting(Work);

    impl Kernels<i8> for Counting {
        fn linear(
            &mut self,
            w: &[i8],
            b: Option<&[i32]>,
            fin: usize,
            fout: usize,
            x: &[i8],
            rows: usize,
            out: impl FnMut(usize, usize, i32),
        ) {
            self.0.add(Unit::LinearMacs, rows * fin * fout);
            Portable.linear(w, b, fin, fout, x, rows, out)
        }

        fn attention(
            &mut self,
            qm: &mut [i8],
            km: &[i8],
            vm: &[i8],
            dv: usize,
            heads: usize,
            r: AttentionQ,
            scores: &mut [i32],
            p: &mut [u32],
            av: &mut [i32],
        ) {
            let (m, n) = (qm.len() / dv.max(1), scores.len());
            self.0.add(Unit::Scores, m * n * heads);
            self.0.add(Unit::ScoreMacs, m * n * dv);
            self.0.add(Unit::ValueMacs, m * n * dv);
            self.0.add(Unit::AttentionOutputs, m * dv);
            Portable.attention(qm, km, vm, dv, heads, r, scores, p, av)
        }

        fn add_requant(
            &mut self,
            acc: &mut [i32],
            y: &[i8],
            width: usize,
            step: usize,
            r: Requant,
        ) {
            self.0.add(Unit::ScatterAdds, acc.len());
            Portable.add_requant(acc, y, width, step, r)
        }

        fn requant(&mut self, acc: &[i32], r: Requant, out: &mut [i8]) {
            self.0.add(Unit::DstValues, acc.len().min(out.len()));
            Kernels::<i8>::requant(&mut Portable, acc, r, out)
        }

        fn requant_act(&mut self, x: &[i8], r: Requant, out: &mut [i8]) {
            self.0.add(Unit::CellValues, x.len().min(out.len()));
            Portable.requant_act(x, r, out)
        }

        fn pool(
            &mut self,
            red: Reduction,
            src: &[i8],
            cols: usize,
            rows: Range<usize>,
            cs: Range<usize>,
            r: Requant,
            out: &mut [i8],
        ) {
            self.0.add(Unit::PooledValues, out.len());
            self.0
                .add(Unit::PoolReads, rows.len() * cs.len() * out.len());
            Portable.pool(red, src, cols, rows, cs, r, out)
        }

        fn affine(&mut self, x: &mut [i8], mult: &[i32], off: &[i32], shift: u8) {
            self.0.add(Unit::AffineValues, x.len());
            Portable.affine(x, mult, off, shift)
        }
    }

    fn fixtures() -> Vec<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut blobs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path().join("model.int8.dws"))
            .filter(|p| p.is_file())
            .collect();
        blobs.sort();
        assert!(blobs.len() >= 20, "fixtures not found");
        blobs
    }

    /// Whether the plan pools a set with attention (DeepSets or resampling):
    /// those scores are `dot_acc` calls, which no kernel method sees.
    fn pools_with_attention(m: &Model<'_>) -> bool {
        let attn = |s: &SetLayer| {
            matches!(
                s,
                SetLayer::DeepSets {
                    pooling: SetPooling::Attention { .. },
                    ..
                }
            )
        };
        m.ops().any(|op| match op.unwrap() {
            Op::Dws(l) => l.resample.is_some(),
            Op::Block(b) => matches!(&b.map, Map::Set(s) if attn(s)),
            _ => false,
        })
    }

    /// The units that go through a kernel method are exactly what the core's
    /// executor hands its kernels; all the MACs are the core's own count.
    #[test]
    fn work_matches_the_kernels_and_the_core_on_every_fixture() {
        for path in fixtures() {
            let (words, len) = crate::read_aligned(&path).unwrap();
            let m = Model::new_checked(&bytemuck::cast_slice(&words)[..len]).unwrap();
            let work = count(&m).unwrap();
            let mut k = Counting::default();
            let input = vec![0.5f32; m.input_len()];
            let mut scratch = vec![0f32; m.scratch_len()];
            let mut out = vec![0f32; m.output_len()];
            m.run_quantized_with::<i8>(&mut k, &input, &mut scratch, &mut out)
                .unwrap();
            let name = path.display();
            for u in [
                Unit::ScatterAdds,
                Unit::DstValues,
                Unit::CellValues,
                Unit::PooledValues,
                Unit::PoolReads,
                Unit::AffineValues,
                Unit::AttentionOutputs,
            ] {
                assert_eq!(work.get(u), k.0.get(u), "{name}: {u:?}");
            }
            assert!(
                work.get(Unit::LinearMacs) >= k.0.get(Unit::LinearMacs),
                "{name}"
            );
            if !pools_with_attention(&m) {
                for u in [Unit::Scores, Unit::ScoreMacs, Unit::ValueMacs] {
                    assert_eq!(work.get(u), k.0.get(u), "{name}: {u:?}");
                }
                let macs = work.get(Unit::LinearMacs)
                    + work.get(Unit::ScoreMacs)
                    + work.get(Unit::ValueMacs);
                assert_eq!(macs, m.layout().macs, "{name}: MACs");
            }
        }
    }
}
