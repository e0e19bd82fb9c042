//! Kernel arguments: `#[repr(C)]` mirrors of the structs in `kernels/common.cuh`
//! (same fields in the same order, no implicit padding: `Pod` checks that).
//!
//! Every kernel takes one struct by value whose first field is a [`Ctx`]; the
//! lowering fills everything else once, and the runtime patches the context
//! (arena and parameter addresses, batch) for every launch.
#![allow(missing_docs)]

use bytemuck::{Pod, Zeroable};

/// Location "none" (`DWS_NONE`).
pub const NONE: u64 = u64::MAX;
/// Bit 63 marks a byte offset into the parameter buffer (`DWS_PARAM_BIT`).
pub const PARAM_BIT: u64 = 1 << 63;

/// Addresses of the two device buffers and the batch of one launch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Ctx {
    pub arena: u64,
    pub params: u64,
    pub batch: i64,
}

/// How to read a map output (`map_value` in common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct MapOut {
    pub y: u64,
    pub bias: u64,
    pub sub: u64,
    pub resid: u64,
    pub ld: i32,
    pub n: i32,
    pub relu: i32,
    pub pad: i32,
}

impl MapOut {
    /// A map output that is read as is.
    pub fn plain(y: u64, ld: usize) -> Self {
        MapOut {
            y,
            bias: NONE,
            sub: NONE,
            resid: NONE,
            ld: ld as i32,
            n: 1,
            relu: 0,
            pad: 0,
        }
    }

