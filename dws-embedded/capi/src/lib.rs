//! `dws-capi`: the C ABI of dws (`include/dws.h`, `libdws.a`, `libdws.so`).
//!
//! A thin wrapper over [`dws_core`]: it allocates nothing, keeps no global state
//! and never unwinds into C. Every function checks its pointers and sizes and
//! answers with a [`dws_status`] code instead of crashing; a panic (which the core
//! is written never to reach) aborts on hosted targets and faults (`udf`) on
//! bare-metal Arm.
//!
//! The header is generated from this file with cbindgen (`cbindgen.toml`) and
//! committed; `check-header.sh` fails when it is stale.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The exported names follow C conventions (`dws_model`, `DWS_OK`).
#![allow(non_camel_case_types)]

// Hosted builds (the shared library, tests) link std for its panic runtime.
#[cfg(not(target_os = "none"))]
extern crate std;

use core::ffi::c_char;
use core::mem::{align_of, size_of};
use core::{ptr, slice};
use dws_core::blob::Precision;
use dws_core::case::CaseRepr;
use dws_core::plan::Output;
use dws_core::quantized::Act;
use dws_core::{Error, Model};

// ---------------------------------------------------------------------------
// Status codes
// ---------------------------------------------------------------------------

/// Result of every fallible dws call: `DWS_OK` (0) or one of the `DWS_ERR_*` codes.
///
/// A plain integer rather than a C enum, so its size does not depend on compiler
/// flags (`-fshort-enums`) and any value can be passed back to
/// `dws_status_string`. Codes are stable: new ones are only ever appended.
pub type dws_status = i32;

/// Success.
pub const DWS_OK: dws_status = 0;
/// A required pointer argument was NULL.
pub const DWS_ERR_NULL: dws_status = 1;
/// A caller buffer (case input copy, name, check output) is shorter than needed.
pub const DWS_ERR_BUFFER_TOO_SMALL: dws_status = 2;
/// The blob is shorter than its header or than the sections its header announces.
pub const DWS_ERR_TRUNCATED: dws_status = 3;
/// The blob does not start with the `DWSB` magic bytes.
pub const DWS_ERR_BAD_MAGIC: dws_status = 4;
/// The blob or case file was written in a format version this build cannot read.
pub const DWS_ERR_UNSUPPORTED_VERSION: dws_status = 5;
/// The blob checksum does not match: its bytes were corrupted.
pub const DWS_ERR_CHECKSUM: dws_status = 6;
/// The blob or case file has bytes after its end.
pub const DWS_ERR_TRAILING_BYTES: dws_status = 7;
/// A pointer is not aligned for its type: the blob must be 4-byte aligned,
/// `float` buffers 4-byte aligned, `dws_model`/`dws_case` storage aligned as
/// `uint64_t` (as every object of those types is).
pub const DWS_ERR_MISALIGNED: dws_status = 8;
/// The blob's plan (or a case file) could not be decoded.
pub const DWS_ERR_DECODE: dws_status = 9;
/// The plan (or a case file) is inconsistent: shapes, parameter references or op order.
pub const DWS_ERR_INVALID_PLAN: dws_status = 10;
/// A parameter reference points outside the blob's parameter section.
pub const DWS_ERR_PARAM_OUT_OF_BOUNDS: dws_status = 11;
/// `input_len` differs from `dws_model_input_len`.
pub const DWS_ERR_INPUT_LENGTH: dws_status = 12;
/// The input holds a NaN or an infinity.
pub const DWS_ERR_NON_FINITE_INPUT: dws_status = 13;
/// `output_len` is less than `dws_model_output_len`.
pub const DWS_ERR_OUTPUT_TOO_SMALL: dws_status = 14;
/// `scratch_len` is less than `dws_model_scratch_len`.
pub const DWS_ERR_SCRATCH_TOO_SMALL: dws_status = 15;
/// The blob's precision flags are unknown to this build, or the call needs a
/// model of another precision (e.g. an int8-input call on an f32 model).
pub const DWS_ERR_WRONG_PRECISION: dws_status = 16;
/// `dws_case_check`: an output is outside the reference tolerance (or is NaN).
pub const DWS_ERR_MISMATCH: dws_status = 17;
/// The `dws_model` / `dws_case` was never opened successfully (zeroed storage,
/// or the last open call on it failed).
pub const DWS_ERR_NOT_OPEN: dws_status = 18;
/// An index (a case input number) is out of range.
pub const DWS_ERR_INDEX_OUT_OF_RANGE: dws_status = 19;
/// Buffers that must be distinct (input, scratch, output) overlap in memory, or
/// the scratch or output overlaps the blob or the `dws_model` storage.
pub const DWS_ERR_OVERLAP: dws_status = 20;
/// An argument value is outside its domain (a length too large for the address
/// space).
pub const DWS_ERR_INVALID_ARGUMENT: dws_status = 21;
/// The core reported an error this version of the C ABI has no code for.
pub const DWS_ERR_UNKNOWN: dws_status = 22;

/// Maps a core error to its status code.
fn status_of(e: Error) -> dws_status {
    match e {
        Error::Truncated => DWS_ERR_TRUNCATED,
        Error::BadMagic => DWS_ERR_BAD_MAGIC,
        Error::UnsupportedVersion(_) => DWS_ERR_UNSUPPORTED_VERSION,
        Error::Checksum => DWS_ERR_CHECKSUM,
        Error::TrailingBytes => DWS_ERR_TRAILING_BYTES,
        Error::Misaligned => DWS_ERR_MISALIGNED,
        Error::Decode => DWS_ERR_DECODE,
        Error::InvalidPlan(_) => DWS_ERR_INVALID_PLAN,
        Error::ParamOutOfBounds => DWS_ERR_PARAM_OUT_OF_BOUNDS,
        Error::InputLength { .. } => DWS_ERR_INPUT_LENGTH,
        Error::NonFiniteInput => DWS_ERR_NON_FINITE_INPUT,
        Error::OutputLength { .. } => DWS_ERR_OUTPUT_TOO_SMALL,
        Error::ScratchTooSmall { .. } => DWS_ERR_SCRATCH_TOO_SMALL,
        Error::WrongPrecision => DWS_ERR_WRONG_PRECISION,
        // `Error` is non-exhaustive: a variant added to the core later.
        _ => DWS_ERR_UNKNOWN,
    }
}

