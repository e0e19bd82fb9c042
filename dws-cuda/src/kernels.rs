//! The CUDA C sources and the table of kernels (one enum, looked up by name).
//!
//! Sources live in `kernels/` and are embedded with `include_str!`. Each
//! module is compiled by NVRTC once per process (PTX cached) and loaded once
//! per context (`gpu.rs`). The quantized kernels are written once, over the
//! mode, in `quant.cuh`; `int8.cu` and `int16x8.cu` instantiate them as one
//! entry point per kernel and mode ([`QuantKernels`]).

use dws_core::blob::Precision;

/// `kernels/common.cuh`: types, helpers and the argument structs.
pub const COMMON: &str = include_str!("../kernels/common.cuh");
/// `kernels/quant.cuh`: the quantized kernels of both modes (templates).
pub const QUANT: &str = include_str!("../kernels/quant.cuh");
/// `kernels/f32.cu`.
pub const F32_SRC: &str = include_str!("../kernels/f32.cu");
/// `kernels/int8.cu`: the int8 entry points.
pub const INT8_SRC: &str = include_str!("../kernels/int8.cu");
/// `kernels/int16x8.cu`: the 16x8 entry points.
pub const INT16X8_SRC: &str = include_str!("../kernels/int16x8.cu");

/// A compilation unit: one `.cu` file with the headers it includes in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    /// f32 kernels (`--fmad=true`).
    F32,
    /// int8 kernels (`--fmad=false`: the f32 input and output boundaries must
    /// round exactly as on the CPU).
    Int8,
    /// 16x8 kernels (`--fmad=false`, as int8).
    Int16x8,
}

impl Module {
    /// Every module.
    pub const ALL: [Module; 3] = [Module::F32, Module::Int8, Module::Int16x8];

    /// The module of a blob precision.
    pub fn of(precision: Precision) -> Module {
        match precision {
            Precision::F32 => Module::F32,
            Precision::Int8 => Module::Int8,
            Precision::Int16x8 => Module::Int16x8,
        }
    }

    /// The `.cu` file's text.
    pub fn file(self) -> &'static str {
        match self {
            Module::F32 => F32_SRC,
            Module::Int8 => INT8_SRC,
            Module::Int16x8 => INT16X8_SRC,
        }
    }

    /// The file name (for NVRTC's messages).
    pub fn file_name(self) -> &'static str {
        match self {
            Module::F32 => "f32.cu",
            Module::Int8 => "int8.cu",
            Module::Int16x8 => "int16x8.cu",
        }
    }

    /// Whether the module is quantized (includes `quant.cuh`).
    pub fn quantized(self) -> bool {
        !matches!(self, Module::F32)
    }

    /// The complete NVRTC input: common.cuh, quant.cuh for the quantized
    /// modules, then the file, without their `#include`s and `#pragma once`s
    /// (NVRTC gets no include paths).
    pub fn source(self) -> String {
        let strip = |s: &str| {
            s.replace("#include \"common.cuh\"", "")
                .replace("#include \"quant.cuh\"", "")
                .replace("#pragma once", "")
        };
        let mut out = format!("// ---- common.cuh ----\n{}\n", strip(COMMON));
        if self.quantized() {
            out += &format!("// ---- quant.cuh ----\n{}\n", strip(QUANT));
        }
        out += &format!("// ---- {} ----\n{}", self.file_name(), strip(self.file()));
        out
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
    QuantizeI16 => "quantize_i16" in Int16x8,
    GatherI16 => "gather_i16" in Int16x8,
    LinearI16 => "linear_i16" in Int16x8,
    SetPoolI16 => "set_pool_i16" in Int16x8,
    AttentionI16 => "attention_i16" in Int16x8,
    AttentionSetI16 => "attention_set_i16" in Int16x8,
    ScatterI16 => "scatter_i16" in Int16x8,
    ResampleGatherI16 => "resample_gather_i16" in Int16x8,
    ResampleScatterI16 => "resample_scatter_i16" in Int16x8,
    AffineReluI16 => "affine_relu_i16" in Int16x8,
    InputSkipI16 => "input_skip_i16" in Int16x8,
    HeadPoolI16 => "head_pool_i16" in Int16x8,
    DequantI16 => "dequant_i16" in Int16x8,
}

/// The kernels of one quantized mode, and its element sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantKernels {
    /// Bytes of one activation: 1 (int8) or 2 (16x8).
    pub act_bytes: u64,
    /// Bytes of one accumulator, score, bias or batch-norm offset: 4 or 8.
    pub acc_bytes: u64,
    /// `quantize_*`: the f32 input boundary.
    pub quantize: Kernel,
    /// `gather_*`.
    pub gather: Kernel,
    /// `linear_*`.
    pub linear: Kernel,
    /// `set_pool_*`.
    pub set_pool: Kernel,
    /// `attention_*` (one block per row).
    pub attention: Kernel,
    /// `attention_set_*` (one block per set).
    pub attention_set: Kernel,
    /// `scatter_*`.
    pub scatter: Kernel,
    /// `resample_gather_*`.
    pub resample_gather: Kernel,
    /// `resample_scatter_*`.
    pub resample_scatter: Kernel,
    /// `affine_relu_*`.
    pub affine_relu: Kernel,
    /// `input_skip_*`.
    pub input_skip: Kernel,
    /// `head_pool_*`.
    pub head_pool: Kernel,
    /// `dequant_*`: the weight-space output boundary.
    pub dequant: Kernel,
}

