//! The CUDA runtime: cudarc (driver API, NVRTC, cuBLAS), all loaded at run time.
//!
//! cudarc panics when a library or symbol is missing; every entry point here
//! first checks that the libraries can be opened and then runs the cudarc
//! calls under `catch_unwind`, so a machine without a GPU gets
//! [`Error::NoGpu`], never a panic.

use crate::args::RawArgs;
use crate::exec::{GemmCall, Runtime};
use crate::kernels::{Kernel, Module, THREADS};
use crate::Error;
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream,
    DevicePtr, DeviceRepr, DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

// SAFETY: `RawArgs` is `#[repr(C, align(8))]` with the argument bytes first;
// the driver copies exactly the kernel parameter's size from its address.
unsafe impl DeviceRepr for RawArgs {}

/// Runs `f`, turning a panic inside cudarc into an error.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            if msg.contains("Unable to dynamically load") || msg.contains("Missing symbol") {
                Err(Error::NoGpu(format!("{what}: {msg}")))
            } else {
                Err(Error::Cuda(format!("{what}: panic in cudarc: {msg}")))
            }
        }
    }
}

fn driver_err(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| {
        use drv_sys::cudaError_enum as E;
        match e.0 {
            E::CUDA_ERROR_NO_DEVICE
            | E::CUDA_ERROR_STUB_LIBRARY
            | E::CUDA_ERROR_DEVICE_UNAVAILABLE
            | E::CUDA_ERROR_NOT_INITIALIZED
            | E::CUDA_ERROR_INVALID_DEVICE
            | E::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
            | E::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => Error::NoGpu(format!("{what}: {e}")),
            _ => Error::Cuda(format!("{what}: {e}")),
        }
    }
}