/// A static, NUL-terminated English description of a status code.
///
/// # Parameters
/// - `status`: any value; codes this build does not know give "unknown dws status".
///
/// # Returns
/// A pointer to a string with static lifetime; never NULL; do not free it.
#[no_mangle]
pub extern "C" fn dws_status_string(status: dws_status) -> *const c_char {
    let s: &'static core::ffi::CStr = match status {
        DWS_OK => c"ok",
        DWS_ERR_NULL => c"a required pointer argument is NULL",
        DWS_ERR_BUFFER_TOO_SMALL => c"a caller buffer is too small",
        DWS_ERR_TRUNCATED => c"blob is truncated",
        DWS_ERR_BAD_MAGIC => c"not a dws model blob (bad magic bytes)",
        DWS_ERR_UNSUPPORTED_VERSION => c"unsupported blob or case format version",
        DWS_ERR_CHECKSUM => c"blob checksum mismatch (corrupted bytes)",
        DWS_ERR_TRAILING_BYTES => c"trailing bytes after the end of the blob or case",
        DWS_ERR_MISALIGNED => c"pointer is not aligned for its type (blobs need 4 bytes)",
        DWS_ERR_DECODE => c"plan or case could not be decoded",
        DWS_ERR_INVALID_PLAN => c"invalid model plan or case",
        DWS_ERR_PARAM_OUT_OF_BOUNDS => c"parameter reference out of bounds",
        DWS_ERR_INPUT_LENGTH => c"input length differs from the model's input length",
        DWS_ERR_NON_FINITE_INPUT => c"input contains NaN or infinity",
        DWS_ERR_OUTPUT_TOO_SMALL => c"output buffer is shorter than the model's output",
        DWS_ERR_SCRATCH_TOO_SMALL => c"scratch buffer is shorter than the model needs",
        DWS_ERR_WRONG_PRECISION => c"blob precision is unknown or does not suit the call",
        DWS_ERR_MISMATCH => c"output is outside the reference tolerance",
        DWS_ERR_NOT_OPEN => c"model or case was not opened successfully",
        DWS_ERR_INDEX_OUT_OF_RANGE => c"index out of range",
        DWS_ERR_OVERLAP => {
            c"input, scratch and output buffers overlap (each other, the blob or the model)"
        }
        DWS_ERR_INVALID_ARGUMENT => c"argument value out of range",
        DWS_ERR_UNKNOWN => c"unknown core error",
        _ => c"unknown dws status",
    };
    s.as_ptr()
}

// ---------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------

/// The blob format version this library reads (`dws_blob_format_version()`).
pub const DWS_BLOB_FORMAT_VERSION: u16 = 2;
const _: () = assert!(DWS_BLOB_FORMAT_VERSION == dws_core::blob::FORMAT_VERSION);

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version, e.g. "0.1.0".
///
/// # Returns
/// A static NUL-terminated string; never NULL; do not free it.
#[no_mangle]
pub extern "C" fn dws_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The blob format version this library reads (bytes 4..6 of a blob, little-endian).
///
/// Equals `DWS_BLOB_FORMAT_VERSION` of the header the caller compiled against
/// unless header and library are out of step.
#[no_mangle]
pub extern "C" fn dws_blob_format_version() -> u16 {
    dws_core::blob::FORMAT_VERSION
}

// ---------------------------------------------------------------------------
// Pointer helpers
// ---------------------------------------------------------------------------

/// Largest element count whose byte size fits in `isize` for elements of `T`.
fn fits<T>(len: usize) -> bool {
    len <= isize::MAX as usize / size_of::<T>().max(1)
}

/// Whether `[a, a + na)` and `[b, b + nb)` (in elements of `T`) share a byte.
fn overlaps<T>(a: *const T, na: usize, b: *const T, nb: usize) -> bool {
    let (a0, b0) = (a as usize, b as usize);
    let a1 = a0.saturating_add(na.saturating_mul(size_of::<T>()));
    let b1 = b0.saturating_add(nb.saturating_mul(size_of::<T>()));
    na != 0 && nb != 0 && a0 < b1 && b0 < a1
}

/// Whether `n` floats written at `p` would overlap the blob of `m` or the
/// storage `model` that holds it.
fn over_model(m: &Model<'_>, model: *const dws_model, p: *const f32, n: usize) -> bool {
    let blob = m.blob();
    overlaps(p.cast::<u8>(), 4 * n, blob.as_ptr(), blob.len())
        || overlaps(p.cast::<u8>(), 4 * n, model.cast::<u8>(), DWS_MODEL_SIZE)
}

