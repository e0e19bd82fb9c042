//! Each AVX2 kernel against the core's portable definition, bit for bit, on
//! random shapes and values (and the extremes: -128, the largest multipliers,
//! every shift). Skipped where the CPU lacks AVX2 and FMA.

use super::avx2::Avx2Q;
use dws_core::plan::Reduction;
use dws_core::quant::{Requant, Requants};
use dws_core::quantized::{AttentionQ, Kernels, Portable};

/// xorshift64*: reproducible values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// int8 values, one in eight at an extreme.
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| match self.below(8) {
                0 => [-128, -127, 127][self.below(3)],
                _ => self.next() as i8,
            })
            .collect()
    }
    fn requant(&mut self) -> Requant {
        let shift = 1 + self.below(62) as u8;
        let m = match self.below(4) {
            0 => i32::MAX,
            1 => 1 << self.below(31),
            _ => (self.next() >> 33) as i32,
        };
        Requant { m, shift }
    }
    /// One requantization for all outputs, or one mantissa per output with a
    /// common shift (`m` holds the mantissas).
    fn requants<'m>(&mut self, fout: usize, m: &'m mut Vec<i32>) -> Requants<'m> {
        let r = self.requant();
        if self.below(2) == 0 {
            return Requants::One(r);
        }
        *m = (0..fout).map(|_| self.requant().m).collect();
        Requants::Channel { m, shift: r.shift }
    }
}

fn kernels() -> Option<Avx2Q> {
    let k = Avx2Q::new();
    if k.is_none() {
        eprintln!("skipped: this CPU lacks AVX2 and FMA");
    }
    k
}

#[test]
fn linear_matches_the_core() {
    let Some(mut k) = kernels() else { return };
    let mut rng = Rng(0x5eed);
    for case in 0..400 {
        let (fin, fout, rows) = (rng.below(70), rng.below(40), rng.below(11));
        let w = rng.i8s(fin * fout);
        let mut x = rng.i8s(fin * rows);
        if case % 2 == 0 {
            // Non-negative rows (as after a ReLU) take the unsigned byte products.
            for v in &mut x {
                *v = if *v == -128 { 127 } else { v.abs() };
            }
        }
        let b: Vec<i32> = (0..fout)
            .map(|_| match rng.below(4) {
                0 => i32::MAX - rng.below(1000) as i32,
                _ => rng.next() as i32 >> rng.below(32),
            })
            .collect();
        let b = (case % 3 != 0).then_some(&b[..]);
        let (mut want, mut got) = (vec![0; rows * fout], vec![0; rows * fout]);
        Portable.linear(&w, b, fin, fout, &x, rows, |r, o, a| want[r * fout + o] = a);
        k.linear(&w, b, fin, fout, &x, rows, |r, o, a| got[r * fout + o] = a);
        assert_eq!(got, want, "fin {fin} fout {fout} rows {rows}");
        let mut ms = Vec::new();
        if fin == fout {
            let (r_o, r_fc) = (rng.requant(), rng.requants(fout, &mut ms));
            let (mut want, mut got) = (vec![0; rows * fout], vec![0; rows * fout]);
            Portable.fc_o_residual(&w, b, fin, &x, rows, r_o, r_fc, &mut want);
            k.fc_o_residual(&w, b, fin, &x, rows, r_o, r_fc, &mut got);
            assert_eq!(got, want, "dim {fin} rows {rows} {r_o:?} {r_fc:?}");
        }
        let (r, lo) = (
            rng.requants(fout, &mut ms),
            [0, -127, -128, rng.next() as i8][case % 4],
        );
        let (mut want, mut got) = (vec![0; rows * fout], vec![0; rows * fout]);
        Portable.linear_q(&w, b, fin, fout, &x, rows, r, lo, &mut want);
        k.linear_q(&w, b, fin, fout, &x, rows, r, lo, &mut got);
        assert_eq!(got, want, "fin {fin} fout {fout} rows {rows} {r:?} lo {lo}");
    }
}

