//! Permutations of an input network's hidden neurons, applied to flat weight spaces.
//!
//! Relabeling hidden neurons does not change the function an MLP computes, so a
//! DWSNet classifier must return the same logits and a `DWSModel` must return
//! the same weight space, relabeled the same way.

/// One permutation per layer `0..=L`; layers 0 and L (input and output) are the identity.
#[derive(Debug, Clone)]
pub struct HiddenPermutation {
    perms: Vec<Vec<usize>>,
}

/// A small deterministic generator (SplitMix64) so the suite needs no RNG crate.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl HiddenPermutation {
    /// Random permutations of every hidden layer of an input network with dims `d_0..d_L`.
    pub fn random(dims: &[u32], rng: &mut SplitMix) -> Self {
        let l = dims.len() - 1;
        let perms = (0..=l)
            .map(|k| {
                let mut p: Vec<usize> = (0..dims[k] as usize).collect();
                if k != 0 && k != l {
                    for i in (1..p.len()).rev() {
                        p.swap(i, rng.below(i + 1));
                    }
                }
                p
            })
            .collect();
        HiddenPermutation { perms }
    }

    /// Applies the permutation to one flat weight space with `f` features per entry:
    /// new `W_i[r, c] = W_i[p_i(r), p_{i+1}(c)]`, new `b_i[c] = b_i[p_{i+1}(c)]`.
    pub fn apply(&self, x: &[f32], f: usize) -> Vec<f32> {
        let p = &self.perms;
        let l = p.len() - 1;
        let mut out = Vec::with_capacity(x.len());
        let mut at = 0;
        for i in 0..l {
            let (rows, cols) = (p[i].len(), p[i + 1].len());
            for r in 0..rows {
                for c in 0..cols {
                    let src = at + (p[i][r] * cols + p[i + 1][c]) * f;
                    out.extend_from_slice(&x[src..src + f]);
                }
            }
            at += rows * cols * f;
        }
        for i in 0..l {
            for &pc in &p[i + 1] {
                let src = at + pc * f;
                out.extend_from_slice(&x[src..src + f]);
            }
            at += p[i + 1].len() * f;
        }
        out
    }
}