/// A readable `f32` slice from C, after the NULL and alignment checks.
///
/// # Safety
/// When non-null and aligned, `p` must point to `len` readable floats that no
/// one writes while the slice lives.
unsafe fn floats<'a>(p: *const f32, len: usize) -> Result<&'a [f32], dws_status> {
    if p.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if !p.is_aligned() {
        return Err(DWS_ERR_MISALIGNED);
    }
    if !fits::<f32>(len) {
        return Err(DWS_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: `p` is non-null and aligned (checked above); the caller guarantees
    // `len` readable, unaliased-by-writers floats; `len * 4 <= isize::MAX` (checked).
    Ok(unsafe { slice::from_raw_parts(p, len) })
}

/// A writable `f32` slice from C, after the NULL and alignment checks.
///
/// # Safety
/// When non-null and aligned, `p` must point to `len` writable floats that
/// nothing else accesses while the slice lives.
unsafe fn floats_mut<'a>(p: *mut f32, len: usize) -> Result<&'a mut [f32], dws_status> {
    if p.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if !p.is_aligned() {
        return Err(DWS_ERR_MISALIGNED);
    }
    if !fits::<f32>(len) {
        return Err(DWS_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: `p` is non-null and aligned (checked above); the caller guarantees
    // `len` writable floats accessed by no one else; `len * 4 <= isize::MAX` (checked).
    Ok(unsafe { slice::from_raw_parts_mut(p, len) })
}

fn status(r: Result<(), dws_status>) -> dws_status {
    match r {
        Ok(()) => DWS_OK,
        Err(s) => s,
    }
}

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/// Size in 8-byte words of `dws_model` storage.
pub const DWS_MODEL_WORDS: usize = 96;
/// Size in bytes of `dws_model` storage (`sizeof(dws_model)`).
pub const DWS_MODEL_SIZE: usize = DWS_MODEL_WORDS * 8;

/// Caller-allocated storage for an opened model (no allocation happens in dws).
///
/// Declare it anywhere (stack, static, inside your own struct), preferably
/// zero-initialized (`dws_model m = {{0}};` or a static), and open it with
/// `dws_model_open`. Its contents are private. It borrows the blob it was opened
/// on: the blob must stay alive and unchanged while the model is used. It owns
/// nothing, so it needs no close call and may be copied by value; a copy borrows
/// the same blob. An opened model is read-only: several threads may run it at
/// once, each with its own scratch and output.
#[repr(C)]
pub struct dws_model {
    _opaque: [u64; DWS_MODEL_WORDS],
}

/// What `dws_model` storage holds once opened.
#[repr(C)]
struct ModelSlot {
    /// [`MODEL_TAG`] when `model` is valid, anything else otherwise.
    tag: u64,
    model: Model<'static>,
}

/// "DWSMODEL".
const MODEL_TAG: u64 = u64::from_le_bytes(*b"DWSMODEL");

const _: () = assert!(size_of::<ModelSlot>() <= size_of::<dws_model>());
const _: () = assert!(align_of::<ModelSlot>() <= align_of::<dws_model>());

/// Returns the opened model behind `m`.
///
/// # Safety
/// When non-null and aligned, `m` must point to readable `dws_model` storage
/// that was zero-initialized or passed to `dws_model_open`, and that is not
/// written while the returned reference lives.
unsafe fn model_ref<'m>(m: *const dws_model) -> Result<&'m Model<'static>, dws_status> {
    if m.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if !m.is_aligned() {
        return Err(DWS_ERR_MISALIGNED);
    }
    let slot = m.cast::<ModelSlot>();
    // SAFETY: `slot` is non-null and aligned for `ModelSlot` (align checked against
    // `dws_model` above and by the const asserts); the storage is
    // `DWS_MODEL_SIZE >= size_of::<ModelSlot>()` readable bytes whose first word is
    // initialized (zeroed or written by `dws_model_open`). Only the tag is read here.
    let tag = unsafe { ptr::addr_of!((*slot).tag).read() };
    if tag != MODEL_TAG {
        return Err(DWS_ERR_NOT_OPEN);
    }
    // SAFETY: the tag is only `MODEL_TAG` after `dws_model_open` wrote a whole valid
    // `ModelSlot`; the blob it borrows outlives the model (caller contract), so the
    // `'static` slices are valid for as long as the caller uses the model.
    Ok(unsafe { &(*slot).model })
}

/// Opens a model blob (a `model.dws` file produced by `dws convert`, or an int8
/// blob produced by `dws quantize`).
///
/// Checks the container (magic, version, lengths, CRC-32) and decodes and
/// validates the whole plan once; afterwards `dws_run_f32` only checks its buffers.
/// Nothing is copied or allocated: the model points into `blob`.
///
/// # Parameters
/// - `out`: storage to initialize (aligned as any `dws_model` object is).
///   On failure it is marked not open, so later calls on it return `DWS_ERR_NOT_OPEN`.
/// - `blob`: the blob bytes; must be 4-byte aligned (use an aligned allocation or
///   `_Alignas(16)` static; `DWS_ERR_MISALIGNED` otherwise). Borrowed, not copied:
///   must stay alive and unchanged for as long as `out` (or a copy of it) is used.
/// - `blob_len`: length of `blob` in bytes; exactly the blob, no trailing bytes.
///
/// # Returns
/// `DWS_OK`, `DWS_ERR_NULL`, `DWS_ERR_MISALIGNED`, `DWS_ERR_INVALID_ARGUMENT`, or a
/// blob error: `DWS_ERR_TRUNCATED`, `DWS_ERR_BAD_MAGIC`, `DWS_ERR_UNSUPPORTED_VERSION`,
/// `DWS_ERR_WRONG_PRECISION`, `DWS_ERR_CHECKSUM`, `DWS_ERR_TRAILING_BYTES`,
/// `DWS_ERR_DECODE`, `DWS_ERR_INVALID_PLAN`, `DWS_ERR_PARAM_OUT_OF_BOUNDS`.
///
/// # Safety
/// `out` must be NULL or point to writable `dws_model` storage; `blob` must be NULL
/// or point to `blob_len` readable bytes that outlive every use of the model.
#[no_mangle]
pub unsafe extern "C" fn dws_model_open(
    out: *mut dws_model,
    blob: *const u8,
    blob_len: usize,
) -> dws_status {
    if out.is_null() {
        return DWS_ERR_NULL;
    }
    if !out.is_aligned() {
        return DWS_ERR_MISALIGNED;
    }
    let slot = out.cast::<ModelSlot>();
    // SAFETY: `slot` is non-null and aligned (checked above, plus the const asserts),
    // and points to writable storage large enough for a `ModelSlot` (caller contract
    // and const asserts). Writing the tag reads nothing and marks the storage closed
    // until a model was fully written.
    unsafe { ptr::addr_of_mut!((*slot).tag).write(0) };
    if blob.is_null() {
        return DWS_ERR_NULL;
    }
    if !(blob as usize).is_multiple_of(4) {
        return DWS_ERR_MISALIGNED;
    }
    if !fits::<u8>(blob_len) {
        return DWS_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: `blob` is non-null and points to `blob_len` readable bytes that the
    // caller keeps alive and unchanged while the model is used (which is what the
    // unbounded `'static` lifetime stands for here); `blob_len <= isize::MAX` (checked).
    let bytes: &'static [u8] = unsafe { slice::from_raw_parts(blob, blob_len) };
    match Model::new_checked(bytes) {
        Ok(model) => {
            // SAFETY: as for the tag write above; `ModelSlot` fits the storage.
            // Nothing in the storage needs dropping (a `Model` owns nothing).
            unsafe {
                slot.write(ModelSlot {
                    tag: MODEL_TAG,
                    model,
                })
            };
            DWS_OK
        }
        Err(e) => status_of(e),
    }
}

/// Floats of scratch one `dws_run_f32` call needs (`scratch_len` argument).
///
/// For an int8 model the scratch holds integers: the count is then in 4-byte
/// words, still passed as a `float` buffer of that many elements.
///
/// # Parameters
/// - `model`: an opened model.
///
/// # Returns
/// The element count (multiply by `sizeof(float)` for bytes), or 0 when `model`
/// is NULL, misaligned or not open.
///
/// # Safety
/// `model` must be NULL or point to `dws_model` storage that was zero-initialized
/// or passed to `dws_model_open`.
#[no_mangle]
pub unsafe extern "C" fn dws_model_scratch_len(model: *const dws_model) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.scratch_len())
}

/// Floats of one input (`input_len` argument of `dws_run_f32`).
///
/// The input is the input network's weight space flattened in upstream order:
/// `W_0..W_{L-1}` (each `[d_i][d_{i+1}][F]`), then `b_0..b_{L-1}` (each `[d_{i+1}][F]`).
///
/// # Parameters
/// - `model`: an opened model.
///
/// # Returns
/// The element count, or 0 when `model` is NULL, misaligned or not open.
///
/// # Safety
/// As `dws_model_scratch_len`.
#[no_mangle]
pub unsafe extern "C" fn dws_model_input_len(model: *const dws_model) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.input_len())
}