fn blas_err(what: &str) -> impl Fn(blas::CublasError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// Checks that the driver, NVRTC and cuBLAS libraries can be opened.
pub(crate) fn check_libraries() -> Result<(), Error> {
    let hint = "(install the NVIDIA driver and the CUDA runtime libraries, CUDA 13 for the \
                default build, or add their directory to LD_LIBRARY_PATH)";
    // SAFETY: each call only tries to dlopen the library under its usual names.
    let present = unsafe {
        [
            ("CUDA driver (libcuda)", drv_sys::is_culib_present()),
            ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
            ("cuBLAS (libcublas)", blas_sys::is_culib_present()),
        ]
    };
    for (name, ok) in present {
        if !ok {
            return Err(Error::NoGpu(format!("{name} not found {hint}")));
        }
    }
    Ok(())
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name (`NVIDIA H200`).
    pub name: String,
    /// Compute capability.
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_memory: usize,
    /// Number of devices.
    pub devices: usize,
}

/// Opens device `ordinal` and describes it.
pub(crate) fn probe(ordinal: usize) -> Result<DeviceInfo, Error> {
    check_libraries()?;
    guard("probing the GPU", || {
        let n = CudaContext::device_count().map_err(driver_err("cuDeviceGetCount"))?;
        if n <= 0 {
            return Err(Error::NoGpu("the driver reports no CUDA device".into()));
        }
        if ordinal >= n as usize {
            return Err(Error::NoGpu(format!(
                "device {ordinal} requested, {n} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("creating a context"))?;
        Ok(DeviceInfo {
            name: ctx.name().map_err(driver_err("cuDeviceGetName"))?,
            compute_capability: ctx
                .compute_capability()
                .map_err(driver_err("compute capability"))?,
            total_memory: ctx.total_mem().map_err(driver_err("cuDeviceTotalMem"))?,
            devices: n as usize,
        })
    })
}

/// PTX per (module, architecture), compiled once per process.
type PtxCache = Mutex<HashMap<(Module, Option<&'static str>), String>>;

fn ptx_cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// NVRTC's name for a compute capability's virtual architecture.
fn arch_of(cc: (i32, i32)) -> Option<&'static str> {
    Some(match cc {
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => return None,
    })
}

/// The NVRTC options of a module.
pub fn compile_options(module: Module, arch: Option<&'static str>) -> CompileOptions {
    CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(module.fmad()),
        use_fast_math: Some(false),
        arch,
        name: Some(module.file_name().into()),
        ..Default::default()
    }
}

fn compile(module: Module, arch: Option<&'static str>) -> Result<String, Error> {
    let mut cache = ptx_cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ptx) = cache.get(&(module, arch)) {
        return Ok(ptx.clone());
    }
    let ptx = compile_ptx_with_opts(module.source(), compile_options(module, arch)).map_err(
        |e| match e {
            CompileError::CompileError { log, .. } => {
                Error::Compile(format!("{}: {}", module.file_name(), log.to_string_lossy()))
            }
            e => Error::Compile(format!("{}: {e}", module.file_name())),
        },
    )?;
    let src = ptx.to_src();
    cache.insert((module, arch), src.clone());
    Ok(src)
}

/// One device: a context, its stream, cuBLAS, the loaded kernels and buffers.
pub(crate) struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    arch: Option<&'static str>,
    modules: HashMap<Module, Arc<CudaModule>>,
    funcs: HashMap<Kernel, CudaFunction>,
    params: CudaSlice<u8>,
    arena: Option<CudaSlice<u8>>,
    pub(crate) info: DeviceInfo,
}

impl Gpu {
    /// Opens device `ordinal`, uploads the parameter image and loads `modules`.
    pub(crate) fn new(
        ordinal: usize,
        tf32: bool,
        params: &[u8],
        modules: &[Module],
    ) -> Result<Self, Error> {
        let info = probe(ordinal)?;
        guard("starting the GPU runtime", || {
            let ctx = CudaContext::new(ordinal).map_err(driver_err("creating a context"))?;
            // SAFETY: every buffer is used on the one default stream only, in
            // submission order, so no cross-stream event tracking is needed.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let blas = CudaBlas::new(stream.clone()).map_err(blas_err("cublasCreate"))?;
            let mode = if tf32 {
                blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
            };
            // SAFETY: the handle is live (owned by `blas`).
            unsafe { blas_sys::cublasSetMathMode(*blas.handle(), mode) }
                .result()
                .map_err(blas_err("cublasSetMathMode"))?;
            let params = stream
                .clone_htod(params)
                .map_err(driver_err("uploading the parameters"))?;
            let mut gpu = Gpu {
                arch: arch_of(info.compute_capability),
                ctx,
                stream,
                blas,
                modules: HashMap::new(),
                funcs: HashMap::new(),
                params,
                arena: None,
                info: info.clone(),
            };
            for &m in modules {
                gpu.load_module(m)?;
            }
            Ok(gpu)
        })
    }

    /// Compiles (once per process) and loads (once per context) a module.
    fn load_module(&mut self, m: Module) -> Result<Arc<CudaModule>, Error> {
        if let Some(module) = self.modules.get(&m) {
            return Ok(module.clone());
        }
        let ptx = compile(m, self.arch)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver_err("loading the kernels (cuModuleLoadData)"))?;
        self.modules.insert(m, module.clone());
        Ok(module)
    }

    fn function(&mut self, k: Kernel) -> Result<CudaFunction, Error> {
        if let Some(f) = self.funcs.get(&k) {
            return Ok(f.clone());
        }
        let module = self.load_module(k.module())?;
        let f = module
            .load_function(k.name())
            .map_err(driver_err("cuModuleGetFunction"))?;
        self.funcs.insert(k, f.clone());
        Ok(f)
    }

    /// Free and total device memory.
    pub(crate) fn memory(&self) -> Result<(usize, usize), Error> {
        self.ctx.mem_get_info().map_err(driver_err("cuMemGetInfo"))
    }

    fn addr(&self, s: &CudaSlice<u8>) -> u64 {
        let (ptr, _guard) = s.device_ptr(&self.stream);
        ptr
    }
}

impl Runtime for Gpu {
    fn prepare(&mut self, arena_bytes: u64) -> Result<(u64, u64), Error> {
        let need = arena_bytes.max(16) as usize;
        if self.arena.as_ref().is_none_or(|a| a.len() < need) {
            self.arena = None;
            let arena = self
                .stream
                .alloc_zeros::<u8>(need)
                .map_err(driver_err("allocating the activation arena"))?;
            self.arena = Some(arena);
        }
        let arena = self.arena.as_ref().map(|a| self.addr(a)).unwrap_or(0);
        Ok((arena, self.addr(&self.params)))
    }

    fn upload(&mut self, at: u64, data: &[f32]) -> Result<(), Error> {
        // SAFETY: `at` is the input region of the arena, which `prepare` sized
        // for this batch: it holds `data.len()` f32 values.
        unsafe { drv::memcpy_htod_async(at, data, self.stream.cu_stream()) }
            .map_err(driver_err("copying inputs to the GPU"))
    }

    fn launch(
        &mut self,
        kernel: Kernel,
        grid: (u32, u32, u32),
        smem: u32,
        args: &RawArgs,
    ) -> Result<(), Error> {
        let f = self.function(kernel)?;
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(args);
        // SAFETY: `args` holds the argument struct the lowering built for this
        // kernel (its C layout is checked by the emulator tests); every location
        // in it is inside the arena (sized for this batch by `prepare`) or the
        // parameter buffer, both alive until the stream is synchronized; the
        // grid and shared memory come from the same lowering step.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(driver_err(kernel.name()))
    }

    fn gemm(&mut self, g: &GemmCall) -> Result<(), Error> {
        let int = |v: u64| {
            i32::try_from(v).map_err(|_| Error::Unsupported(format!("GEMM dimension {v}")))
        };
        let (m, n, k) = (int(g.fout)?, int(g.rows)?, int(g.fin)?);
        let (alpha, beta) = (1f32, 0f32);
        let h = *self.blas.handle();
        let (t, nt) = (
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
        );
        // Row-major Y[rows, fout] = X[rows, fin] W^T is column-major
        // Y^T[fout, rows] = W^T(op T of the column-major [fin, fout] W) X^T.
        // SAFETY: x, w and y are addresses inside the arena or the parameter
        // buffer computed by `exec::gemm_call` from a lowering step that sized
        // X as count x rows x fin, W as fout x fin and Y as count x rows x fout
        // elements; Y never overlaps X or W.
        let r = unsafe {
            if g.count == 1 {
                blas::sgemm(
                    h,
                    t,
                    nt,
                    m,
                    n,
                    k,
                    &alpha,
                    g.w as *const f32,
                    k,
                    g.x as *const f32,
                    k,
                    &beta,
                    g.y as *mut f32,
                    m,
                )
            } else {
                blas::sgemm_strided_batched(
                    h,
                    t,
                    nt,
                    m,
                    n,
                    k,
                    &alpha,
                    g.w as *const f32,
                    k,
                    0,
                    g.x as *const f32,
                    k,
                    g.x_stride as i64,
                    &beta,
                    g.y as *mut f32,
                    m,
                    g.y_stride as i64,
                    int(g.count)?,
                )
            }
        };
        r.map_err(blas_err("cublasSgemm"))
    }

    fn download(&mut self, at: u64, out: &mut [f32]) -> Result<(), Error> {
        // SAFETY: `at` is the output region of the arena, which holds
        // `out.len()` f32 values for this batch.
        unsafe { drv::memcpy_dtoh_async(out, at, self.stream.cu_stream()) }
            .map_err(driver_err("copying outputs from the GPU"))?;
        self.stream
            .synchronize()
            .map_err(driver_err("running the batch"))
    }
}
