//! Compiles the kernel emulator: the CUDA sources in `kernels/` built by the
//! host C++ compiler (see `src/emulator.cpp`). Without a C++ compiler the crate
//! still builds; only the emulator (and the tests that use it) are left out.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(dws_emulator)");
    println!("cargo:rerun-if-changed=src/emulator.cpp");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=DWS_CUDA_NO_EMULATOR");
    if std::env::var_os("DWS_CUDA_NO_EMULATOR").is_some() {
        println!("cargo:warning=dws-cuda: DWS_CUDA_NO_EMULATOR set, kernel emulator not built");
        return;
    }
    let built = cc::Build::new()
        .cpp(true)
        .file("src/emulator.cpp")
        .include("kernels")
        .opt_level(2)
        .flag_if_supported("-std=c++14")
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .try_compile("dws_cuda_emulator");
    match built {
        Ok(()) => println!("cargo:rustc-cfg=dws_emulator"),
        Err(e) => println!(
            "cargo:warning=dws-cuda: kernel emulator not built (no working C++ compiler: {e})"
        ),
    }
}