/// Floats of one output: the class logits, or the output weight space (same
/// layout as the input, with the model's output features per entry).
///
/// # Parameters
/// - `model`: an opened model.
///
/// # Returns
/// The element count, or 0 when `model` is NULL, misaligned or not open.
///
/// # Safety
/// As `dws_model_scratch_len`.
#[no_mangle]
pub unsafe extern "C" fn dws_model_output_len(model: *const dws_model) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.output_len())
}

/// Most entries of `dws_info::dims` (`d_0..d_L` for up to 16 weight matrices).
pub const DWS_MAX_DIMS: usize = 17;
const _: () = assert!(DWS_MAX_DIMS == dws_core::plan::MAX_LAYERS + 1);

/// Model arithmetic: f32 parameters and activations (blob flags 0).
pub const DWS_PRECISION_F32: u32 = 0;
/// Model arithmetic: int8 weights and activations with int32 accumulation (blob
/// flags 1, written by `dws quantize`). `dws_run_f32` quantizes its f32 input
/// at the boundary and returns f32 outputs.
pub const DWS_PRECISION_I8: u32 = 1;
/// Model arithmetic "16x8": int8 weights, int16 activations, int32/int64
/// accumulation (blob flags 2, written by `dws quantize --activations int16`).
/// `dws_run_f32` quantizes its f32 input at the boundary and returns f32
/// outputs; `dws_run_i16` takes int16 input.
pub const DWS_PRECISION_I16X8: u32 = 2;

/// What an opened model computes and needs (`dws_model_info` fills it in).
#[repr(C)]
pub struct dws_info {
    /// Floats of one input (as `dws_model_input_len`).
    pub input_len: usize,
    /// Floats of one output (as `dws_model_output_len`).
    pub output_len: usize,
    /// Floats of scratch per call (as `dws_model_scratch_len`).
    pub scratch_len: usize,
    /// Bytes of the blob's parameter section (f32 values, or int8 weights with
    /// their int32/f32 companions).
    pub param_bytes: usize,
    /// Multiply-adds per inference.
    pub macs: u64,
    /// Features per entry of the input weight space (`F`).
    pub input_features: u32,
    /// Weight matrices `L` of the input network.
    pub num_weight_matrices: u32,
    /// `d_0..d_L` of the input network (`num_weight_matrices + 1` entries, the rest 0).
    pub dims: [u32; DWS_MAX_DIMS],
    /// Equivariant (DWS) layers in the model.
    pub num_dws_layers: u32,
    /// True for a classifier (`DWSModelForClassification`, output = logits),
    /// false for a weight-space model (`DWSModel`).
    pub is_classifier: bool,
    /// Classes of a classifier (`output_len`), 0 otherwise.
    pub num_classes: u32,
    /// Features per output entry of a weight-space model, 0 for a classifier.
    pub output_features: u32,
    /// `DWS_PRECISION_F32`, `DWS_PRECISION_I8` or `DWS_PRECISION_I16X8`.
    pub precision: u32,
}

/// Describes an opened model.
///
/// # Parameters
/// - `model`: an opened model.
/// - `info`: where to write the description (aligned as any `dws_info`
///   object); written only on `DWS_OK`.
///
/// # Returns
/// `DWS_OK`, `DWS_ERR_NULL`, `DWS_ERR_MISALIGNED` or `DWS_ERR_NOT_OPEN`.
///
/// # Safety
/// `model` as for `dws_model_scratch_len`; `info` must be NULL or point to
/// writable `dws_info` storage.
#[no_mangle]
pub unsafe extern "C" fn dws_model_info(
    model: *const dws_model,
    info: *mut dws_info,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    let m = match unsafe { model_ref(model) } {
        Ok(m) => m,
        Err(s) => return s,
    };
    if info.is_null() {
        return DWS_ERR_NULL;
    }
    if !info.is_aligned() {
        return DWS_ERR_MISALIGNED;
    }
    let spec = m.spec();
    let lay = m.layout();
    let mut dims = [0u32; DWS_MAX_DIMS];
    for (d, s) in dims.iter_mut().zip(m.dims()) {
        *d = *s;
    }
    let (is_classifier, num_classes, output_features) = match spec.output {
        Output::Logits { classes } => (true, classes, 0),
        Output::WeightSpace { features } => (false, 0, features),
    };
    let value = dws_info {
        input_len: m.input_len(),
        output_len: m.output_len(),
        scratch_len: m.scratch_len(),
        param_bytes: m.param_bytes().len(),
        macs: lay.macs,
        input_features: spec.input_features,
        num_weight_matrices: m.dims().len().saturating_sub(1) as u32,
        dims,
        num_dws_layers: lay.dws_layers as u32,
        is_classifier,
        num_classes,
        output_features,
        precision: match m.precision() {
            Precision::F32 => DWS_PRECISION_F32,
            Precision::Int8 => DWS_PRECISION_I8,
            Precision::Int16x8 => DWS_PRECISION_I16X8,
        },
    };
    // SAFETY: `info` is non-null and aligned (checked above) and points to writable
    // `dws_info` storage (caller contract); `write` does not read the old value.
    unsafe { info.write(value) };
    DWS_OK
}

