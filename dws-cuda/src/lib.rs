//! `dws-cuda`: GPU batch scoring of DWSNets.
//!
//! Loads the same `.dws` blob as every other backend (f32, int8 or 16x8), validates
//! it with [`dws_core::Model::new_checked`], lowers its plan to a short list
//! of kernel launches and cuBLAS GEMMs per DWS layer ([`lower`]), uploads the
//! parameters once and runs whole batches:
//!
//! ```no_run
//! # fn demo(blob: &[u8], inputs: &[f32], batch: usize) -> Result<(), dws_cuda::Error> {
//! let mut model = dws_cuda::CudaModel::load(blob)?; // Error::NoGpu without a GPU
//! let outputs = model.run_batch(inputs, batch)?;   // [batch, output_len]
//! # let _ = outputs; Ok(()) }
//! ```
//!
//! The kernels are CUDA C (`kernels/*.cu`), compiled by NVRTC when a model is
//! first loaded (PTX cached per process, modules per context). The CUDA
//! libraries are opened at run time: on a machine without them every entry
//! point returns [`Error::NoGpu`]. The same launch list also runs on the CPU
//! through [`emulator`], which is how this crate is tested without a GPU.
//!
//! f32 GEMMs use cuBLAS with TF32 off (`CUBLAS_DEFAULT_MATH`) unless
//! [`Options::tf32`] is set. Quantized plans (int8 and 16x8) use integer
//! kernels only and are meant to match `dws_core` bit for bit
//! (`docs/quantization.md`).
#![warn(missing_docs)]

pub mod args;
pub mod emulator;
mod error;
pub mod exec;
mod gpu;
pub mod kernels;
pub mod lower;

pub use error::Error;
pub use gpu::DeviceInfo;

use dws_core::blob::Precision;
use lower::Program;
use std::time::Instant;

/// How to run models.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// CUDA device ordinal.
    pub device: usize,
    /// Let cuBLAS use TF32 tensor cores for f32 GEMMs (faster, ~1e-3 relative
    /// error); off by default.
    pub tf32: bool,
    /// Most inputs per chunk (one pass of the launch list).
    pub max_chunk: usize,
    /// Share of the free device memory a chunk's activations may use.
    pub memory_fraction: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: 0,
            tf32: false,
            max_chunk: 8192,
            memory_fraction: 0.5,
        }
    }
}

/// Checks that a CUDA GPU with NVRTC and cuBLAS is usable (device 0).
pub fn available() -> Result<(), Error> {
    device_info(0).map(|_| ())
}

/// Describes device `ordinal`, or says why there is no usable GPU.
pub fn device_info(ordinal: usize) -> Result<DeviceInfo, Error> {
    gpu::probe(ordinal)
}

/// Validates a blob (copied to aligned memory) and lowers its plan.
pub fn lower_blob(blob: &[u8]) -> Result<Program, Error> {
    lower_blob_with(blob, lower::LowerOptions::default())
}

/// [`lower_blob`] with explicit lowering choices.
pub fn lower_blob_with(blob: &[u8], options: lower::LowerOptions) -> Result<Program, Error> {
    let mut words = vec![0u64; blob.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..blob.len()].copy_from_slice(blob);
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..blob.len()];
    let model = dws_core::Model::new_checked(bytes)?;
    lower::lower_with(&model, options)
}

/// A model resident on a GPU.
pub struct CudaModel {
    program: Program,
    gpu: gpu::Gpu,
    chunk: usize,
    options: Options,
}

impl std::fmt::Debug for CudaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaModel")
            .field("device", &self.gpu.info)
            .field("precision", &self.program.precision)
            .field("launches", &self.program.launches())
            .field("chunk", &self.chunk)
            .finish()
    }
}

impl CudaModel {
    /// Loads a blob on device 0 with default [`Options`].
    pub fn load(blob: &[u8]) -> Result<Self, Error> {
        Self::load_with(blob, Options::default())
    }

    /// Loads a blob: validates and lowers it, opens the device, compiles the
    /// kernels it needs and uploads the parameters.
    pub fn load_with(blob: &[u8], options: Options) -> Result<Self, Error> {
        let program = lower_blob(blob)?;
        let module = kernels::Module::of(program.precision);
        let gpu = gpu::Gpu::new(options.device, options.tf32, &program.params, &[module])?;
        let (free, _) = gpu.memory()?;
        let budget = (free as f64 * options.memory_fraction.clamp(0.01, 0.95)) as u64;
        let chunk = (budget / program.arena_per_sample.max(1)) as usize;
        if chunk == 0 {
            return Err(Error::Unsupported(format!(
                "one input needs {} bytes of activations, more than the memory budget",
                program.arena_per_sample
            )));
        }
        let chunk = chunk.min(options.max_chunk.max(1));
        Ok(CudaModel {
            program,
            gpu,
            chunk,
            options,
        })
    }