/// 16x8 linears: int16 rows (with the extremes) against int8 weights, up to
/// the 512 inputs the int32 lanes take exactly, and past them (the portable
/// fallback), with int64 biases.
#[test]
fn int16_linear_matches_the_core() {
    let Some(mut k) = kernels() else { return };
    let mut rng = Rng(0x16);
    for case in 0..300 {
        let fin = [rng.below(70), 512, 513 + rng.below(40)][case % 3];
        let (fout, rows) = (rng.below(40), rng.below(6));
        let w = rng.i8s(fin * fout);
        let x: Vec<i16> = (0..fin * rows)
            .map(|_| match rng.below(4) {
                0 => [-32767, 32767, -32768][rng.below(3)],
                _ => rng.next() as i16,
            })
            .collect();
        let b: Vec<i64> = (0..fout)
            .map(|_| (rng.next() as i64) >> (20 + rng.below(40)))
            .collect();
        let b = (case % 4 != 0).then_some(&b[..]);
        let (mut want, mut got) = (vec![0i64; rows * fout], vec![0i64; rows * fout]);
        Portable.linear(&w, b, fin, fout, &x, rows, |r, o, a| want[r * fout + o] = a);
        k.linear(&w, b, fin, fout, &x, rows, |r, o, a| got[r * fout + o] = a);
        assert_eq!(got, want, "fin {fin} fout {fout} rows {rows}");
        let mut ms = Vec::new();
        let r = rng.requants(fout, &mut ms);
        let (mut want, mut got) = (vec![0i16; rows * fout], vec![0i16; rows * fout]);
        Portable.linear_q(&w, b, fin, fout, &x, rows, r, 0, &mut want);
        k.linear_q(&w, b, fin, fout, &x, rows, r, 0, &mut got);
        assert_eq!(got, want, "fin {fin} fout {fout} rows {rows} {r:?}");
    }
}

#[test]
fn add_requant_requants_and_pool_match_the_core() {
    let Some(mut k) = kernels() else { return };
    let mut rng = Rng(42);
    for case in 0..2000 {
        let (width, rows) = (rng.below(40), rng.below(5));
        let step = [0, width, width + rng.below(9)][case % 3];
        let r = rng.requant();
        let y = rng.i8s((rows.max(1) - 1) * step + width);
        let acc: Vec<i32> = (0..rows * width).map(|_| rng.next() as i32).collect();
        let (mut want, mut got) = (acc.clone(), acc.clone());
        Portable.add_requant(&mut want, &y, width, step, r);
        k.add_requant(&mut got, &y, width, step, r);
        assert_eq!(got, want, "width {width} step {step} rows {rows} {r:?}");

        let (mut want, mut got) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
        Portable.requant(&acc, r, &mut want);
        k.requant(&acc, r, &mut got);
        assert_eq!(got, want, "{r:?}");
        let (mut want, mut got) = (vec![0; y.len()], vec![0; y.len()]);
        Portable.requant_act(&y, r, &mut want);
        k.requant_act(&y, r, &mut got);
        assert_eq!(got, want, "{r:?}");

        let (f, nr, nc) = (rng.below(40), 1 + rng.below(6), 1 + rng.below(6));
        let src = rng.i8s(nr * nc * f);
        let (r0, c0) = (rng.below(nr), rng.below(nc));
        let (r1, c1) = (r0 + rng.below(nr - r0 + 1), c0 + rng.below(nc - c0 + 1));
        let red = [Reduction::Max, Reduction::Sum, Reduction::Mean][case % 3];
        let (mut want, mut got) = (vec![0; f], vec![0; f]);
        Portable.pool(red, &src, nc, r0..r1, c0..c1, r, &mut want);
        k.pool(red, &src, nc, r0..r1, c0..c1, r, &mut got);
        assert_eq!(
            got, want,
            "{red:?} f {f} rows {r0}..{r1} cols {c0}..{c1} {r:?}"
        );
    }
}

