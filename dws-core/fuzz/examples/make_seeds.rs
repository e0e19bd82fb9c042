//! Writes small, valid, random blobs as extra seeds for the `blob` target.
//!
//! `cargo run --release --example make_seeds -- <out-dir> [count]` (from `dws-core/fuzz`).
//! Every seed is `[flags byte] ++ blob` (see `fuzz_targets/blob.rs`); every blob written
//! here passes `Model::new_checked`. The plans are random but shape-consistent: they use
//! every op kind (normalize, DWS layers with and without down-sampling, blocks over
//! every axis combination the validator accepts, MLP / DeepSets / attention maps,
//! affine, ReLU, input skip, invariant head) over tiny input networks, so the
//! fuzzer starts from blobs a few hundred bytes long instead of the 20-140 KB fixtures.

use dws_core::plan::{
    Axis, Block, BlockKind, DwsLayer, Head, Linear, Map, Mlp, Op, Output, ParamRef, Pool,
    Reduction, Resample, SetAxis, SetLayer, SetPooling, Spec,
};
use dws_core::validate::{block_dims, check_spec, head_width};
use dws_core::{Model, Shape};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as u64) as u32
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn f(&mut self) -> f32 {
        (self.below(2001) as f32 - 1000.0) / 1000.0
    }
}

struct Gen {
    rng: Rng,
    params: Vec<f32>,
}

impl Gen {
    fn param(&mut self, len: usize) -> ParamRef {
        let offset = self.params.len() as u32;
        for _ in 0..len {
            let v = self.rng.f();
            self.params.push(v);
        }
        ParamRef {
            offset,
            len: len as u32,
        }
    }

    fn positive(&mut self, len: usize) -> ParamRef {
        let r = self.param(len);
        for v in &mut self.params[r.offset as usize..] {
            *v = v.abs() + 0.5;
        }
        r
    }

    fn linear(&mut self, fin: usize, fout: usize, bias: bool) -> Linear {
        Linear {
            fin: fin as u32,
            fout: fout as u32,
            weight: self.param(fin * fout),
            bias: bias.then(|| self.param(fout)),
        }
    }

    fn mlp(&mut self, fin: usize, fout: usize, bias: bool) -> Mlp {
        let mut layers = heapless::Vec::new();
        let n = self.rng.range(1, 2) as usize;
        let mut width = fin;
        for _ in 0..n {
            let l = self.linear(width, fout, bias);
            let _ = layers.push(l);
            width = fout;
        }
        Mlp { layers }
    }

    fn reduction(&mut self) -> Reduction {
        match self.rng.below(3) {
            0 => Reduction::Max,
            1 => Reduction::Mean,
            _ => Reduction::Sum,
        }
    }

    fn set_layer(&mut self, k: usize, kout: usize, attention_ok: bool) -> SetLayer {
        if attention_ok && self.rng.below(3) == 0 {
            let divisors: Vec<u32> = (1..=kout as u32).filter(|h| kout as u32 % h == 0).collect();
            let heads = divisors[self.rng.below(divisors.len() as u64) as usize];
            let bias = self.rng.coin();
            SetLayer::Attention {
                heads,
                fc_q: self.linear(k, kout, bias),
                fc_k: self.linear(k, kout, bias),
                fc_v: self.linear(k, kout, bias),
                fc_o: self.linear(kout, kout, bias),
            }
        } else {
            let pooling = if self.rng.coin() {
                SetPooling::Attention {
                    query: self.param(k),
                }
            } else {
                SetPooling::Reduce(self.reduction())
            };
            SetLayer::DeepSets {
                gamma: self.mlp(k, kout, true),
                lambda: self.mlp(k, kout, false),
                pooling,
            }
        }
    }

    fn axis(&mut self) -> Axis {
        match self.rng.below(3) {
            0 => Axis::None,
            1 => Axis::Rows,
            _ => Axis::Cols,
        }
    }

    fn set_axis(&mut self) -> SetAxis {
        match self.rng.below(4) {
            0 => SetAxis::None,
            1 => SetAxis::Rows,
            2 => SetAxis::Cols,
            _ => SetAxis::Cells,
        }
    }

    /// A random block that the validator's axis rules accept, with a map of the right widths.
    fn block(&mut self, shape: &Shape, fin: usize, fout: usize) -> Option<Block> {
        for _ in 0..200 {
            let t = shape.tensors() as u64;
            let mut b = Block {
                kind: BlockKind::W2wGeneralMatrixSet,
                src: self.rng.below(t) as u8,
                dst: self.rng.below(t) as u8,
                pool: Pool {
                    rows: self.rng.coin(),
                    cols: self.rng.coin(),
                },
                set_axis: self.set_axis(),
                fold: self.axis(),
                map: Map::Mlp(Mlp {
                    layers: heapless::Vec::new(),
                }),
                place: self.set_axis(),
                unfold: self.axis(),
                scale: 0.25 * self.rng.range(1, 4) as f32,
            };
            let Ok(d) = block_dims(&b, shape, fin, fout) else {
                continue;
            };
            b.map = if self.rng.coin() {
                let bias = self.rng.coin();
                Map::Mlp(self.mlp(d.k, d.kout, bias))
            } else {
                Map::Set(self.set_layer(d.k, d.kout, true))
            };
            return Some(b);
        }
        None
    }
}

