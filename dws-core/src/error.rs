//! The one error type of the core.

use core::fmt;

/// Everything that can go wrong when opening a blob or running a model.
///
/// Every check happens when a blob is opened ([`crate::Model::new_checked`]) or
/// when an input is handed over; inference itself never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The blob is shorter than its header or than the sections the header announces.
    Truncated,
    /// The blob does not start with the `DWSB` magic bytes.
    BadMagic,
    /// The blob was written in a format version this build cannot read.
    UnsupportedVersion(u16),
    /// The checksum over the blob does not match: the bytes were corrupted.
    Checksum,
    /// The blob has bytes after its last section.
    TrailingBytes,
    /// The parameter section is not 4-byte aligned in memory (8-byte for a
    /// 16x8 model); load the blob into an aligned buffer.
    Misaligned,
    /// The plan section could not be decoded.
    Decode,
    /// The plan is inconsistent (shapes, parameter references or op order); the payload names the check.
    InvalidPlan(&'static str),
    /// A parameter reference points outside the parameter section.
    ParamOutOfBounds,
    /// The input slice has the wrong length.
    InputLength {
        /// Elements the model expects.
        expected: usize,
        /// Elements that were given.
        actual: usize,
    },
    /// The input holds a NaN or an infinity.
    NonFiniteInput,
    /// The output slice is too short.
    OutputLength {
        /// Elements the model writes.
        expected: usize,
        /// Elements that were given.
        actual: usize,
    },
    /// The scratch slice is too short.
    ScratchTooSmall {
        /// Elements the model needs.
        expected: usize,
        /// Elements that were given.
        actual: usize,
    },
    /// The blob's precision flags are unknown, or it holds a model of another
    /// element type than the call asked for (f32 vs int8).
    WrongPrecision,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "blob is truncated"),
            Error::BadMagic => write!(f, "not a dws model blob (bad magic bytes)"),
            Error::UnsupportedVersion(v) => write!(f, "unsupported blob format version {v}"),
            Error::Checksum => write!(f, "blob checksum mismatch (corrupted bytes)"),
            Error::TrailingBytes => write!(f, "blob has trailing bytes after its last section"),
            Error::Misaligned => write!(
                f,
                "blob parameters are not aligned in memory (4 bytes; 8 for a 16x8 model)"
            ),
            Error::Decode => write!(f, "blob plan could not be decoded"),
            Error::InvalidPlan(what) => write!(f, "invalid model plan: {what}"),
            Error::ParamOutOfBounds => write!(f, "parameter reference out of bounds"),
            Error::InputLength { expected, actual } => {
                write!(
                    f,
                    "input has {actual} elements, the model expects {expected}"
                )
            }
            Error::NonFiniteInput => write!(f, "input contains NaN or infinity"),
            Error::OutputLength { expected, actual } => {
                write!(
                    f,
                    "output buffer has {actual} elements, the model writes {expected}"
                )
            }
            Error::ScratchTooSmall { expected, actual } => {
                write!(
                    f,
                    "scratch buffer has {actual} elements, the model needs {expected}"
                )
            }
            Error::WrongPrecision => {
                write!(
                    f,
                    "blob precision is unknown or not the one this call runs (f32 vs int8)"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl std::error::Error for Error {}
