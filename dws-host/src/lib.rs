//! `dws-host`: the `dws` command-line tool as a library.
//!
//! * [`config`] and [`convert`]: upstream config + state_dict to a plan.
//! * [`blob_io`]: plans to blobs, blobs into aligned memory.
//! * [`tensors`]: PyTorch checkpoints and safetensors files.
//! * [`weight_space`]: named batch tensors to the core's flat layout and back.
//! * [`runner`]: parallel batch inference, routed to the core or the [`fast`] engine.
//! * [`fast`]: the batched f32 engine (GEMMs over whole batch chunks, SIMD kernels),
//!   and in [`fast::int8`] the AVX2 kernels that int8 models run with.
//! * [`dataset`]: INR datasets in upstream's layout (INR files, splits JSON).
//! * [`eval`]: classifying datasets: accuracy, confusion matrix, predictions CSV.
//! * [`inspect`]: a human-readable summary of a blob.
//! * [`lookalike`]: what a file given in the wrong place holds, for errors that say so.
//! * [`serial`]: `dws serial`, inputs run on a board over a UART (the
//!   `dws_embedded::protocol` frames), outputs written as `dws run` writes them.
//! * [`bench`]: `dws bench`, throughput, GEMM peak and latency on synthetic inputs.
//! * [`progress`]: bars and spinners on a terminal for the long steps.
// `unsafe` is denied everywhere but in `fast` (its SIMD kernels), which allows it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod blob_io;
pub mod config;
pub mod convert;
pub mod dataset;
pub mod eval;
pub mod fast;
pub mod fingerprint;
pub mod inspect;
pub mod lookalike;
pub mod output;
pub mod progress;
pub mod quantize;
pub mod runner;
pub mod serial;
pub mod tensors;
pub mod weight_space;