    /// Runs `batch` inputs (`[batch, input_len]`, the core's layout) and
    /// returns `[batch, output_len]`.
    pub fn run_batch(&mut self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
        let (gpu, program, chunk) = (&mut self.gpu, &self.program, self.chunk);
        gpu::guard("running a batch", || {
            exec::run_batch(gpu, program, inputs, batch, chunk)
        })
    }

    /// Elements of one input.
    pub fn input_len(&self) -> usize {
        self.program.input_len
    }

    /// Elements of one output.
    pub fn output_len(&self) -> usize {
        self.program.output_len
    }

    /// f32, int8 or 16x8.
    pub fn precision(&self) -> Precision {
        self.program.precision
    }

    /// The device.
    pub fn device(&self) -> &DeviceInfo {
        &self.gpu.info
    }

    /// Inputs per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The lowered program.
    pub fn program(&self) -> &Program {
        &self.program
    }
}

/// Loads `blob` on device 0 and runs `batch` inputs: the one call `dws run
/// --device cuda` needs.
pub fn run_batch(blob: &[u8], inputs: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
    CudaModel::load(blob)?.run_batch(inputs, batch)
}

/// Timings of [`bench`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// The device.
    pub device: String,
    /// f32, int8 or 16x8.
    pub precision: Precision,
    /// Whether TF32 was allowed.
    pub tf32: bool,
    /// Inputs per timed call.
    pub batch: usize,
    /// Inputs per chunk.
    pub chunk: usize,
    /// Kernel launches and GEMMs per chunk.
    pub launches: usize,
    /// Activation bytes per input.
    pub arena_per_input: u64,
    /// Seconds to load (validate, lower, compile, upload).
    pub load_s: f64,
    /// Timed calls.
    pub iters: usize,
    /// Median seconds per call of `batch` inputs (host copies included).
    pub median_s: f64,
    /// Fastest call.
    pub min_s: f64,
    /// Median seconds of a call with one input (latency).
    pub latency_s: f64,
}

impl BenchReport {
    /// Inputs per second at the median.
    pub fn throughput(&self) -> f64 {
        self.batch as f64 / self.median_s.max(1e-12)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "device {} ({:?}, tf32 {})",
            self.device, self.precision, self.tf32
        )?;
        writeln!(
            f,
            "load {:.3} s; {} launches per chunk of {} ({} activation bytes per input)",
            self.load_s, self.launches, self.chunk, self.arena_per_input
        )?;
        writeln!(
            f,
            "batch {}: median {:.3} ms, min {:.3} ms over {} runs -> {:.0} inputs/s",
            self.batch,
            self.median_s * 1e3,
            self.min_s * 1e3,
            self.iters,
            self.throughput()
        )?;
        write!(f, "batch 1 latency: median {:.3} ms", self.latency_s * 1e3)
    }
}

/// Deterministic inputs for benchmarks: the seed's pseudo-random values in
/// `[-0.5, 0.5)`.
pub fn synthetic_inputs(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Loads `blob` and times `iters` calls of `batch` synthetic inputs (after a
/// warm-up call) and `iters` calls of one input: what `dws bench --device
/// cuda` prints.
pub fn bench(
    blob: &[u8],
    batch: usize,
    iters: usize,
    options: Options,
) -> Result<BenchReport, Error> {
    let t = Instant::now();
    let mut m = CudaModel::load_with(blob, options)?;
    let load_s = t.elapsed().as_secs_f64();
    let batch = batch.max(1);
    let iters = iters.max(1);
    let inputs = synthetic_inputs(batch * m.input_len(), 0x5eed);
    m.run_batch(&inputs, batch)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        m.run_batch(&inputs, batch)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let min_s = times.iter().copied().fold(f64::INFINITY, f64::min);
    let median_s = median(&mut times);
    let one = &inputs[..m.input_len()];
    m.run_batch(one, 1)?;
    let mut lat = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        m.run_batch(one, 1)?;
        lat.push(t.elapsed().as_secs_f64());
    }
    Ok(BenchReport {
        device: m.device().name.clone(),
        precision: m.precision(),
        tf32: m.options().tf32,
        batch,
        chunk: m.chunk(),
        launches: m.program().launches(),
        arena_per_input: m.program().arena_per_sample,
        load_s,
        iters,
        median_s,
        min_s,
        latency_s: median(&mut lat),
    })
}