impl QuantKernels {
    /// int8: int8 activations, int32 accumulators.
    pub const INT8: QuantKernels = QuantKernels {
        act_bytes: 1,
        acc_bytes: 4,
        quantize: Kernel::QuantizeI8,
        gather: Kernel::GatherI8,
        linear: Kernel::LinearI8,
        set_pool: Kernel::SetPoolI8,
        attention: Kernel::AttentionI8,
        attention_set: Kernel::AttentionSetI8,
        scatter: Kernel::ScatterI8,
        resample_gather: Kernel::ResampleGatherI8,
        resample_scatter: Kernel::ResampleScatterI8,
        affine_relu: Kernel::AffineReluI8,
        input_skip: Kernel::InputSkipI8,
        head_pool: Kernel::HeadPoolI8,
        dequant: Kernel::DequantI8,
    };

    /// 16x8: int16 activations, int64 accumulators.
    pub const INT16X8: QuantKernels = QuantKernels {
        act_bytes: 2,
        acc_bytes: 8,
        quantize: Kernel::QuantizeI16,
        gather: Kernel::GatherI16,
        linear: Kernel::LinearI16,
        set_pool: Kernel::SetPoolI16,
        attention: Kernel::AttentionI16,
        attention_set: Kernel::AttentionSetI16,
        scatter: Kernel::ScatterI16,
        resample_gather: Kernel::ResampleGatherI16,
        resample_scatter: Kernel::ResampleScatterI16,
        affine_relu: Kernel::AffineReluI16,
        input_skip: Kernel::InputSkipI16,
        head_pool: Kernel::HeadPoolI16,
        dequant: Kernel::DequantI16,
    };

    /// The kernels of a quantized precision (`None` for f32).
    pub fn of(precision: Precision) -> Option<&'static QuantKernels> {
        match precision {
            Precision::F32 => None,
            Precision::Int8 => Some(&Self::INT8),
            Precision::Int16x8 => Some(&Self::INT16X8),
        }
    }

    /// Every kernel of the mode.
    pub fn all(&self) -> [Kernel; 13] {
        [
            self.quantize,
            self.gather,
            self.linear,
            self.set_pool,
            self.attention,
            self.attention_set,
            self.scatter,
            self.resample_gather,
            self.resample_scatter,
            self.affine_relu,
            self.input_skip,
            self.head_pool,
            self.dequant,
        ]
    }
}

/// Threads per block of every launch (`DWS_THREADS` in common.cuh).
pub const THREADS: u32 = 256;
/// Rows and columns of a `linear_*` output tile (`LT` in quant.cuh).
pub const LINEAR_TILE: u32 = 32;
/// Dynamic shared memory a launch may ask for: 48 KiB (the most without
/// opting in) less room for the kernels' static shared arrays (at most 2 KiB
/// besides `linear_*`, which uses no dynamic shared memory).
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
            ("quant.cuh", QUANT),
            ("f32.cu", F32_SRC),
            ("int8.cu", INT8_SRC),
            ("int16x8.cu", INT16X8_SRC),
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
    fn module_sources_inline_their_headers() {
        for m in Module::ALL {
            let src = m.source();
            assert!(!src.contains("#include \"common.cuh\""));
            assert!(!src.contains("#include \"quant.cuh\""));
            assert!(!src.contains("#pragma once"));
            assert!(src.contains("struct Ctx"));
            assert_eq!(src.contains("struct Int8Mode"), m.quantized(), "{m:?}");
            // The emulator header is only reachable from the host branch.
            let host_branch = src.find("#include \"emulator.h\"").unwrap();
            let else_at = src[..host_branch].rfind("#else").unwrap();
            assert!(src[..else_at].contains("#if defined(__CUDACC__)"));
        }
    }

    /// The exponential tables of quant.cuh are `dws_core::quant`'s.
    #[test]
    fn exp_tables_match_the_core() {
        let table = |name: &str| -> Vec<u32> {
            let at = QUANT.find(&format!("{name}[")).unwrap();
            let open = at + QUANT[at..].find('{').unwrap();
            let close = open + QUANT[open..].find('}').unwrap();
            QUANT[open + 1..close]
                .split(',')
                .map(|v| v.trim().trim_end_matches('u').parse().unwrap())
                .collect()
        };
        assert_eq!(table("EXP_HI"), dws_core::quant::EXP_HI.to_vec());
        assert_eq!(table("EXP_LO"), dws_core::quant::EXP_LO.to_vec());
    }

    /// Each quantized mode lists its own module's kernels, once each, and
    /// both modes have the same kernels (instances of one template each).
    #[test]
    fn quantized_modes_list_every_kernel_of_their_module() {
        for (p, q) in [
            (Precision::Int8, QuantKernels::INT8),
            (Precision::Int16x8, QuantKernels::INT16X8),
        ] {
            let m = Module::of(p);
            assert_eq!(QuantKernels::of(p), Some(&q));
            let mut listed: Vec<_> = q.all().iter().map(|k| k.name()).collect();
            assert!(q.all().iter().all(|k| k.module() == m), "{m:?}");
            listed.sort();
            listed.dedup();
            assert_eq!(
                listed.len(),
                Kernel::ALL.iter().filter(|k| k.module() == m).count()
            );
            for (a, b) in q.all().iter().zip(QuantKernels::INT8.all()) {
                let stem = |k: &Kernel| k.name().rsplit_once('_').unwrap().0.to_string();
                assert_eq!(stem(a), stem(&b));
            }
        }
        assert_eq!(QuantKernels::of(Precision::F32), None);
    }

    #[test]
    fn threads_and_tile_match_the_sources() {
        assert!(COMMON.contains(&format!("#define DWS_THREADS {THREADS}")));
        assert!(QUANT.contains(&format!("#define LT {LINEAR_TILE}")));
    }
}
