//! Reference cases: inputs and expected outputs in a form any backend can read
//! without a heap (firmware, C through the C ABI, GPU tests).
//!
//! A case file is one postcard-encoded [`CaseRepr`]; its arrays are little-endian
//! f32 bytes borrowed from the file, read with `from_le_bytes`, so no alignment
//! is needed.
//!
//! # Tolerance
//! For every output tensor (the logits, or each `weights.{i}` / `biases.{i}`)
//! a result passes when `max |actual - expected| <= RELATIVE_TOLERANCE * max |expected|`,
//! the maximum of `|expected|` taken over the tensor and the whole batch
//! ([`CaseRepr::scale`] stores it per tensor).

use crate::plan::MAX_TENSORS;
use crate::Error;
use serde::{Deserialize, Serialize};

/// The suite's f32 tolerance, relative to the largest expected magnitude of a tensor.
pub const RELATIVE_TOLERANCE: f32 = 1e-4;
/// Version of the case format.
pub const CASE_VERSION: u16 = 1;

/// One reference case: a batch of inputs and the outputs upstream produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CaseRepr<'a> {
    /// [`CASE_VERSION`].
    pub version: u16,
    /// The fixture's name.
    pub name: &'a str,
    /// Number of inputs.
    pub batch: u32,
    /// f32 elements of one input.
    pub input_len: u32,
    /// f32 elements of one output.
    pub output_len: u32,
    /// Elements of each output tensor within one output, in order.
    pub segments: heapless::Vec<u32, MAX_TENSORS>,
    /// Per output tensor: max |expected| over the batch (f32 LE).
    pub scale: &'a [u8],
    /// `batch * input_len` f32 LE.
    pub inputs: &'a [u8],
    /// `batch * output_len` f32 LE.
    pub expected: &'a [u8],
}

/// Where a result is outside the tolerance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    /// Output tensor index.
    pub tensor: usize,
    /// Element index within the output.
    pub index: usize,
    /// `|actual - expected|`.
    pub diff: f32,
    /// The allowed difference for that tensor.
    pub allowed: f32,
}

fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let b = &bytes[4 * i..4 * i + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl<'a> CaseRepr<'a> {
    /// Decodes and checks a case file.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        let (c, rest): (CaseRepr<'a>, _) =
            postcard::take_from_bytes(bytes).map_err(|_| Error::Decode)?;
        if c.version != CASE_VERSION {
            return Err(Error::UnsupportedVersion(c.version));
        }
        if !rest.is_empty() {
            return Err(Error::TrailingBytes);
        }
        // u128: `4 * batch * len` of two u32 overflows u64.
        let (b, i, o) = (c.batch as u128, c.input_len as u128, c.output_len as u128);
        let seg: u128 = c.segments.iter().map(|&s| s as u128).sum();
        if seg != o
            || c.scale.len() as u128 != 4 * c.segments.len() as u128
            || c.inputs.len() as u128 != 4 * b * i
            || c.expected.len() as u128 != 4 * b * o
        {
            return Err(Error::InvalidPlan("case arrays do not match their sizes"));
        }
        Ok(c)
    }

    /// Copies input `k` into the front of `out` and returns that part.
    pub fn input<'o>(&self, k: usize, out: &'o mut [f32]) -> Result<&'o mut [f32], Error> {
        let n = self.input_len as usize;
        if k >= self.batch as usize {
            return Err(Error::InvalidPlan("case input index out of range"));
        }
        let actual = out.len();
        let out = out.get_mut(..n).ok_or(Error::InputLength {
            expected: n,
            actual,
        })?;
        for (j, o) in out.iter_mut().enumerate() {
            *o = f32_at(self.inputs, k * n + j);
        }
        Ok(out)
    }

    /// Expected output element `j` of input `k` (`k < batch`, `j < output_len`).
    fn expected(&self, k: usize, j: usize) -> f32 {
        f32_at(self.expected, k * self.output_len as usize + j)
    }

    /// Expected output element `j` of input `k`, or NaN when out of range.
    pub fn expected_value(&self, k: usize, j: usize) -> f32 {
        if k < self.batch as usize && j < self.output_len as usize {
            self.expected(k, j)
        } else {
            f32::NAN
        }
    }

    /// Checks the output of input `k` against the tolerance; returns the worst
    /// relative error seen (diff / allowed) or the first mismatch.
    pub fn check(&self, k: usize, actual: &[f32]) -> Result<f32, Mismatch> {
        if k >= self.batch as usize || actual.len() < self.output_len as usize {
            return Err(Mismatch {
                tensor: 0,
                index: actual.len(),
                diff: f32::INFINITY,
                allowed: 0.0,
            });
        }
        let mut worst = 0f32;
        let mut at = 0usize;
        for (t, &len) in self.segments.iter().enumerate() {
            let allowed = RELATIVE_TOLERANCE * f32_at(self.scale, t);
            for (j, &a) in actual.iter().enumerate().skip(at).take(len as usize) {
                let diff = (a - self.expected(k, j)).abs();
                // Written so that a NaN difference fails too.
                if diff.partial_cmp(&allowed) != Some(core::cmp::Ordering::Less) && diff != allowed
                {
                    return Err(Mismatch {
                        tensor: t,
                        index: j,
                        diff,
                        allowed,
                    });
                }
                if allowed > 0.0 {
                    worst = worst.max(diff / allowed);
                }
            }
            at += len as usize;
        }
        Ok(worst)
    }
}
