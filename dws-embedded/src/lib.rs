//! `dws-embedded`: DWSNets on microcontrollers.
//!
//! [`dws_core`] runs a model without a heap; this crate plugs it into the
//! embedded ecosystem:
//!
//! * [`Runner`] reads one weight space (f32 little-endian) from any
//!   [`embedded_io::Read`] (a UART, SPI flash) or from a byte slice in flash,
//!   runs the model, and writes the result to any [`embedded_io::Write`].
//! * An optional [`embedded_hal::digital::OutputPin`] goes high for exactly the
//!   duration of each inference, to time it with a logic analyser on a real
//!   board ([`NoPin`] when there is none).
//! * [`Arena`] holds every buffer an inference needs, sized by const generics;
//!   a build script fills them in from the model blob itself with
//!   [`Sizes::of_blob`] (and the helpers of the `build` module, feature `std`), so the arena is
//!   exactly large enough and "scratch too small" cannot happen at run time.
//! * [`protocol`] serves a model over a UART: framed requests and replies
//!   with checksums, a hello that names the blob, error replies for anything
//!   damaged or refused; the same encoder and decoder serve the host
//!   (`dws serial`).
//! * [`check_case`] runs a reference case (`dws_core::case::CaseRepr`) with the
//!   suite's tolerance, for self-tests on the target.
//! * With the `defmt` feature every error and result is `defmt::Format`.
//!
//! ```no_run
//! # fn demo(blob: &'static [u8], uart: &mut impl embedded_io::Read, out: &mut impl embedded_io::Write)
//! # -> Result<(), dws_embedded::Error> {
//! use dws_embedded::Arena;
//! // In firmware: a `static mut` in `#[entry]`, sizes from the build script.
//! let mut arena: Arena<64, 4096, 10> = Arena::new();
//! let mut runner = arena.open(blob)?;
//! let outcome = runner.serve(uart, out)?; // read input, run, write the output
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! The runner only needs the [`Infer`] trait: `dws_core::Model` implements it,
//! and any other model type with the same `run(input, scratch, output)`
//! contract (an int8 model) can, with no change here.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "std", test))]
extern crate std;

mod arena;
#[cfg(any(feature = "std", test))]
pub mod build;
mod case;
mod error;
mod infer;
pub mod io;
pub mod protocol;
mod runner;
#[cfg(test)]
mod tests;

pub use arena::{Arena, Sizes};
pub use case::{check_case, CaseReport, Failure};
pub use dws_core;
pub use error::Error;
pub use infer::Infer;
pub use runner::{NoPin, Outcome, Runner};