fn inner_shape(dims: &[u32], f: u32, rows: u32) -> Shape {
    let mut d: heapless::Vec<u32, 17> = heapless::Vec::new();
    let _ = d.extend_from_slice(dims);
    d[0] = rows;
    let spec = Spec {
        dims: d,
        input_features: f,
        output: Output::WeightSpace { features: f },
        ops: 0,
    };
    check_spec(&spec).expect("small dims are valid")
}

fn plan(seed: u64) -> (Spec, Vec<Op>, Vec<f32>) {
    let mut g = Gen {
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        params: Vec::new(),
    };
    let l = g.rng.range(2, 4) as usize;
    let dims: Vec<u32> = (0..=l).map(|_| g.rng.range(1, 4)).collect();
    let f0 = g.rng.range(1, 2);
    let mut spec = Spec {
        dims: heapless::Vec::from_slice(&dims).expect("few dims"),
        input_features: f0,
        output: Output::WeightSpace { features: f0 },
        ops: 0,
    };
    let shape = check_spec(&spec).expect("small dims are valid");
    let input_len = shape.total_cells() * f0 as usize;
    let mut ops = Vec::new();
    if g.rng.below(4) == 0 {
        let mean = g.param(input_len);
        let std = g.positive(input_len);
        ops.push(Op::Normalize { mean, std });
    }
    let mut feats = f0 as usize;
    let layers = g.rng.range(1, 3);
    for _ in 0..layers {
        let fout = g.rng.range(1, 3) as usize;
        let resample = if g.rng.below(4) == 0 {
            let rows = g.rng.range(1, 3);
            let d0 = dims[0] as usize;
            Some(Resample {
                rows,
                down: g.set_layer(d0, rows as usize, false),
                up: g.set_layer(rows as usize, d0, false),
                skip: g.mlp(feats, fout, true),
            })
        } else {
            None
        };
        let inner = match &resample {
            Some(r) => inner_shape(&dims, f0, r.rows),
            None => shape,
        };
        let n = g.rng.range(1, 6);
        let mut blocks = Vec::new();
        for _ in 0..n {
            if let Some(b) = g.block(&inner, feats, fout) {
                blocks.push(b);
            }
        }
        let reduction = g.reduction();
        ops.push(Op::Dws(DwsLayer {
            fin: feats as u32,
            fout: fout as u32,
            reduction,
            blocks: blocks.len() as u32,
            resample,
        }));
        ops.extend(blocks.into_iter().map(Op::Block));
        feats = fout;
        if g.rng.below(3) == 0 {
            let n = shape.tensors() * feats;
            let scale = g.param(n);
            let shift = g.param(n);
            ops.push(Op::Affine { scale, shift });
        }
        if g.rng.coin() {
            ops.push(Op::Relu);
        }
        if g.rng.below(4) == 0 {
            let bias = g.rng.coin();
            ops.push(Op::InputSkip(g.linear(f0 as usize, feats, bias)));
        }
    }
    if g.rng.coin() {
        let classes = g.rng.range(1, 3) as usize;
        let width = head_width(&shape, feats);
        let mlp = g.mlp(width, classes, true);
        let reduction = g.reduction();
        ops.push(Op::Head(Head { reduction, mlp }));
        spec.output = Output::Logits {
            classes: classes as u32,
        };
    } else {
        spec.output = Output::WeightSpace {
            features: feats as u32,
        };
    }
    spec.ops = ops.len() as u32;
    (spec, ops, g.params)
}

fn encode(spec: &Spec, ops: &[Op], params: &[f32]) -> Vec<u8> {
    let mut section = postcard::to_allocvec(spec).expect("encode spec");
    for op in ops {
        section.extend(postcard::to_allocvec(op).expect("encode op"));
    }
    let params: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = vec![0u8; dws_core::blob::blob_len(section.len(), params.len())];
    dws_core::blob::emit(dws_core::blob::Precision::F32, &section, &params, &mut out)
        .expect("emit");
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: make_seeds <out-dir> [count]"));
    let count: u64 = args.next().map_or(200, |c| c.parse().expect("count"));
    std::fs::create_dir_all(&dir).expect("create out dir");
    let (mut written, mut seed, mut largest) = (0, 0u64, 0);
    while written < count {
        seed += 1;
        let (spec, ops, params) = plan(seed);
        let blob = encode(&spec, &ops, &params);
        // Load from a 16-aligned buffer, as the fuzz target does.
        let mut words = vec![0u128; blob.len().div_ceil(16)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        bytes[..blob.len()].copy_from_slice(&blob);
        match Model::new_checked(&bytes[..blob.len()]) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("seed {seed}: generated an invalid plan ({e}), skipped");
                continue;
            }
        }
        let mut file = vec![0x01u8]; // flags: fix the CRC
        file.extend_from_slice(&blob);
        largest = largest.max(file.len());
        std::fs::write(dir.join(format!("gen-{seed:04}")), file).expect("write seed");
        written += 1;
    }
    eprintln!(
        "wrote {written} seeds to {} (largest {largest} bytes)",
        dir.display()
    );
}