/// Runs one inference with f32 input and output.
///
/// On an f32 model this is the f32 forward pass; on an int8 or 16x8 model
/// (`DWS_PRECISION_I8`, `DWS_PRECISION_I16X8`) the input is quantized at the
/// boundary and the integer path runs, bit-exact with every other dws backend.
///
/// # Parameters
/// - `model`: an opened model.
/// - `input`: `input_len` floats, the weight space (see `dws_model_input_len`);
///   read only; must be finite (`DWS_ERR_NON_FINITE_INPUT`).
/// - `input_len`: must equal `dws_model_input_len(model)` (`DWS_ERR_INPUT_LENGTH`).
/// - `scratch`: working memory of at least `dws_model_scratch_len(model)` floats;
///   its contents on entry do not matter and are garbage afterwards. Reuse it freely
///   between calls, but not from two threads at once.
/// - `scratch_len`: floats available at `scratch` (`DWS_ERR_SCRATCH_TOO_SMALL`).
/// - `output`: receives `dws_model_output_len(model)` floats; elements past that are
///   untouched.
/// - `output_len`: floats available at `output` (`DWS_ERR_OUTPUT_TOO_SMALL`).
///
/// All three buffers must be 4-byte aligned (`DWS_ERR_MISALIGNED`) and the parts used
/// must not overlap each other, the blob or the model (`DWS_ERR_OVERLAP`). Only the first `dws_model_input_len`,
/// `dws_model_scratch_len` and `dws_model_output_len` elements of them are
/// accessed, even when the lengths given are larger.
///
/// # Returns
/// `DWS_OK` with `output` written, or an error with `output` unspecified:
/// `DWS_ERR_NULL`, `DWS_ERR_NOT_OPEN`, `DWS_ERR_MISALIGNED`, `DWS_ERR_INPUT_LENGTH`,
/// `DWS_ERR_OUTPUT_TOO_SMALL`, `DWS_ERR_SCRATCH_TOO_SMALL`, `DWS_ERR_OVERLAP`,
/// `DWS_ERR_NON_FINITE_INPUT`.
///
/// # Safety
/// `model` as for `dws_model_scratch_len`. Each buffer pointer must be NULL or point
/// to at least the number of floats its length argument states, readable (`input`)
/// or writable (`scratch`, `output`), and not accessed elsewhere during the call.
#[no_mangle]
pub unsafe extern "C" fn dws_run_f32(
    model: *const dws_model,
    input: *const f32,
    input_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
    output: *mut f32,
    output_len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    status(unsafe {
        run_f32(
            model,
            input,
            input_len,
            scratch,
            scratch_len,
            output,
            output_len,
        )
    })
}

/// `dws_run_f32` with `?`.
///
/// # Safety
/// As `dws_run_f32`.
unsafe fn run_f32(
    model: *const dws_model,
    input: *const f32,
    input_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
    output: *mut f32,
    output_len: usize,
) -> Result<(), dws_status> {
    // SAFETY: forwarded caller contract.
    let m = unsafe { model_ref(model) }?;
    if input.is_null() || scratch.is_null() || output.is_null() {
        return Err(DWS_ERR_NULL);
    }
    let (ni, ns, no) = (m.input_len(), m.scratch_len(), m.output_len());
    if input_len != ni {
        return Err(DWS_ERR_INPUT_LENGTH);
    }
    if output_len < no {
        return Err(DWS_ERR_OUTPUT_TOO_SMALL);
    }
    if scratch_len < ns {
        return Err(DWS_ERR_SCRATCH_TOO_SMALL);
    }
    let scratch_c = scratch.cast_const();
    let output_c = output.cast_const();
    if overlaps(input, ni, scratch_c, ns)
        || overlaps(input, ni, output_c, no)
        || overlaps(scratch_c, ns, output_c, no)
        || over_model(m, model, scratch_c, ns)
        || over_model(m, model, output_c, no)
    {
        return Err(DWS_ERR_OVERLAP);
    }
    // SAFETY: the caller provides at least `input_len == ni` readable floats at
    // `input`, `scratch_len >= ns` and `output_len >= no` writable floats at
    // `scratch` and `output`; the three ranges used are disjoint (checked above), so
    // the shared and the two exclusive slices do not alias.
    let (input, scratch, output) = unsafe {
        (
            floats(input, ni)?,
            floats_mut(scratch, ns)?,
            floats_mut(output, no)?,
        )
    };
    m.run(input, scratch, output).map(|_| ()).map_err(status_of)
}

/// Runs one inference of an int8 model on an input that is already quantized
/// (from a sensor, or stored in flash as int8).
///
/// Element `i` of weight-space tensor `t` has the value `input[i] * scales[t]`;
/// tensors are ordered `W_0..W_{L-1}`, then `b_0..b_{L-1}`. The input is brought
/// to the model's own input scales at the boundary (see `docs/quantization.md`),
/// then the integer path runs, bit-exact with every dws backend.
///
/// # Parameters
/// - `model`: an opened int8 model (`DWS_ERR_WRONG_PRECISION` for an f32 or
///   16x8 model; a 16x8 model takes `dws_run_i16`).
/// - `input`: `input_len` int8 values in the layout of `dws_run_f32`'s input; read only.
/// - `input_len`: must equal `dws_model_input_len(model)` (`DWS_ERR_INPUT_LENGTH`).
/// - `scales`: one finite scale per weight-space tensor (`2 * num_weight_matrices`
///   of `dws_model_info`); read only. Any sign: the values are `input[i] * scales[t]`.
/// - `n_scales`: number of scales (`DWS_ERR_INPUT_LENGTH` when it is not `2L`).
/// - `scratch`, `scratch_len`, `output`, `output_len`: as for `dws_run_f32`.
///
/// # Returns
/// `DWS_OK` with `output` written, or an error with `output` unspecified:
/// `DWS_ERR_NULL`, `DWS_ERR_NOT_OPEN`, `DWS_ERR_MISALIGNED`, `DWS_ERR_WRONG_PRECISION`,
/// `DWS_ERR_INPUT_LENGTH`, `DWS_ERR_OUTPUT_TOO_SMALL`, `DWS_ERR_SCRATCH_TOO_SMALL`,
/// `DWS_ERR_OVERLAP`, `DWS_ERR_NON_FINITE_INPUT` (a scale is NaN or infinite).
///
/// # Safety
/// `model` as for `dws_model_scratch_len`. `input` must be NULL or point to
/// `input_len` readable bytes, `scales` NULL or to `n_scales` readable floats;
/// `scratch` and `output` as for `dws_run_f32`.
#[no_mangle]
pub unsafe extern "C" fn dws_run_i8(
    model: *const dws_model,
    input: *const i8,
    input_len: usize,
    scales: *const f32,
    n_scales: usize,
    scratch: *mut f32,
    scratch_len: usize,
    output: *mut f32,
    output_len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    status(unsafe {
        run_q(
            model,
            input,
            input_len,
            scales,
            n_scales,
            scratch,
            scratch_len,
            output,
            output_len,
        )
    })
}

