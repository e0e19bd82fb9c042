//! One model, its buffers and an optional timing pin.

use crate::io::{f32_from_le_bytes, read_f32_le, write_f32_le};
use crate::{Error, Infer};
use core::convert::Infallible;
use embedded_hal::digital::{Error as _, ErrorType, OutputPin};
use embedded_io::{Read, Write};

/// The timing pin of a runner without one: does nothing, never fails.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoPin;

impl ErrorType for NoPin {
    type Error = Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// What one inference produced, in short (the values are in [`Runner::output`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Outcome {
    /// f32 values written.
    pub outputs: u32,
    /// Index of the largest output (the class, for a classifier's logits).
    pub argmax: u32,
    /// The largest output.
    pub max: f32,
}

impl Outcome {
    fn of(out: &[f32]) -> Self {
        let (mut argmax, mut max) = (0usize, f32::NEG_INFINITY);
        for (i, &v) in out.iter().enumerate() {
            if v > max {
                (argmax, max) = (i, v);
            }
        }
        Outcome {
            outputs: out.len() as u32,
            argmax: argmax as u32,
            max,
        }
    }
}

/// A model with its input, scratch and output buffers (usually from an
/// [`crate::Arena`]) and a pin that is high while it computes.
///
/// The buffers are checked against the model once, in [`Runner::new`]; every
/// run after that uses exactly `input_len`, `scratch_len` and `output_len`
/// elements of them.
#[derive(Debug)]
pub struct Runner<'a, M, P = NoPin> {
    model: M,
    input: &'a mut [f32],
    scratch: &'a mut [f32],
    output: &'a mut [f32],
    pin: P,
}

impl<'a, M: Infer> Runner<'a, M> {
    /// Binds `model` to its buffers; each must hold at least what the model needs
    /// ([`dws_core::Error::InputLength`], [`dws_core::Error::ScratchTooSmall`],
    /// [`dws_core::Error::OutputLength`] otherwise).
    pub fn new(
        model: M,
        input: &'a mut [f32],
        scratch: &'a mut [f32],
        output: &'a mut [f32],
    ) -> Result<Self, Error> {
        use dws_core::Error as E;
        if input.len() < model.input_len() {
            return Err(E::InputLength {
                expected: model.input_len(),
                actual: input.len(),
            }
            .into());
        }
        if scratch.len() < model.scratch_len() {
            return Err(E::ScratchTooSmall {
                expected: model.scratch_len(),
                actual: scratch.len(),
            }
            .into());
        }
        if output.len() < model.output_len() {
            return Err(E::OutputLength {
                expected: model.output_len(),
                actual: output.len(),
            }
            .into());
        }
        let (i, s, o) = (model.input_len(), model.scratch_len(), model.output_len());
        Ok(Runner {
            model,
            input: &mut input[..i],
            scratch: &mut scratch[..s],
            output: &mut output[..o],
            pin: NoPin,
        })
    }
}

impl<'a, M: Infer, P: OutputPin> Runner<'a, M, P> {
    /// The same runner with `pin` driven high during every inference and low after it.
    pub fn with_pin<Q: OutputPin>(self, pin: Q) -> Runner<'a, M, Q> {
        Runner {
            model: self.model,
            input: self.input,
            scratch: self.scratch,
            output: self.output,
            pin,
        }
    }

    /// Gives the pin back.
    pub fn into_pin(self) -> P {
        self.pin
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The input buffer (`input_len` values): fill it, then [`Runner::run_loaded`].
    pub fn input_mut(&mut self) -> &mut [f32] {
        self.input
    }

    /// The output of the last successful run (`output_len` values).
    pub fn output(&self) -> &[f32] {
        self.output
    }

    /// Runs the input buffer as it is.
    pub fn run_loaded(&mut self) -> Result<Outcome, Error> {
        self.pin.set_high().map_err(|e| Error::Pin(e.kind()))?;
        let res = self
            .model
            .infer(self.input, self.scratch, self.output)
            .map(Outcome::of);
        // Low again whatever the model said; its error comes first.
        let low = self.pin.set_low().map_err(|e| Error::Pin(e.kind()));
        let outcome = res?;
        low?;
        Ok(outcome)
    }

    /// Copies `input` into the input buffer and runs it.
    pub fn run(&mut self, input: &[f32]) -> Result<Outcome, Error> {
        if input.len() != self.input.len() {
            return Err(dws_core::Error::InputLength {
                expected: self.input.len(),
                actual: input.len(),
            }
            .into());
        }
        self.input.copy_from_slice(input);
        self.run_loaded()
    }

    /// Runs a weight space stored as f32 LE bytes (e.g. a slice in flash, any alignment).
    pub fn run_le_bytes(&mut self, bytes: &[u8]) -> Result<Outcome, Error> {
        f32_from_le_bytes(bytes, self.input)?;
        self.run_loaded()
    }

    /// Reads one weight space (`4 * input_len` bytes, f32 LE) from `reader` and runs it.
    pub fn run_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> Result<Outcome, Error> {
        read_f32_le(reader, self.input)?;
        self.run_loaded()
    }

    /// Writes the last output (`4 * output_len` bytes, f32 LE) to `writer` and flushes it.
    pub fn write_output<W: Write + ?Sized>(&self, writer: &mut W) -> Result<(), Error> {
        write_f32_le(writer, self.output)
    }

    /// One request: reads a weight space from `reader`, runs it, writes the output to `writer`.
    pub fn serve<R: Read + ?Sized, W: Write + ?Sized>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<Outcome, Error> {
        let outcome = self.run_from(reader)?;
        self.write_output(writer)?;
        Ok(outcome)
    }
}
