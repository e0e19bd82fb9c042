//! The blob container: a fixed header, the plan section and the parameter section.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "DWSB"
//!      4     2  format version (u16 LE)
//!      6     2  flags (u16 LE): 0 = f32 model, 1 = int8 model, 2 = 16x8 model
//!      8     4  plan length in bytes (u32 LE)
//!     12     4  parameter section length in bytes (u32 LE)
//!     16     4  CRC-32 of every byte from offset 32 to the end (u32 LE)
//!     20    12  reserved, zero
//!     32     .  plan: postcard `Spec`, then `Spec::ops` postcard `Op` records
//!      .     .  zero padding up to a multiple of 16
//!      .     .  parameters: little-endian f32 (f32 models), or int8
//!               weights with i32/f32 arrays at 4-aligned offsets (int8
//!               models; 16x8 models add i64 arrays at 8-aligned offsets)
//! ```
//! The parameter section starts 16-byte aligned relative to the blob, so a blob
//! stored at an aligned address (`include_bytes!` into an aligned static, a file
//! read into an aligned buffer) is used in place.
//!
//! Format versions: 1 (f32 and int8 with one weight scale per tensor) and 2
//! (adds per-channel weight scales and the 16x8 mode). This build writes 2 and
//! reads both (version 1 with feature `format-1`, a default); an f32 plan is
//! encoded the same way in both.

use crate::crc::crc32;
use crate::Error;

/// The four bytes every blob starts with.
pub const MAGIC: [u8; 4] = *b"DWSB";
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads (1 with feature `format-1`).
pub const OLDEST_FORMAT_VERSION: u16 = if cfg!(feature = "format-1") { 1 } else { 2 };
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Alignment of the parameter section relative to the blob start.
pub const PARAM_ALIGN: usize = 16;

/// The arithmetic a model blob is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    /// f32 parameters and activations.
    F32,
    /// int8 weights and activations, int32 accumulation (see `docs/quantization.md`).
    Int8,
    /// int16 activations, int8 weights, int32/int64 accumulation ("16x8",
    /// see `docs/quantization.md`; format version 2).
    Int16x8,
}

impl Precision {
    /// The header flags of this precision.
    pub fn flags(self) -> u16 {
        match self {
            Precision::F32 => 0,
            Precision::Int8 => 1,
            Precision::Int16x8 => 2,
        }
    }

    /// The precision of header flags `flags`.
    pub fn from_flags(flags: u16) -> Option<Self> {
        match flags {
            0 => Some(Precision::F32),
            1 => Some(Precision::Int8),
            2 => Some(Precision::Int16x8),
            _ => None,
        }
    }

    /// Whether the model runs on integers (int8 or 16x8).
    pub fn is_quantized(self) -> bool {
        self != Precision::F32
    }

    /// Its name: `f32`, `int8` or `16x8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Int16x8 => "16x8",
        }
    }
}

/// A blob whose container has been checked: magic, version, lengths and checksum.
#[derive(Debug, Clone, Copy)]
pub struct BlobView<'a> {
    version: u16,
    precision: Precision,
    plan: &'a [u8],
    params: &'a [u8],
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Offset of the parameter section for a plan of `plan_len` bytes
/// (`usize::MAX` where that does not fit in a `usize`).
pub fn params_offset(plan_len: usize) -> usize {
    checked_params_offset(plan_len).unwrap_or(usize::MAX)
}

/// [`params_offset`], `None` where it does not fit in a `usize` (a header's
/// `plan_len` near 4 GiB on a 32-bit target).
fn checked_params_offset(plan_len: usize) -> Option<usize> {
    HEADER_LEN
        .checked_add(plan_len)?
        .checked_next_multiple_of(PARAM_ALIGN)
}

impl<'a> BlobView<'a> {
    /// Checks the container and splits it into its sections.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.len() >= 4 && bytes[..4] != MAGIC {
                Error::BadMagic
            } else {
                Error::Truncated
            });
        }
        if bytes[..4] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = read_u16(bytes, 4);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let precision = match Precision::from_flags(read_u16(bytes, 6)) {
            Some(Precision::Int16x8) if version < 2 => return Err(Error::WrongPrecision),
            Some(p) => p,
            None => return Err(Error::WrongPrecision),
        };
        let plan_len = read_u32(bytes, 8) as usize;
        let params_len = read_u32(bytes, 12) as usize;
        let start = checked_params_offset(plan_len).ok_or(Error::Truncated)?;
        let end = start.checked_add(params_len).ok_or(Error::Truncated)?;
        if end > bytes.len() {
            return Err(Error::Truncated);
        }
        if end < bytes.len() {
            return Err(Error::TrailingBytes);
        }
        if crc32(&bytes[HEADER_LEN..]) != read_u32(bytes, 16) {
            return Err(Error::Checksum);
        }
        Ok(BlobView {
            version,
            precision,
            plan: &bytes[HEADER_LEN..HEADER_LEN + plan_len],
            params: &bytes[start..end],
        })
    }

    /// The format version the blob was written in.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The model's precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The plan section.
    pub fn plan(&self) -> &'a [u8] {
        self.plan
    }

    /// The parameter section.
    pub fn params(&self) -> &'a [u8] {
        self.params
    }
}

/// Bytes of a blob with these section lengths (`usize::MAX` where that does
/// not fit in a `usize`).
pub fn blob_len(plan_len: usize, params_len: usize) -> usize {
    params_offset(plan_len).saturating_add(params_len)
}

/// Writes a blob from its sections into `out` and returns the used part.
pub fn emit<'o>(
    precision: Precision,
    plan: &[u8],
    params: &[u8],
    out: &'o mut [u8],
) -> Result<&'o mut [u8], Error> {
    let len = blob_len(plan.len(), params.len());
    let plan_len = u32::try_from(plan.len()).map_err(|_| Error::InvalidPlan("plan too large"))?;
    let params_len =
        u32::try_from(params.len()).map_err(|_| Error::InvalidPlan("parameters too large"))?;
    let actual = out.len();
    let out = out.get_mut(..len).ok_or(Error::OutputLength {
        expected: len,
        actual,
    })?;
    out.fill(0);
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&precision.flags().to_le_bytes());
    out[8..12].copy_from_slice(&plan_len.to_le_bytes());
    out[12..16].copy_from_slice(&params_len.to_le_bytes());
    out[HEADER_LEN..HEADER_LEN + plan.len()].copy_from_slice(plan);
    let start = params_offset(plan.len());
    out[start..].copy_from_slice(params);
    let crc = crc32(&out[HEADER_LEN..]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}
