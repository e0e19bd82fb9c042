//! The CPU emulator of the kernels: the very CUDA sources of `kernels/`,
//! compiled by the host C++ compiler (`build.rs`, `src/emulator.cpp`) and run
//! block by block with one thread per block, with the GEMMs done by a plain
//! loop. It executes exactly the launch list the GPU gets, so the tests check
//! the lowering, the buffer layout, the argument structs and the kernel
//! arithmetic (int8 and 16x8: bit for bit) on machines without a GPU. It is
//! slow; it is a test and debugging aid, not a backend.

use crate::args::RawArgs;
use crate::exec::{host_gemm, GemmCall, Runtime};
use crate::kernels::Kernel;
use crate::lower::Program;
use crate::Error;

/// Whether this build has the emulator (a C++ compiler was found).
pub fn available() -> bool {
    cfg!(dws_emulator)
}

#[cfg(dws_emulator)]
mod ffi {
    use std::ffi::{c_char, c_void};
    extern "C" {
        pub fn dws_emu_launch(
            name: *const c_char,
            gx: u32,
            gy: u32,
            gz: u32,
            smem: u32,
            args: *const c_void,
            args_len: u64,
        ) -> i32;
        pub fn dws_emu_args_size(name: *const c_char) -> i64;
        pub fn dws_emu_req_apply(m: i32, shift: i32, x: i32) -> i32;
        pub fn dws_emu_req_apply_wide(m: i32, shift: i32, x: i64) -> i32;
        pub fn dws_emu_exp_arg(mx: i32, z: i32, m: i32, shift: i32) -> i32;
        pub fn dws_emu_exp_arg_wide(mx: i64, z: i64, m: i32, shift: i32) -> i32;
    }
}

/// The kernels' fixed-point helpers (`quant.cuh`) run on the CPU, for tests
/// against `dws_core::quant`. Each is `None` without the emulator.
pub mod fixed {
    use dws_core::quant::Requant;

    /// `req_apply`: `Requant::apply`.
    pub fn requant(r: Requant, x: i32) -> Option<i32> {
        #[cfg(dws_emulator)]
        // SAFETY: a pure function of its integer arguments.
        return Some(unsafe { super::ffi::dws_emu_req_apply(r.m, r.shift as i32, x) });
        #[cfg(not(dws_emulator))]
        {
            let _ = (r, x);
            None
        }
    }

    /// `req_apply_wide`: `Requant::apply_wide`.
    pub fn requant_wide(r: Requant, x: i64) -> Option<i32> {
        #[cfg(dws_emulator)]
        // SAFETY: a pure function of its integer arguments.
        return Some(unsafe { super::ffi::dws_emu_req_apply_wide(r.m, r.shift as i32, x) });
        #[cfg(not(dws_emulator))]
        {
            let _ = (r, x);
            None
        }
    }

    /// `exp_arg` of int8 scores: `<i32 as Score>::exp_arg`.
    pub fn exp_arg(max: i32, z: i32, r: Requant) -> Option<usize> {
        #[cfg(dws_emulator)]
        // SAFETY: a pure function of its integer arguments.
        return Some(unsafe { super::ffi::dws_emu_exp_arg(max, z, r.m, r.shift as i32) } as usize);
        #[cfg(not(dws_emulator))]
        {
            let _ = (max, z, r);
            None
        }
    }

    /// `exp_arg` of 16x8 scores: `<i64 as Score>::exp_arg`.
    pub fn exp_arg_wide(max: i64, z: i64, r: Requant) -> Option<usize> {
        #[cfg(dws_emulator)]
        // SAFETY: a pure function of its integer arguments.
        return Some(
            unsafe { super::ffi::dws_emu_exp_arg_wide(max, z, r.m, r.shift as i32) } as usize,
        );
        #[cfg(not(dws_emulator))]
        {
            let _ = (max, z, r);
            None
        }
    }
}

/// `sizeof` of a kernel's argument struct as the C++ compiler lays it out.
pub fn args_size(k: Kernel) -> Result<usize, Error> {
    #[cfg(dws_emulator)]
    {
        let name = std::ffi::CString::new(k.name()).expect("kernel names have no NUL");
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let n = unsafe { ffi::dws_emu_args_size(name.as_ptr()) };
        usize::try_from(n).map_err(|_| Error::Emulator(format!("unknown kernel {}", k.name())))
    }
    #[cfg(not(dws_emulator))]
    {
        let _ = k;
        Err(not_built())
    }
}

#[allow(dead_code)]
fn not_built() -> Error {
    Error::Emulator("not built (no C++ compiler when dws-cuda was compiled)".into())
}

/// Host memory standing in for the device.
pub(crate) struct Emu {
    params: Vec<u64>,
    params_len: usize,
    arena: Vec<u64>,
    launches: usize,
}

impl Emu {
    pub(crate) fn new(params: &[u8]) -> Self {
        let mut p = vec![0u64; params.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut p)[..params.len()].copy_from_slice(params);
        Emu {
            params: p,
            params_len: params.len(),
            arena: Vec::new(),
            launches: 0,
        }
    }