/// Runs one inference of a 16x8 model on an input that is already quantized
/// to int16: `dws_run_i8` for int16 values.
///
/// # Parameters
/// - `model`: an opened 16x8 model (`DWS_ERR_WRONG_PRECISION` otherwise).
/// - `input`: `input_len` int16 values (2-byte aligned, `DWS_ERR_MISALIGNED`)
///   in the layout of `dws_run_f32`'s input; read only.
/// - the rest as for `dws_run_i8`.
///
/// # Returns
/// As `dws_run_i8`.
///
/// # Safety
/// As `dws_run_i8`, with `input` pointing to `input_len` readable int16 values.
#[no_mangle]
pub unsafe extern "C" fn dws_run_i16(
    model: *const dws_model,
    input: *const i16,
    input_len: usize,
    scales: *const f32,
    n_scales: usize,
    scratch: *mut f32,
    scratch_len: usize,
    output: *mut f32,
    output_len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    status(unsafe {
        run_q(
            model,
            input,
            input_len,
            scales,
            n_scales,
            scratch,
            scratch_len,
            output,
            output_len,
        )
    })
}

/// `dws_run_i8` and `dws_run_i16` with `?`: a quantized input of `A`.
///
/// # Safety
/// As `dws_run_i8`, with `input` pointing to `input_len` readable values of `A`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_q<A: Act>(
    model: *const dws_model,
    input: *const A,
    input_len: usize,
    scales: *const f32,
    n_scales: usize,
    scratch: *mut f32,
    scratch_len: usize,
    output: *mut f32,
    output_len: usize,
) -> Result<(), dws_status> {
    // SAFETY: forwarded caller contract.
    let m = unsafe { model_ref(model) }?;
    if input.is_null() || scales.is_null() || scratch.is_null() || output.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if m.precision() != A::PRECISION {
        return Err(DWS_ERR_WRONG_PRECISION);
    }
    if !input.is_aligned() {
        return Err(DWS_ERR_MISALIGNED);
    }
    let (ni, ns, no) = (m.input_len(), m.scratch_len(), m.output_len());
    if input_len != ni {
        return Err(DWS_ERR_INPUT_LENGTH);
    }
    if output_len < no {
        return Err(DWS_ERR_OUTPUT_TOO_SMALL);
    }
    if scratch_len < ns {
        return Err(DWS_ERR_SCRATCH_TOO_SMALL);
    }
    if n_scales != 2 * m.spec().dims.len().saturating_sub(1) {
        return Err(DWS_ERR_INPUT_LENGTH);
    }
    if !fits::<A>(ni) {
        return Err(DWS_ERR_INVALID_ARGUMENT);
    }
    let a = size_of::<A>();
    let (scratch_c, output_c) = (scratch.cast_const(), output.cast_const());
    let (input_b, scratch_b, output_b, scales_b) = (
        input.cast::<u8>(),
        scratch_c.cast::<u8>(),
        output_c.cast::<u8>(),
        scales.cast::<u8>(),
    );
    if overlaps(input_b, a * ni, scratch_b, 4 * ns)
        || overlaps(input_b, a * ni, output_b, 4 * no)
        || overlaps(scratch_c, ns, output_c, no)
        || overlaps(scales_b, 4 * n_scales, scratch_b, 4 * ns)
        || overlaps(scales_b, 4 * n_scales, output_b, 4 * no)
        || over_model(m, model, scratch_c, ns)
        || over_model(m, model, output_c, no)
    {
        return Err(DWS_ERR_OVERLAP);
    }
    // SAFETY: `input` is non-null and aligned (checked) and points to
    // `input_len == ni` readable values (caller contract); `ni * size_of::<A>()
    // <= isize::MAX` (checked).
    let input = unsafe { slice::from_raw_parts(input, ni) };
    // SAFETY: the caller provides `n_scales` readable floats at `scales`, and
    // `scratch_len >= ns` and `output_len >= no` writable floats at `scratch` and
    // `output`; the ranges used are disjoint (checked above).
    let (scales, scratch, output) = unsafe {
        (
            floats(scales, n_scales)?,
            floats_mut(scratch, ns)?,
            floats_mut(output, no)?,
        )
    };
    m.run_quantized(input, scales, scratch, output)
        .map(|_| ())
        .map_err(status_of)
}

// ---------------------------------------------------------------------------
// Reference cases
// ---------------------------------------------------------------------------

/// Size in 8-byte words of `dws_case` storage.
pub const DWS_CASE_WORDS: usize = 48;
/// Size in bytes of `dws_case` storage (`sizeof(dws_case)`).
pub const DWS_CASE_SIZE: usize = DWS_CASE_WORDS * 8;

/// Caller-allocated storage for an opened reference case (a `case.bin` file of
/// the test fixtures: a batch of inputs and the outputs upstream PyTorch produced).
///
/// Same rules as `dws_model`: private contents, preferably zero-initialized, no
/// close call, may be copied; it borrows the case bytes, which must stay alive
/// and unchanged while it is used.
#[repr(C)]
pub struct dws_case {
    _opaque: [u64; DWS_CASE_WORDS],
}

#[repr(C)]
struct CaseSlot {
    /// [`CASE_TAG`] when `case` is valid.
    tag: u64,
    case: CaseRepr<'static>,
}

/// "DWSCASE!".
const CASE_TAG: u64 = u64::from_le_bytes(*b"DWSCASE!");

const _: () = assert!(size_of::<CaseSlot>() <= size_of::<dws_case>());
const _: () = assert!(align_of::<CaseSlot>() <= align_of::<dws_case>());

/// Returns the opened case behind `c`.
///
/// # Safety
/// When non-null and aligned, `c` must point to readable `dws_case` storage that
/// was zero-initialized or passed to `dws_case_open`, not written while the
/// reference lives.
unsafe fn case_ref<'c>(c: *const dws_case) -> Result<&'c CaseRepr<'static>, dws_status> {
    if c.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if !c.is_aligned() {
        return Err(DWS_ERR_MISALIGNED);
    }
    let slot = c.cast::<CaseSlot>();
    // SAFETY: non-null, aligned (checked, const asserts), at least one initialized
    // word of readable storage (caller contract); only the tag is read.
    let tag = unsafe { ptr::addr_of!((*slot).tag).read() };
    if tag != CASE_TAG {
        return Err(DWS_ERR_NOT_OPEN);
    }
    // SAFETY: the tag is `CASE_TAG` only after `dws_case_open` wrote a whole valid
    // `CaseSlot`, whose borrowed bytes the caller keeps alive.
    Ok(unsafe { &(*slot).case })
}

