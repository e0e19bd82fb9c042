//! The error type of the GPU backend.

use std::fmt;

/// Everything that can go wrong loading or running a model on the GPU.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No usable GPU: the CUDA driver, NVRTC or cuBLAS library is missing, no
    /// device is present, or the driver refused to start. The payload says which.
    NoGpu(String),
    /// A CUDA driver or cuBLAS call failed (the payload names the call).
    Cuda(String),
    /// NVRTC rejected a kernel source (the payload holds its log).
    Compile(String),
    /// The blob failed `dws_core` validation.
    Model(dws_core::Error),
    /// The model needs something this backend does not implement (the payload
    /// says what); the CPU backends still run it.
    Unsupported(String),
    /// The inputs do not fit the model (length, non-finite values).
    Input(String),
    /// The CPU emulator of the kernels failed or was not built.
    Emulator(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoGpu(why) => write!(f, "no usable CUDA GPU: {why}"),
            Error::Cuda(what) => write!(f, "CUDA error: {what}"),
            Error::Compile(log) => write!(f, "NVRTC could not compile the dws kernels: {log}"),
            Error::Model(e) => write!(f, "invalid model: {e}"),
            Error::Unsupported(what) => write!(f, "not supported on the GPU backend: {what}"),
            Error::Input(what) => write!(f, "bad input: {what}"),
            Error::Emulator(what) => write!(f, "kernel emulator: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Model(e) => Some(e),
            _ => None,
        }
    }
}

impl From<dws_core::Error> for Error {
    fn from(e: dws_core::Error) -> Self {
        Error::Model(e)
    }
}
