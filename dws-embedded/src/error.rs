//! The error type of the runner.

use core::fmt;

/// Everything that can go wrong between reading an input and writing a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The blob or the run was rejected by the core (bad blob, non-finite input,
    /// a buffer of the wrong size ...).
    Model(dws_core::Error),
    /// The reader reached its end before a whole input.
    ShortRead {
        /// Bytes of one input (`4 * input_len`).
        expected: usize,
        /// Bytes read before the end.
        actual: usize,
    },
    /// A byte slice holding an input has the wrong length.
    InputBytes {
        /// Bytes of one input (`4 * input_len`).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The reader failed.
    Read(embedded_io::ErrorKind),
    /// The writer failed.
    Write(embedded_io::ErrorKind),
    /// The writer accepted no more bytes before the whole output was written.
    WriteZero,
    /// The timing pin could not be driven.
    Pin(embedded_hal::digital::ErrorKind),
    /// The reader ended between frames: the link is closed ([`crate::protocol::Server`]).
    Closed,
}

impl From<dws_core::Error> for Error {
    fn from(e: dws_core::Error) -> Self {
        Error::Model(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Model(e) => write!(f, "{e}"),
            Error::ShortRead { expected, actual } => write!(
                f,
                "input ended after {actual} bytes, a weight space has {expected}"
            ),
            Error::InputBytes { expected, actual } => write!(
                f,
                "input slice has {actual} bytes, a weight space has {expected}"
            ),
            Error::Read(k) => write!(f, "reading the input failed: {k:?}"),
            Error::Write(k) => write!(f, "writing the output failed: {k:?}"),
            Error::WriteZero => write!(f, "the writer accepted no more bytes"),
            Error::Pin(k) => write!(f, "driving the timing pin failed: {k:?}"),
            Error::Closed => write!(f, "the link is closed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