/// Opens a reference case file (`case.bin` or `case_int8.bin`, a postcard
/// `dws_core::case::CaseRepr`).
///
/// # Parameters
/// - `out`: storage to initialize (aligned as any `dws_case` object is);
///   marked not open on failure.
/// - `bytes`: the file's bytes; any alignment. Borrowed, not copied: must stay
///   alive and unchanged while `out` is used.
/// - `len`: length of `bytes`.
///
/// # Returns
/// `DWS_OK`, `DWS_ERR_NULL`, `DWS_ERR_MISALIGNED` (`out`), `DWS_ERR_INVALID_ARGUMENT`,
/// `DWS_ERR_DECODE`, `DWS_ERR_UNSUPPORTED_VERSION`, `DWS_ERR_TRAILING_BYTES` or
/// `DWS_ERR_INVALID_PLAN` (array sizes disagree).
///
/// # Safety
/// `out` must be NULL or point to writable `dws_case` storage; `bytes` must be NULL
/// or point to `len` readable bytes that outlive every use of the case.
#[no_mangle]
pub unsafe extern "C" fn dws_case_open(
    out: *mut dws_case,
    bytes: *const u8,
    len: usize,
) -> dws_status {
    if out.is_null() {
        return DWS_ERR_NULL;
    }
    if !out.is_aligned() {
        return DWS_ERR_MISALIGNED;
    }
    let slot = out.cast::<CaseSlot>();
    // SAFETY: non-null, aligned, writable storage of at least `size_of::<CaseSlot>()`
    // bytes (checked, caller contract, const asserts); the write reads nothing.
    unsafe { ptr::addr_of_mut!((*slot).tag).write(0) };
    if bytes.is_null() {
        return DWS_ERR_NULL;
    }
    if !fits::<u8>(len) {
        return DWS_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: `bytes` is non-null with `len` readable bytes that the caller keeps
    // alive and unchanged while the case is used; `len <= isize::MAX` (checked).
    let bytes: &'static [u8] = unsafe { slice::from_raw_parts(bytes, len) };
    match CaseRepr::new_checked(bytes) {
        Ok(case) => {
            // SAFETY: as for the tag write above.
            unsafe {
                slot.write(CaseSlot {
                    tag: CASE_TAG,
                    case,
                })
            };
            DWS_OK
        }
        Err(e) => status_of(e),
    }
}

/// Number of inputs in an opened case, or 0 when `c` is NULL, misaligned or not open.
///
/// # Safety
/// `c` must be NULL or point to `dws_case` storage that was zero-initialized or
/// passed to `dws_case_open`.
#[no_mangle]
pub unsafe extern "C" fn dws_case_batch(c: *const dws_case) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { case_ref(c) }.map_or(0, |c| c.batch as usize)
}

/// Floats of one input of the case (equals the model's `dws_model_input_len`),
/// or 0 when `c` is NULL, misaligned or not open.
///
/// # Safety
/// As `dws_case_batch`.
#[no_mangle]
pub unsafe extern "C" fn dws_case_input_len(c: *const dws_case) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { case_ref(c) }.map_or(0, |c| c.input_len as usize)
}

/// Floats of one expected output (equals the model's `dws_model_output_len`),
/// or 0 when `c` is NULL, misaligned or not open.
///
/// # Safety
/// As `dws_case_batch`.
#[no_mangle]
pub unsafe extern "C" fn dws_case_output_len(c: *const dws_case) -> usize {
    // SAFETY: forwarded caller contract.
    unsafe { case_ref(c) }.map_or(0, |c| c.output_len as usize)
}

/// Copies the case's name (the fixture folder name) as a NUL-terminated string.
///
/// # Parameters
/// - `c`: an opened case.
/// - `buf`: receives the name and a terminating NUL.
/// - `buf_len`: bytes available at `buf`. If the name does not fit, as much as fits
///   is written, still NUL-terminated when `buf_len > 0`, and
///   `DWS_ERR_BUFFER_TOO_SMALL` is returned.
///
/// # Returns
/// `DWS_OK`, `DWS_ERR_NULL`, `DWS_ERR_MISALIGNED`, `DWS_ERR_NOT_OPEN`,
/// `DWS_ERR_INVALID_ARGUMENT` or `DWS_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `c` as for `dws_case_batch`; `buf` must be NULL or point to `buf_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dws_case_name(
    c: *const dws_case,
    buf: *mut c_char,
    buf_len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    let case = match unsafe { case_ref(c) } {
        Ok(c) => c,
        Err(s) => return s,
    };
    if buf.is_null() {
        return DWS_ERR_NULL;
    }
    if !fits::<u8>(buf_len) {
        return DWS_ERR_INVALID_ARGUMENT;
    }
    if buf_len == 0 {
        return DWS_ERR_BUFFER_TOO_SMALL;
    }
    // SAFETY: `buf` is non-null with `buf_len` writable bytes (caller contract),
    // `buf_len <= isize::MAX` (checked); `c_char` has the layout of `u8`.
    let out = unsafe { slice::from_raw_parts_mut(buf.cast::<u8>(), buf_len) };
    let name = case.name.as_bytes();
    let n = name.len().min(buf_len - 1);
    out[..n].copy_from_slice(&name[..n]);
    out[n] = 0;
    if n < name.len() {
        DWS_ERR_BUFFER_TOO_SMALL
    } else {
        DWS_OK
    }
}

/// Copies input `k` of the case into `out`.
///
/// # Parameters
/// - `c`: an opened case.
/// - `k`: input number, `0 <= k < dws_case_batch(c)` (`DWS_ERR_INDEX_OUT_OF_RANGE`).
/// - `out`: receives `dws_case_input_len(c)` floats (4-byte aligned); elements past
///   that are untouched.
/// - `out_len`: floats available at `out` (`DWS_ERR_BUFFER_TOO_SMALL` if fewer).
///
/// # Returns
/// `DWS_OK`, `DWS_ERR_NULL`, `DWS_ERR_MISALIGNED`, `DWS_ERR_NOT_OPEN`,
/// `DWS_ERR_INDEX_OUT_OF_RANGE` or `DWS_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `c` as for `dws_case_batch`; `out` must be NULL or point to `out_len` writable
/// floats not accessed elsewhere during the call, and not inside the case bytes.
#[no_mangle]
pub unsafe extern "C" fn dws_case_input(
    c: *const dws_case,
    k: usize,
    out: *mut f32,
    out_len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    status(unsafe { case_input(c, k, out, out_len) })
}

