//! Buffers sized at compile time.

use crate::{Error, Infer, Runner};
use core::fmt;
use dws_core::Model;

/// The f32 elements one model needs per inference.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sizes {
    /// Elements of one input.
    pub input_len: usize,
    /// Elements of scratch.
    pub scratch_len: usize,
    /// Elements of one output.
    pub output_len: usize,
}

impl Sizes {
    /// What `model` needs.
    pub fn of<M: Infer + ?Sized>(model: &M) -> Self {
        Sizes {
            input_len: model.input_len(),
            scratch_len: model.scratch_len(),
            output_len: model.output_len(),
        }
    }

    /// What the model in `blob` needs, after validating the whole blob
    /// (run it in a build script to size an [`Arena`]; the blob must be 4-byte aligned).
    pub fn of_blob(blob: &[u8]) -> Result<Self, dws_core::Error> {
        Ok(Self::of(&Model::new_checked(blob)?))
    }

    /// The element-wise maximum: one arena for several models.
    pub const fn max(self, other: Sizes) -> Sizes {
        const fn m(a: usize, b: usize) -> usize {
            if a > b {
                a
            } else {
                b
            }
        }
        Sizes {
            input_len: m(self.input_len, other.input_len),
            scratch_len: m(self.scratch_len, other.scratch_len),
            output_len: m(self.output_len, other.output_len),
        }
    }

    /// Whether buffers of `self` are large enough for a model needing `need`.
    pub const fn holds(&self, need: &Sizes) -> bool {
        self.input_len >= need.input_len
            && self.scratch_len >= need.scratch_len
            && self.output_len >= need.output_len
    }

    /// RAM of the three buffers, in bytes.
    pub const fn ram_bytes(&self) -> usize {
        4 * (self.input_len + self.scratch_len + self.output_len)
    }

    /// Writes `pub const {prefix}INPUT_LEN: usize = ..;` and the same for
    /// `SCRATCH_LEN` and `OUTPUT_LEN`: Rust source for a build script's `OUT_DIR`.
    pub fn write_consts(&self, w: &mut impl fmt::Write, prefix: &str) -> fmt::Result {
        for (name, v) in [
            ("INPUT_LEN", self.input_len),
            ("SCRATCH_LEN", self.scratch_len),
            ("OUTPUT_LEN", self.output_len),
        ] {
            writeln!(w, "pub const {prefix}{name}: usize = {v};")?;
        }
        Ok(())
    }
}

/// Every buffer of an inference, sized by const generics: `I` input, `S`
/// scratch and `O` output elements.
///
/// Put it in a `static` (in `#[cortex_m_rt::entry]`, `static mut ARENA: .. =
/// Arena::new();` becomes a safe `&'static mut`), with sizes a build script
/// computed from the blob ([`Sizes::of_blob`]), and it lands in `.bss`: the
/// linker, not the run, says whether it fits.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Arena<const I: usize, const S: usize, const O: usize> {
    input: [f32; I],
    scratch: [f32; S],
    output: [f32; O],
}

impl<const I: usize, const S: usize, const O: usize> Default for Arena<I, S, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const I: usize, const S: usize, const O: usize> Arena<I, S, O> {
    /// What this arena holds.
    pub const SIZES: Sizes = Sizes {
        input_len: I,
        scratch_len: S,
        output_len: O,
    };

    /// A zeroed arena (usable in a `static` initializer).
    pub const fn new() -> Self {
        Arena {
            input: [0.0; I],
            scratch: [0.0; S],
            output: [0.0; O],
        }
    }

    /// A runner for `model` over this arena (fails only if the arena is too
    /// small for it, which sizes from the build script rule out).
    pub fn runner<M: Infer>(&mut self, model: M) -> Result<Runner<'_, M>, Error> {
        Runner::new(model, &mut self.input, &mut self.scratch, &mut self.output)
    }

    /// Opens `blob` ([`Model::new_checked`]) and binds it to this arena.
    pub fn open<'b>(&mut self, blob: &'b [u8]) -> Result<Runner<'_, Model<'b>>, Error> {
        let model = Model::new_checked(blob)?;
        self.runner(model)
    }
}
