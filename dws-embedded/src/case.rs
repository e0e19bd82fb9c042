//! Reference cases on the target.

use crate::{Error, Infer, Runner};
use core::fmt;
use dws_core::case::CaseRepr;
use embedded_hal::digital::OutputPin;

/// A case that passed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CaseReport {
    /// Inputs run.
    pub inputs: u32,
    /// The worst error seen, as a fraction of the suite's tolerance (`<= 1`).
    pub worst: f32,
}

/// Why a case failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Failure {
    /// The case does not belong to the model (input or output length), or
    /// one of its inputs could not be decoded.
    Case(Error),
    /// The model refused an input.
    Run {
        /// Input index within the case.
        input: u32,
        /// What went wrong.
        error: Error,
    },
    /// An output is outside the suite's tolerance.
    Mismatch {
        /// Input index within the case.
        input: u32,
        /// Output tensor.
        tensor: u32,
        /// Element within the output.
        index: u32,
        /// `|actual - expected|`.
        diff: f32,
        /// The allowed difference.
        allowed: f32,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Case(e) => write!(f, "case does not fit the model: {e}"),
            Failure::Run { input, error } => write!(f, "input {input}: {error}"),
            Failure::Mismatch {
                input,
                tensor,
                index,
                diff,
                allowed,
            } => write!(
                f,
                "input {input}, output tensor {tensor}, element {index}: |diff| {diff:e} > allowed {allowed:e}"
            ),
        }
    }
}

/// Runs every input of `case` and checks each output with
/// [`CaseRepr::check`] (the reference suite's tolerance).
pub fn check_case<M: Infer, P: OutputPin>(
    runner: &mut Runner<'_, M, P>,
    case: &CaseRepr<'_>,
) -> Result<CaseReport, Failure> {
    let model = runner.model();
    let (inputs, outputs) = (model.input_len(), model.output_len());
    if case.input_len as usize != inputs {
        return Err(Failure::Case(
            dws_core::Error::InputLength {
                expected: inputs,
                actual: case.input_len as usize,
            }
            .into(),
        ));
    }
    if case.output_len as usize != outputs {
        return Err(Failure::Case(
            dws_core::Error::OutputLength {
                expected: outputs,
                actual: case.output_len as usize,
            }
            .into(),
        ));
    }
    let mut worst = 0f32;
    for k in 0..case.batch {
        case.input(k as usize, runner.input_mut())
            .map_err(|e| Failure::Case(e.into()))?;
        runner
            .run_loaded()
            .map_err(|error| Failure::Run { input: k, error })?;
        match case.check(k as usize, runner.output()) {
            Ok(w) => worst = worst.max(w),
            Err(m) => {
                return Err(Failure::Mismatch {
                    input: k,
                    tensor: m.tensor as u32,
                    index: m.index as u32,
                    diff: m.diff,
                    allowed: m.allowed,
                })
            }
        }
    }
    Ok(CaseReport {
        inputs: case.batch,
        worst,
    })
}