/// `dws_case_input` with `?`.
///
/// # Safety
/// As `dws_case_input`.
unsafe fn case_input(
    c: *const dws_case,
    k: usize,
    out: *mut f32,
    out_len: usize,
) -> Result<(), dws_status> {
    // SAFETY: forwarded caller contract.
    let case = unsafe { case_ref(c) }?;
    if out.is_null() {
        return Err(DWS_ERR_NULL);
    }
    if k >= case.batch as usize {
        return Err(DWS_ERR_INDEX_OUT_OF_RANGE);
    }
    let n = case.input_len as usize;
    if out_len < n {
        return Err(DWS_ERR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller provides `out_len >= n` writable floats at `out` that
    // nothing else accesses during the call.
    let out = unsafe { floats_mut(out, n) }?;
    case.input(k, out).map(|_| ()).map_err(status_of)
}

/// Details of one `dws_case_check_detail` comparison.
#[repr(C)]
pub struct dws_check_report {
    /// On success, the worst `|actual - expected| / allowed` over the output
    /// (`<= 1`); on `DWS_ERR_MISMATCH`, `diff / allowed` of the first failing
    /// element (may be infinite or NaN).
    pub worst: f32,
    /// On mismatch: the `|actual - expected|` of the first failing element.
    pub diff: f32,
    /// On mismatch: the allowed difference for that element's tensor
    /// (`1e-4 * max |expected|` over the tensor and the batch).
    pub allowed: f32,
    /// On mismatch: output tensor index (logits = 0; else `W_0..`, then `b_0..`).
    pub tensor: usize,
    /// On mismatch: element index within the whole output.
    pub index: usize,
}

/// Checks output `actual` of input `k` against the case's expected output with
/// the reference suite's tolerance; see `dws_case_check_detail`.
///
/// # Safety
/// As `dws_case_check_detail` with `report` NULL.
#[no_mangle]
pub unsafe extern "C" fn dws_case_check(
    c: *const dws_case,
    k: usize,
    actual: *const f32,
    len: usize,
) -> dws_status {
    // SAFETY: forwarded caller contract; a NULL report is allowed.
    unsafe { dws_case_check_detail(c, k, actual, len, ptr::null_mut()) }
}

/// Checks output `actual` of input `k` against the case's expected output.
///
/// For every output tensor a result passes when
/// `max |actual - expected| <= 1e-4 * max |expected|` (over that tensor and the
/// whole batch; int8 golden cases store a zero scale, so they demand exact
/// equality); a NaN anywhere fails.
///
/// # Parameters
/// - `c`: an opened case.
/// - `k`: input number, `0 <= k < dws_case_batch(c)` (`DWS_ERR_INDEX_OUT_OF_RANGE`).
/// - `actual`: the model's output for input `k` (4-byte aligned); read only.
/// - `len`: floats at `actual`; at least `dws_case_output_len(c)`
///   (`DWS_ERR_BUFFER_TOO_SMALL`), extra elements are ignored.
/// - `report`: NULL, or where to write details (written on `DWS_OK` and
///   `DWS_ERR_MISMATCH`, untouched otherwise).
///
/// # Returns
/// `DWS_OK` within tolerance, `DWS_ERR_MISMATCH` outside it, or `DWS_ERR_NULL`,
/// `DWS_ERR_MISALIGNED`, `DWS_ERR_NOT_OPEN`, `DWS_ERR_INDEX_OUT_OF_RANGE`,
/// `DWS_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `c` as for `dws_case_batch`; `actual` must be NULL or point to `len` readable
/// floats; `report` must be NULL or point to writable `dws_check_report` storage.
#[no_mangle]
pub unsafe extern "C" fn dws_case_check_detail(
    c: *const dws_case,
    k: usize,
    actual: *const f32,
    len: usize,
    report: *mut dws_check_report,
) -> dws_status {
    // SAFETY: forwarded caller contract.
    let case = match unsafe { case_ref(c) } {
        Ok(c) => c,
        Err(s) => return s,
    };
    if actual.is_null() {
        return DWS_ERR_NULL;
    }
    if !report.is_null() && !report.is_aligned() {
        return DWS_ERR_MISALIGNED;
    }
    if k >= case.batch as usize {
        return DWS_ERR_INDEX_OUT_OF_RANGE;
    }
    let n = case.output_len as usize;
    if len < n {
        return DWS_ERR_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller provides `len >= n` readable floats at `actual`.
    let actual = match unsafe { floats(actual, n) } {
        Ok(a) => a,
        Err(s) => return s,
    };
    let (st, value) = match case.check(k, actual) {
        Ok(worst) => (
            DWS_OK,
            dws_check_report {
                worst,
                diff: 0.0,
                allowed: 0.0,
                tensor: 0,
                index: 0,
            },
        ),
        Err(m) => (
            DWS_ERR_MISMATCH,
            dws_check_report {
                worst: m.diff / m.allowed,
                diff: m.diff,
                allowed: m.allowed,
                tensor: m.tensor,
                index: m.index,
            },
        ),
    };
    if !report.is_null() {
        // SAFETY: `report` is non-null and aligned (checked above) and points to
        // writable `dws_check_report` storage (caller contract).
        unsafe { report.write(value) };
    }
    st
}

// ---------------------------------------------------------------------------
// Bare-metal panic handler
// ---------------------------------------------------------------------------

/// The core is written never to panic; should it anyway, fault at once
/// (`udf` raises a HardFault that the firmware's handler reports).
#[cfg(all(target_os = "none", target_arch = "arm", feature = "panic-handler"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: `udf` only raises an exception; it touches no memory or registers
    // that Rust relies on, and never returns.
    unsafe { core::arch::asm!("udf #0", options(noreturn, nomem, nostack)) }
}

/// The core is written never to panic; should it anyway, stop here.
#[cfg(all(
    target_os = "none",
    not(target_arch = "arm"),
    feature = "panic-handler"
))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests;
