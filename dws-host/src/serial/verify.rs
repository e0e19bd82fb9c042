//! `dws serial --verify`: every output of the board against the host's own run
//! of the same blob. f32 blobs pass within the reference suite's tolerance
//! (`dws_core::case`: per output tensor, `1e-4 x` the largest `|output|` over
//! all inputs); quantized blobs (integer arithmetic) must give the same bits.

use crate::runner::{BatchRunner, EngineKind};
use crate::weight_space::tensor_shapes;
use anyhow::Result;
use dws_core::blob::Precision;
use dws_core::case::RELATIVE_TOLERANCE;
use dws_core::plan::Output;
use dws_core::Model;

/// Compares the board's outputs with the host's, input by input.
pub struct Verifier<'m, 'a> {
    engine: BatchRunner<'m, 'a>,
    threads: usize,
    exact: bool,
    /// Elements of each output tensor.
    segments: Vec<usize>,
    /// Per tensor: the largest |host output| so far.
    scale: Vec<f32>,
    /// Per input and tensor: the largest |board - host| (infinite for
    /// different bits in exact mode, or a NaN).
    diffs: Vec<f32>,
}

/// The verdict over every input checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Inputs whose output matched.
    pub passed: usize,
    /// Inputs whose output did not, by index (in the order they were checked).
    pub failed: Vec<usize>,
    /// Bit-identical required (a quantized blob) rather than the tolerance.
    pub exact: bool,
    /// f32: the largest difference as a fraction of its allowance.
    pub worst: f32,
}

impl<'m, 'a> Verifier<'m, 'a> {
    /// Runs `model` on this host with `engine` and `threads`.
    pub fn new(model: &'m Model<'a>, engine: EngineKind, threads: usize) -> Result<Self> {
        let segments = match model.spec().output {
            Output::Logits { classes } => vec![classes as usize],
            Output::WeightSpace { features } => tensor_shapes(model.dims(), features as usize)
                .into_iter()
                .map(|(_, shape)| shape.iter().product())
                .collect(),
        };
        Ok(Verifier {
            engine: BatchRunner::new(model, engine)?,
            threads,
            exact: model.precision() != Precision::F32,
            scale: vec![0.0; segments.len()],
            segments,
            diffs: Vec::new(),
        })
    }

    /// The host engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Runs `n` inputs on the host and records how far `board`'s outputs are from its.
    pub fn check(&mut self, inputs: &[f32], n: usize, board: &[f32]) -> Result<()> {
        let host = self.engine.run(inputs, n, self.threads)?;
        let olen: usize = self.segments.iter().sum();
        for (b, h) in board.chunks_exact(olen).zip(host.chunks_exact(olen)) {
            let mut at = 0;
            for (t, &len) in self.segments.iter().enumerate() {
                let (b, h) = (&b[at..at + len], &h[at..at + len]);
                at += len;
                let scale = h.iter().fold(self.scale[t], |m, v| m.max(v.abs()));
                self.scale[t] = scale;
                let diff = b.iter().zip(h).fold(0f32, |d, (x, y)| {
                    let e = if self.exact {
                        if x.to_bits() == y.to_bits() {
                            0.0
                        } else {
                            f32::INFINITY
                        }
                    } else {
                        (x - y).abs()
                    };
                    // NaN fails too.
                    if e.is_nan() {
                        f32::INFINITY
                    } else {
                        d.max(e)
                    }
                });
                self.diffs.push(diff);
            }
        }
        Ok(())
    }

    /// The verdict so far (the f32 tolerance scales with every input seen).
    pub fn verdict(&self) -> Verdict {
        let allowed: Vec<f32> = self
            .scale
            .iter()
            .map(|s| {
                if self.exact {
                    0.0
                } else {
                    RELATIVE_TOLERANCE * s
                }
            })
            .collect();
        let mut v = Verdict {
            passed: 0,
            failed: Vec::new(),
            exact: self.exact,
            worst: 0.0,
        };
        for (i, diffs) in self.diffs.chunks(self.segments.len().max(1)).enumerate() {
            let mut ok = true;
            for (&d, &a) in diffs.iter().zip(&allowed) {
                ok &= d <= a;
                if a > 0.0 {
                    v.worst = v.worst.max(d / a);
                }
            }
            if ok {
                v.passed += 1;
            } else {
                v.failed.push(i);
            }
        }
        v
    }
}

impl Verdict {
    /// One line on what was compared.
    pub fn rule(&self) -> String {
        if self.exact {
            "every output bit-identical to the host's".into()
        } else {
            format!(
                "every output tensor within {RELATIVE_TOLERANCE:e} x its largest |value| of the \
                 host's (worst: {:.3} of that)",
                self.worst
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob_io::AlignedBlob;
    use std::path::Path;

    fn blob(name: &str, file: &str) -> AlignedBlob {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        AlignedBlob::read(&dir.join(name).join(file)).unwrap()
    }

    fn check(v: &mut Verifier<'_, '_>, m: &Model<'_>, tweak: impl Fn(&mut [f32])) -> Verdict {
        let inputs: Vec<f32> = (0..2 * m.input_len())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut out = v.engine.run(&inputs, 2, 1).unwrap();
        tweak(&mut out);
        v.check(&inputs, 2, &out).unwrap();
        v.verdict()
    }

    #[test]
    fn quantized_outputs_must_be_identical() {
        let b = blob("dws_one_feature_layer", "model.int8.dws");
        let m = b.model().unwrap();
        let mut v = Verifier::new(&m, EngineKind::Core, 1).unwrap();
        assert_eq!(check(&mut v, &m, |_| {}).passed, 2);
        let last = m.output_len() - 1; // of the first of the two inputs
        let off = check(&mut v, &m, |o| {
            o[last] = f32::from_bits(o[last].to_bits() ^ 1)
        });
        assert_eq!((off.passed, &off.failed), (3, &vec![2]));
        assert!(off.exact && off.rule().contains("bit-identical"));
    }

    #[test]
    fn f32_outputs_pass_within_the_tolerance() {
        let b = blob("dws_one_feature_layer", "model.dws");
        let m = b.model().unwrap();
        let mut v = Verifier::new(&m, EngineKind::Fast, 1).unwrap();
        let first = v.segments[0];
        // Half the tolerance on the largest value of the first tensor.
        let ok = check(&mut v, &m, |o| {
            let k = (0..first).max_by(|&a, &b| o[a].abs().total_cmp(&o[b].abs()));
            o[k.unwrap()] *= 1.0 + 0.5 * RELATIVE_TOLERANCE;
        });
        assert_eq!((ok.passed, ok.exact), (2, false));
        assert!(ok.worst > 0.0 && ok.worst <= 1.0, "{}", ok.worst);
        let bad = check(&mut v, &m, |o| o[1] = f32::NAN);
        assert_eq!(bad.failed, vec![2]);
    }
}