#[test]
fn affine_matches_the_core() {
    let Some(mut k) = kernels() else { return };
    let mut rng = Rng(99);
    for _ in 0..2000 {
        let (f, entries) = (1 + rng.below(40), rng.below(5));
        let x = rng.i8s(f * entries);
        let mult: Vec<i32> = (0..f).map(|_| rng.next() as i32 >> rng.below(32)).collect();
        let off: Vec<i32> = (0..f).map(|_| rng.next() as i32 >> rng.below(32)).collect();
        let shift = 1 + rng.below(62) as u8;
        let (mut want, mut got) = (x.clone(), x);
        Portable.affine(&mut want, &mult, &off, shift);
        k.affine(&mut got, &mult, &off, shift);
        assert_eq!(got, want, "f {f} shift {shift}");
    }
}

#[test]
fn attention_matches_the_core() {
    let Some(mut k) = kernels() else { return };
    let mut rng = Rng(7);
    for case in 0..900 {
        // Two cases in three have eight or sixteen heads of four or eight
        // channels (the heads-in-lanes kernel).
        let heads = [1 + rng.below(8), 8 * (1 + rng.below(2))][(case % 3).min(1)];
        let dv = heads * [1 + rng.below(11), 4, 8][case % 3];
        let n = rng.below(40);
        // All queries, some (a part of a split block), or more than keys.
        let m = [n, rng.below(n + 1), rng.below(8)][case / 3 % 3];
        let (q, km, vm) = (rng.i8s(m * dv), rng.i8s(n * dv), rng.i8s(n * dv));
        // Score multipliers that spread the exponent over its whole table, or
        // saturate it, or (outside what a blob can hold) are negative.
        let score = match rng.below(4) {
            0 => rng.requant(),
            1 => Requant {
                m: -(rng.next() as i32 & i32::MAX),
                shift: 1 + rng.below(62) as u8,
            },
            _ => Requant {
                m: (rng.next() >> 33) as i32,
                shift: 28 + rng.below(12) as u8,
            },
        };
        let r = AttentionQ {
            score,
            o_q: rng.requant(),
            o_av: rng.requant(),
        };
        let (mut s, mut e, mut av) = (vec![0; n], vec![0; n], vec![0; dv]);
        let (mut want, mut got) = (q.clone(), q);
        Portable.attention(&mut want, &km, &vm, dv, heads, r, &mut s, &mut e, &mut av);
        k.attention(&mut got, &km, &vm, dv, heads, r, &mut s, &mut e, &mut av);
        assert_eq!(got, want, "m {m} n {n} dv {dv} heads {heads} {r:?}");
    }
}

/// Shapes whose sizes overflow, with slices that cannot hold them: the kernels
/// must refuse them (the portable code's index checks panic), never read out
/// of bounds.
#[test]
fn overflowing_shapes_panic_instead_of_reading_out_of_bounds() {
    let Some(mut k) = kernels() else { return };
    let r = Requant {
        m: 1 << 30,
        shift: 31,
    };
    let mut y = [0i8; 16];
    let mut run = |f: &mut dyn FnMut(&mut Avx2Q)| {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut k)));
        assert!(caught.is_err(), "an impossible shape was accepted");
    };
    let one = Requants::One(r);
    run(&mut |k| k.linear(&[], None, 1 << 63, 2, &[0i8; 0], 2, |_, _, _| {}));
    run(&mut |k| k.linear_q(&[], None, 1 << 32, 1 << 32, &[], 1 << 32, one, -127, &mut y));
    run(&mut |k| k.fc_o_residual(&[], None, 1 << 32, &[], 1 << 32, r, one, &mut y));
    run(&mut |k| k.pool(Reduction::Sum, &[], 1 << 61, 0..1, 1000..1001, r, &mut y));
    run(&mut |k| k.add_requant(&mut [0; 16], &[0i8; 0], 8, usize::MAX, r));
}
