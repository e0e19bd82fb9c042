//! The CUDA C sources and the table of kernels (one enum, looked up by name).
//!
//! Sources live in `kernels/*.cu` and are embedded with `include_str!`. Each
//! module is compiled by NVRTC once per process (PTX cached) and loaded once
//! per context (`gpu.rs`).

/// `kernels/common.cuh`: types, helpers and the argument structs.
pub const COMMON: &str = include_str!("../kernels/common.cuh");
/// `kernels/f32.cu`.
pub const F32_SRC: &str = include_str!("../kernels/f32.cu");
/// `kernels/int8.cu`.
pub const INT8_SRC: &str = include_str!("../kernels/int8.cu");

/// A compilation unit: one `.cu` file with the common header in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    /// f32 kernels (`--fmad=true`).
    F32,
    /// int8 kernels (`--fmad=false`: the f32 input and output boundaries must
    /// round exactly as on the CPU).
    Int8,
}

impl Module {
    /// Both modules.
    pub const ALL: [Module; 2] = [Module::F32, Module::Int8];

    /// The `.cu` file's text.
    pub fn file(self) -> &'static str {
        match self {
            Module::F32 => F32_SRC,
            Module::Int8 => INT8_SRC,
        }
    }

    /// The file name (for NVRTC's messages).
    pub fn file_name(self) -> &'static str {
        match self {
            Module::F32 => "f32.cu",
            Module::Int8 => "int8.cu",
        }
    }

    /// The complete NVRTC input: common.cuh, then the file without its
    /// `#include "common.cuh"` (NVRTC gets no include paths).
    pub fn source(self) -> String {
        let body = self.file().replace("#include \"common.cuh\"", "");
        let common = COMMON.replace("#pragma once", "");
        format!(
            "// ---- common.cuh ----\n{common}\n// ---- {} ----\n{body}",
            self.file_name()
        )
    }

    /// Whether NVRTC may contract multiplies and adds into FMAs.
    pub fn fmad(self) -> bool {
        matches!(self, Module::F32)
    }
}

macro_rules! kernels {
    ($($variant:ident => $name:literal in $module:ident,)*) => {
        /// Every kernel of the crate.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Kernel {
            /// Every kernel, in declaration order.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];

            /// The `extern "C"` name in the sources.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $name,)*
                }
            }

            /// The module that defines it.
            pub fn module(self) -> Module {
                match self {
                    $(Kernel::$variant => Module::$module,)*
                }
            }
        }
    };
}

kernels! {
    NormalizeF32 => "normalize_f32" in F32,
    GatherF32 => "gather_f32" in F32,
    BiasActF32 => "bias_act_f32" in F32,
    SetPoolF32 => "set_pool_f32" in F32,
    AttentionF32 => "attention_f32" in F32,
    AttentionSetF32 => "attention_set_f32" in F32,
    ScatterF32 => "scatter_f32" in F32,
    ResampleGatherF32 => "resample_gather_f32" in F32,
    ResampleScatterF32 => "resample_scatter_f32" in F32,
    AffineReluF32 => "affine_relu_f32" in F32,
    InputSkipF32 => "input_skip_f32" in F32,
    HeadPoolF32 => "head_pool_f32" in F32,
    QuantizeI8 => "quantize_i8" in Int8,
    GatherI8 => "gather_i8" in Int8,
    LinearI8 => "linear_i8" in Int8,
    SetPoolI8 => "set_pool_i8" in Int8,
    AttentionI8 => "attention_i8" in Int8,
    AttentionSetI8 => "attention_set_i8" in Int8,
    ScatterI8 => "scatter_i8" in Int8,
    ResampleGatherI8 => "resample_gather_i8" in Int8,
    ResampleScatterI8 => "resample_scatter_i8" in Int8,
    AffineReluI8 => "affine_relu_i8" in Int8,
    InputSkipI8 => "input_skip_i8" in Int8,
    HeadPoolI8 => "head_pool_i8" in Int8,
    DequantI8 => "dequant_i8" in Int8,
}

