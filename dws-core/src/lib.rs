//! `dws-core`: inference for Deep Weight Space Networks (DWSNets) with no heap.
//!
//! A DWSNet (Navon et al., ICML 2023) takes the weights and biases of another MLP
//! as its input and is equivariant to permutations of that MLP's hidden neurons.
//! This crate runs a trained upstream model (`DWSModel` or
//! `DWSModelForClassification` of `AvivNavon/DWSNets`, in eval mode) that the
//! `dws` tool converted into a *blob*:
//!
//! ```no_run
//! # fn demo(blob: &[u8], input: &[f32]) -> Result<(), dws_core::Error> {
//! let model = dws_core::Model::new_checked(blob)?; // validates everything once
//! let mut scratch = [0f32; 4096];                  // model.scratch_len() elements
//! let mut logits = [0f32; 10];                     // model.output_len() elements
//! let out = model.run(input, &mut scratch[..model.scratch_len()], &mut logits)?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! * [`blob`]: the container (header, checksum, sections).
//! * [`plan`]: what the model computes, as data shared by every backend.
//! * [`Model`]: validation and the f32 forward pass.
//! * [`quantized`]: the int8 and 16x8 forward passes; their hot loops are a
//!   [`quantized::Kernels`] implementation that a host may replace
//!   ([`Model::run_quantized_with`]) with one giving the same bits.
//!
//! The core never allocates and never panics on any blob or input: every check
//! happens in [`Model::new_checked`] and at the start of [`Model::run`].
#![cfg_attr(not(test), no_std)]
// Denied, not forbidden: the one exception is the `asm!` of the Armv7E-M DSP
// dot products (`quantized::dot::dsp`, feature `dsp`), allowed there alone.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("dws-core reads little-endian parameters in place and needs a little-endian target");

pub mod blob;
pub mod case;
mod crc;
mod error;
pub mod kernels;
mod model;
pub mod observe;
pub mod plan;
pub mod quant;
pub mod quantized;
mod shape;
pub mod validate;

pub use crc::{crc32, Crc32};
pub use error::Error;
pub use model::Model;
pub use shape::Shape;
pub use validate::Layout;

use plan::Op;

/// The plan's op records, decoded one at a time from the blob (no allocation).
#[derive(Debug, Clone)]
pub struct Ops<'a> {
    rest: &'a [u8],
    left: u32,
    version: u16,
}

impl<'a> Ops<'a> {
    /// `count` records starting at `bytes`, written in blob format `version`
    /// (records of older versions are turned into the current ones).
    pub fn new(bytes: &'a [u8], count: u32, version: u16) -> Self {
        Ops {
            rest: bytes,
            left: count,
            version,
        }
    }

    /// Decodes every remaining record and returns the bytes after them.
    pub fn rest_after_all(mut self) -> Result<&'a [u8], Error> {
        for op in self.by_ref() {
            op?;
        }
        Ok(self.rest)
    }
}

impl<'a> Ops<'a> {
    /// The next record as a `T`, if its encoding starts with `tag` (the
    /// variant indices of the enums that wrap a `T` in an [`Op`]); `None`
    /// (and nothing consumed) otherwise. Decodes a large record without
    /// moving it through the size of an `Op`.
    pub(crate) fn next_tagged<T: serde::Deserialize<'a>>(
        &mut self,
        tag: &[u8],
    ) -> Option<Result<T, Error>> {
        if self.left == 0 || self.version != blob::FORMAT_VERSION || !self.rest.starts_with(tag) {
            return None;
        }
        Some(self.decode(tag.len()))
    }

    /// Decodes a `T` from the bytes after the next `skip` and counts the
    /// record; on an error, ends the iteration.
    fn decode<T: serde::Deserialize<'a>>(&mut self, skip: usize) -> Result<T, Error> {
        match postcard::take_from_bytes::<T>(&self.rest[skip..]) {
            Ok((v, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Ok(v)
            }
            Err(_) => {
                self.left = 0;
                Err(Error::Decode)
            }
        }
    }
}

impl Iterator for Ops<'_> {
    type Item = Result<Op, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        #[cfg(feature = "format-1")]
        if self.version == 1 {
            return Some(self.decode::<quant::v1::Op>(0).map(Op::from));
        }
        Some(self.decode(0))
    }
}