    /// Checks that `[at, at + bytes)` lies inside the arena or the parameters.
    fn check(&self, at: u64, bytes: u64, what: &str) -> Result<(), Error> {
        let inside = |base: *const u64, len: usize| {
            let base = base as u64;
            at >= base
                && at
                    .checked_add(bytes)
                    .is_some_and(|end| end <= base + len as u64)
        };
        if inside(self.arena.as_ptr(), self.arena.len() * 8)
            || inside(self.params.as_ptr(), self.params_len)
        {
            Ok(())
        } else {
            Err(Error::Emulator(format!(
                "{what}: {bytes} bytes at {at:#x} outside the arena and the parameters"
            )))
        }
    }
}

impl Runtime for Emu {
    fn prepare(&mut self, arena_bytes: u64) -> Result<(u64, u64), Error> {
        let words = (arena_bytes as usize).div_ceil(8).max(2);
        if self.arena.len() < words {
            self.arena = vec![0u64; words];
        }
        Ok((self.arena.as_ptr() as u64, self.params.as_ptr() as u64))
    }

    fn upload(&mut self, at: u64, data: &[f32]) -> Result<(), Error> {
        self.check(at, 4 * data.len() as u64, "upload")?;
        // SAFETY: the destination range was checked to lie inside the arena,
        // which is not borrowed elsewhere while `self` is borrowed mutably.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut f32, data.len()) };
        Ok(())
    }

    #[allow(unused_variables)]
    fn launch(
        &mut self,
        kernel: Kernel,
        grid: (u32, u32, u32),
        smem: u32,
        args: &RawArgs,
    ) -> Result<(), Error> {
        #[cfg(dws_emulator)]
        {
            self.launches += 1;
            let name = std::ffi::CString::new(kernel.name()).expect("kernel names have no NUL");
            let bytes = args.bytes();
            // SAFETY: the arguments are the struct the lowering built for this
            // kernel (sizes are compared by the C++ side, which refuses a
            // mismatch); their addresses point into `self.arena` (sized by
            // `prepare` for this batch) and `self.params`, which outlive the
            // call and are not otherwise borrowed during it.
            let rc = unsafe {
                ffi::dws_emu_launch(
                    name.as_ptr(),
                    grid.0,
                    grid.1,
                    grid.2,
                    smem,
                    bytes.as_ptr().cast(),
                    bytes.len() as u64,
                )
            };
            match rc {
                0 => Ok(()),
                -2 => Err(Error::Emulator(format!(
                    "{}: argument struct size mismatch ({} bytes from Rust)",
                    kernel.name(),
                    bytes.len()
                ))),
                _ => Err(Error::Emulator(format!("unknown kernel {}", kernel.name()))),
            }
        }
        #[cfg(not(dws_emulator))]
        Err(not_built())
    }

    fn gemm(&mut self, g: &GemmCall) -> Result<(), Error> {
        let last = g.count.saturating_sub(1);
        self.check(g.w, 4 * g.fin * g.fout, "GEMM weights")?;
        self.check(g.x, 4 * (last * g.x_stride + g.rows * g.fin), "GEMM input")?;
        self.check(
            g.y,
            4 * (last * g.y_stride + g.rows * g.fout),
            "GEMM output",
        )?;
        // SAFETY: the three ranges were checked to lie in host memory owned by
        // `self`; Y is a Y-store or work slot distinct from X and W by
        // construction of the lowering.
        unsafe { host_gemm(g) };
        Ok(())
    }

    fn download(&mut self, at: u64, out: &mut [f32]) -> Result<(), Error> {
        self.check(at, 4 * out.len() as u64, "download")?;
        // SAFETY: the source range was checked to lie inside our buffers.
        unsafe { std::ptr::copy_nonoverlapping(at as *const f32, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
}

/// A model lowered for the GPU and run by the emulator.
pub struct EmulatedModel {
    program: Program,
    emu: Emu,
}

impl EmulatedModel {
    /// Validates and lowers a blob (as [`crate::CudaModel::load`] does).
    pub fn load(blob: &[u8]) -> Result<Self, Error> {
        Self::load_with(blob, crate::lower::LowerOptions::default())
    }

    /// [`EmulatedModel::load`] with explicit lowering choices.
    pub fn load_with(blob: &[u8], options: crate::lower::LowerOptions) -> Result<Self, Error> {
        if !available() {
            return Err(not_built());
        }
        let program = crate::lower_blob_with(blob, options)?;
        let emu = Emu::new(&program.params);
        Ok(EmulatedModel { program, emu })
    }

    /// Runs `batch` inputs (`[batch, input_len]`) in one chunk; returns
    /// `[batch, output_len]`.
    pub fn run_batch(&mut self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
        crate::exec::run_batch(&mut self.emu, &self.program, inputs, batch, batch.max(1))
    }

    /// Like [`EmulatedModel::run_batch`] in chunks of at most `chunk` inputs.
    pub fn run_chunked(
        &mut self,
        inputs: &[f32],
        batch: usize,
        chunk: usize,
    ) -> Result<Vec<f32>, Error> {
        crate::exec::run_batch(&mut self.emu, &self.program, inputs, batch, chunk)
    }

    /// The lowered program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Kernel launches run so far.
    pub fn launches(&self) -> usize {
        self.emu.launches
    }
}