/// Threads per block of every launch (`DWS_THREADS` in common.cuh).
pub const THREADS: u32 = 256;
/// Rows and columns of a `linear_i8` output tile (`LT` in int8.cu).
pub const LINEAR_TILE: u32 = 32;
/// Dynamic shared memory a launch may ask for: 48 KiB (the most without
/// opting in) less room for the kernels' static shared arrays (at most 2 KiB
/// besides `linear_i8`, which uses no dynamic shared memory).
pub const MAX_DYN_SMEM: usize = 46 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips `//` and `/* */` comments and string/char literals.
    fn code_only(src: &str) -> String {
        let mut out = String::new();
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(b"//") {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else if b[i..].starts_with(b"/*") {
                i += 2;
                while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                    i += 1;
                }
                i += 2;
            } else if b[i] == b'"' || b[i] == b'\'' {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn sources_have_balanced_delimiters() {
        for (name, src) in [
            ("common.cuh", COMMON),
            ("f32.cu", F32_SRC),
            ("int8.cu", INT8_SRC),
        ] {
            let code = code_only(src);
            for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
                let mut depth = 0i64;
                for (line, text) in code.lines().enumerate() {
                    for ch in text.chars() {
                        if ch == open {
                            depth += 1;
                        } else if ch == close {
                            depth -= 1;
                        }
                        assert!(depth >= 0, "{name}:{}: unbalanced `{close}`", line + 1);
                    }
                }
                assert_eq!(depth, 0, "{name}: unbalanced `{open}{close}`");
            }
        }
    }

    #[test]
    fn every_kernel_is_defined_once_in_its_module() {
        for &k in Kernel::ALL {
            let def = format!("DWS_KERNEL void {}(", k.name());
            let code = code_only(k.module().file());
            assert_eq!(
                code.matches(&def).count(),
                1,
                "{} in {:?}",
                k.name(),
                k.module()
            );
            for other in Module::ALL.iter().filter(|m| **m != k.module()) {
                assert!(!code_only(other.file()).contains(&def));
            }
        }
        // And every kernel in the sources is in the enum.
        for m in Module::ALL {
            let code = code_only(m.file());
            let defined = code.matches("DWS_KERNEL void ").count();
            let listed = Kernel::ALL.iter().filter(|k| k.module() == m).count();
            assert_eq!(defined, listed, "{m:?}: kernels in the source vs the enum");
        }
    }

    #[test]
    fn kernel_names_are_unique() {
        let mut names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kernel::ALL.len());
    }

    #[test]
    fn module_sources_inline_the_common_header() {
        for m in Module::ALL {
            let src = m.source();
            assert!(!src.contains("#include \"common.cuh\""));
            assert!(src.contains("struct Ctx"));
            // The emulator header is only reachable from the host branch.
            let host_branch = src.find("#include \"emulator.h\"").unwrap();
            let else_at = src[..host_branch].rfind("#else").unwrap();
            assert!(src[..else_at].contains("#if defined(__CUDACC__)"));
        }
    }

    /// The exponential tables of int8.cu are `dws_core::quant`'s.
    #[test]
    fn int8_exp_tables_match_the_core() {
        let table = |name: &str| -> Vec<u32> {
            let at = INT8_SRC.find(&format!("{name}[")).unwrap();
            let open = at + INT8_SRC[at..].find('{').unwrap();
            let close = open + INT8_SRC[open..].find('}').unwrap();
            INT8_SRC[open + 1..close]
                .split(',')
                .map(|v| v.trim().trim_end_matches('u').parse().unwrap())
                .collect()
        };
        assert_eq!(table("EXP_HI"), dws_core::quant::EXP_HI.to_vec());
        assert_eq!(table("EXP_LO"), dws_core::quant::EXP_LO.to_vec());
    }

    #[test]
    fn threads_and_tile_match_the_sources() {
        assert!(COMMON.contains(&format!("#define DWS_THREADS {THREADS}")));
        assert!(INT8_SRC.contains(&format!("#define LT {LINEAR_TILE}")));
    }
}
