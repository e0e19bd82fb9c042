//! Compiles the kernel sources as real CUDA device code with clang (no CUDA
//! installation needed: `tests/clang_prelude.h` stands in for NVRTC's
//! built-ins) and checks the PTX: every kernel of the enum is an entry point
//! and its parameter is exactly as large as the Rust argument struct.
//! Without a clang that targets NVPTX it prints `SKIPPED: ...` and returns.
//! `DWS_CUDA_CLANG` names the compiler to use.

use dws_cuda::kernels::{Kernel, Module};
use std::io::Write;
use std::process::Command;

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Compiles `source` for sm_90; `Err` with the compiler's output.
fn compile(clang: &str, source: &str, name: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("dws-cuda-clang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join(format!("{name}.cu"));
    let ptx = dir.join(format!("{name}.ptx"));
    let prelude = include_str!("clang_prelude.h");
    std::fs::write(&src, format!("{prelude}\n{source}")).map_err(|e| e.to_string())?;
    let out = Command::new(clang)
        .args([
            "-x",
            "cuda",
            "--cuda-device-only",
            "--cuda-gpu-arch=sm_90",
            "-nocudainc",
            "-nocudalib",
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-S",
            "-o",
        ])
        .arg(&ptx)
        .arg(&src)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    std::fs::read_to_string(&ptx).map_err(|e| e.to_string())
}

fn clang() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("DWS_CUDA_CLANG").into_iter().collect();
    candidates.extend(
        ["clang-19", "clang-18", "clang-17", "clang-16", "clang"]
            .iter()
            .map(|s| s.to_string()),
    );
    candidates
        .into_iter()
        .find(|c| compile(c, "extern \"C\" __global__ void probe() {}", "probe").is_ok())
}

/// The byte size of an entry's single parameter in PTX.
fn param_size(ptx: &str, kernel: &str) -> Option<usize> {
    let at = ptx.find(&format!(".entry {kernel}("))?;
    let rest = &ptx[at..];
    let p = rest.find(&format!("{kernel}_param_0["))?;
    let open = p + kernel.len() + "_param_0[".len();
    let close = open + rest[open..].find(']')?;
    rest[open..close].parse().ok()
}

#[test]
fn kernels_compile_as_cuda_device_code() {
    let Some(clang) = clang() else {
        note("SKIPPED: no clang with CUDA/NVPTX support (set DWS_CUDA_CLANG) [kernels_compile_as_cuda_device_code]");
        return;
    };
    for m in Module::ALL {
        let ptx = match compile(&clang, &m.source(), m.file_name()) {
            Ok(p) => p,
            Err(log) => panic!("{} does not compile as CUDA:\n{log}", m.file_name()),
        };
        for &k in Kernel::ALL.iter().filter(|k| k.module() == m) {
            let size = param_size(&ptx, k.name())
                .unwrap_or_else(|| panic!("{} is not an entry of {}", k.name(), m.file_name()));
            assert_eq!(
                size,
                dws_cuda::args::size_of_args(k),
                "{}: PTX parameter size vs the Rust struct",
                k.name()
            );
        }
        assert_eq!(
            ptx.matches(".entry ").count(),
            Kernel::ALL.iter().filter(|k| k.module() == m).count(),
            "{}: entries vs the enum",
            m.file_name()
        );
    }
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("dws-cuda-clang-{}", std::process::id())),
    );
}