    /// "No map output" (an unused `skip` operand).
    pub fn none() -> Self {
        MapOut::plain(NONE, 0)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Contrib {
    pub mo: MapOut,
    pub n: i32,
    pub m: i32,
    pub place: i32,
    pub unfold: i32,
    pub scale: f32,
    pub pad: i32,
}

/// `dws_core::quant::Requant` with a 32-bit shift.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Req {
    pub m: i32,
    pub shift: i32,
}

impl From<dws_core::quant::Requant> for Req {
    fn from(r: dws_core::quant::Requant) -> Self {
        Req {
            m: r.m,
            shift: r.shift as i32,
        }
    }
}

impl Req {
    /// The exact identity (`m = 2^30, shift = 30`).
    pub const IDENTITY: Req = Req {
        m: 1 << 30,
        shift: 30,
    };
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ContribQ {
    pub y: u64,
    pub n: i32,
    pub m: i32,
    pub place: i32,
    pub unfold: i32,
    pub req: Req,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HeadGroup {
    pub start: i32,
    pub count: i32,
    pub stride: i32,
    pub seg: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct NormArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub mean: u64,
    pub std: u64,
    pub out: u64,
    pub len: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GatherArgs {
    pub ctx: Ctx,
    pub src: u64,
    pub out: u64,
    pub src_stride: i64,
    pub src_off: i64,
    pub rows: i32,
    pub cols: i32,
    pub f: i32,
    pub n: i32,
    pub m: i32,
    pub pool_rows: i32,
    pub pool_cols: i32,
    pub set_axis: i32,
    pub fold: i32,
    pub red: i32,
    pub req: Req,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BiasActArgs {
    pub ctx: Ctx,
    pub y: u64,
    pub bias: u64,
    pub rows_per_sample: i64,
    pub cols: i32,
    pub relu: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SetPoolArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub out: u64,
    pub query: u64,
    pub groups_per_sample: i64,
    pub n: i32,
    pub k: i32,
    pub mode: i32,
    pub pad: i32,
    pub pooled: Req,
    pub score: Req,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttnArgs {
    pub ctx: Ctx,
    pub qkv: u64,
    pub bias: u64,
    pub out: u64,
    pub rows_per_sample: i64,
    pub n: i32,
    pub dv: i32,
    pub heads: i32,
    pub heads_per_pass: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ScatterArgs {
    pub ctx: Ctx,
    pub out: u64,
    pub contribs: u64,
    pub affine_scale: u64,
    pub affine_shift: u64,
    pub out_stride: i64,
    pub out_off: i64,
    pub rows: i32,
    pub cols: i32,
    pub f: i32,
    pub ncontrib: i32,
    pub relu: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ResGatherArgs {
    pub ctx: Ctx,
    pub src: u64,
    pub out: u64,
    pub src_stride: i64,
    pub din: i32,
    pub d1: i32,
    pub f: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ResScatterArgs {
    pub ctx: Ctx,
    pub mo: MapOut,
    pub skip: MapOut,
    pub out: u64,
    pub affine_scale: u64,
    pub affine_shift: u64,
    pub out_stride: i64,
    pub dout: i32,
    pub d1: i32,
    pub f: i32,
    pub combine: i32,
    pub relu: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AffineArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub scale: u64,
    pub shift: u64,
    pub bounds: u64,
    pub stride: i64,
    pub cells_total: i32,
    pub f: i32,
    pub ntensors: i32,
    pub relu: i32,
    pub has_affine: i32,
    pub shift_bits: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SkipArgs {
    pub ctx: Ctx,
    pub x0: u64,
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub bounds: u64,
    pub cur: u64,
    pub lin: u64,
    pub x0_stride: i64,
    pub x_stride: i64,
    pub cells_total: i32,
    pub fin: i32,
    pub fout: i32,
    pub ntensors: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HeadPoolArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub groups: u64,
    pub reqs: u64,
    pub out: u64,
    pub x_stride: i64,
    pub f: i32,
    pub ngroups: i32,
    pub red: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub mean: u64,
    pub std: u64,
    pub scales: u64,
    pub bounds: u64,
    pub out: u64,
    pub len: i64,
    pub ntensors: i32,
    pub pad: i32,
}

/// `linear_*` epilogues (`LINQ_*`).
pub const LINQ_OUT: i32 = 0;
pub const LINQ_SUB: i32 = 1;
pub const LINQ_REQ32: i32 = 2;
pub const LINQ_LOGITS: i32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LinearQArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub y: u64,
    pub sub: u64,
    pub req_m: u64,
    pub logit_scales: u64,
    pub rows_per_sample: i64,
    pub fin: i32,
    pub fout: i32,
    pub req: Req,
    pub mode: i32,
    pub relu: i32,
    pub sub_n: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttnQArgs {
    pub ctx: Ctx,
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub wo: u64,
    pub bo: u64,
    pub y_fc_m: u64,
    pub rows_per_sample: i64,
    pub n: i32,
    pub dv: i32,
    pub heads: i32,
    pub heads_per_pass: i32,
    pub score: Req,
    pub o_q: Req,
    pub o_av: Req,
    pub y_o: Req,
    pub y_fc: Req,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ScatterQArgs {
    pub ctx: Ctx,
    pub out: u64,
    pub contribs: u64,
    pub mult: u64,
    pub offs: u64,
    pub out_stride: i64,
    pub out_off: i64,
    pub rows: i32,
    pub cols: i32,
    pub f: i32,
    pub ncontrib: i32,
    pub out_req: Req,
    pub has_affine: i32,
    pub affine_shift: i32,
    pub relu: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ResScatterQArgs {
    pub ctx: Ctx,
    pub y: u64,
    pub skip: u64,
    pub out: u64,
    pub mult: u64,
    pub offs: u64,
    pub out_stride: i64,
    pub dout: i32,
    pub d1: i32,
    pub f: i32,
    pub combine: i32,
    pub r_up: Req,
    pub r_skip: Req,
    pub has_affine: i32,
    pub affine_shift: i32,
    pub relu: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct DequantArgs {
    pub ctx: Ctx,
    pub x: u64,
    pub scales: u64,
    pub bounds: u64,
    pub out: u64,
    pub x_stride: i64,
    pub len: i64,
    pub ntensors: i32,
    pub pad: i32,
}

/// Bytes of the largest argument struct a [`RawArgs`] holds.
pub const MAX_ARGS: usize = 256;

/// The bytes of one kernel's argument struct, 8-byte aligned (what the
/// driver copies into the kernel's parameter space).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct RawArgs {
    words: [u64; MAX_ARGS / 8],
    len: usize,
}

impl std::fmt::Debug for RawArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawArgs({} bytes)", self.len)
    }
}

impl RawArgs {
    /// Copies an argument struct (whose first field must be a [`Ctx`]).
    pub fn new<T: Pod>(args: &T) -> Self {
        let bytes = bytemuck::bytes_of(args);
        assert!(
            bytes.len() <= MAX_ARGS && bytes.len() >= std::mem::size_of::<Ctx>(),
            "kernel argument struct of {} bytes",
            bytes.len()
        );
        let mut words = [0u64; MAX_ARGS / 8];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        RawArgs {
            words,
            len: bytes.len(),
        }
    }

    /// The argument bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// A copy with the context replaced.
    pub fn with_ctx(&self, ctx: Ctx) -> Self {
        let mut out = *self;
        out.words[0] = ctx.arena;
        out.words[1] = ctx.params;
        out.words[2] = ctx.batch as u64;
        out
    }

    /// The context currently stored.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            arena: self.words[0],
            params: self.words[1],
            batch: self.words[2] as i64,
        }
    }

    /// The first word of the arguments, for the driver (which reads as many
    /// bytes as the kernel's parameter is long).
    pub fn as_ptr(&self) -> *const u64 {
        self.words.as_ptr()
    }
}

/// Bytes of the argument struct of a kernel (the Rust side of the pairing
/// the emulator checks against the C++ `sizeof`).
pub fn size_of_args(k: crate::kernels::Kernel) -> usize {
    use crate::kernels::Kernel::*;
    use std::mem::size_of;
    match k {
        NormalizeF32 => size_of::<NormArgs>(),
        GatherF32 | GatherI8 | GatherI16 => size_of::<GatherArgs>(),
        BiasActF32 => size_of::<BiasActArgs>(),
        SetPoolF32 | SetPoolI8 | SetPoolI16 => size_of::<SetPoolArgs>(),
        AttentionF32 | AttentionSetF32 => size_of::<AttnArgs>(),
        ScatterF32 => size_of::<ScatterArgs>(),
        ResampleGatherF32 | ResampleGatherI8 | ResampleGatherI16 => size_of::<ResGatherArgs>(),
        ResampleScatterF32 => size_of::<ResScatterArgs>(),
        AffineReluF32 | AffineReluI8 | AffineReluI16 => size_of::<AffineArgs>(),
        InputSkipF32 | InputSkipI8 | InputSkipI16 => size_of::<SkipArgs>(),
        HeadPoolF32 | HeadPoolI8 | HeadPoolI16 => size_of::<HeadPoolArgs>(),
        QuantizeI8 | QuantizeI16 => size_of::<QuantArgs>(),
        LinearI8 | LinearI16 => size_of::<LinearQArgs>(),
        AttentionI8 | AttentionSetI8 | AttentionI16 | AttentionSetI16 => size_of::<AttnQArgs>(),
        ScatterI8 | ScatterI16 => size_of::<ScatterQArgs>(),
        ResampleScatterI8 | ResampleScatterI16 => size_of::<ResScatterQArgs>(),
        DequantI8 | DequantI16 => size_of::<DequantArgs>(),
    }
}
