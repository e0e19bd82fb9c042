//! The board's answer to a hello: which blob it runs.

use super::VERSION;
use dws_core::blob::HEADER_LEN as BLOB_HEADER_LEN;
use dws_core::plan::{Output, Spec};
use dws_core::{Error, Model};

/// Bytes of an encoded identity before the spec.
const FIXED_LEN: usize = 28;

/// The blob a board serves: its header's checksum and fields, its sizes, and
/// the model's [`Spec`] (input-network widths, features, output kind), which
/// is all a host needs to read inputs and write outputs for it.
///
/// Encoded (little-endian) as the payload of a [`super::Kind::Identity`] frame:
///
/// ```text
/// 0  u8   protocol version (1)      12 u32  blob length, bytes
/// 1  u8   0                         16 u32  input_len (f32 values per input)
/// 2  u16  blob format version       20 u32  output_len (f32 values per output)
/// 4  u16  blob flags (precision)    24 u32  scratch_len (f32 words of RAM)
/// 6  u16  0                         28 ..   the Spec, postcard (as in the blob)
/// 8  u32  blob CRC-32 (header field)
/// ```
///
/// Two identities are equal when the blobs are the same bytes (up to a CRC
/// collision) and the model's figures agree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Identity {
    /// The blob's format version (header bytes 4..6).
    pub format: u16,
    /// The blob's flags (header bytes 6..8): its precision.
    pub flags: u16,
    /// The CRC-32 the blob's header holds (of everything after the header).
    pub crc: u32,
    /// Bytes of the blob.
    pub blob_len: u32,
    /// f32 values of one input.
    pub input_len: u32,
    /// f32 values of one output.
    pub output_len: u32,
    /// f32 words of scratch RAM per inference.
    pub scratch_len: u32,
    /// The model's input and output contract.
    pub spec: Spec,
}

/// A `u32` for a size that a 32-bit board holds (saturating on a 64-bit host).
fn word(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Identity {
    /// The most bytes an encoded identity takes (the spec is at most about 100).
    pub const MAX_LEN: usize = FIXED_LEN + 128;

    /// The identity of an opened model.
    pub fn of(model: &Model<'_>) -> Identity {
        let blob = model.blob();
        let header = blob.get(..BLOB_HEADER_LEN).unwrap_or(&[]);
        let u16_at = |at: usize| {
            header
                .get(at..at + 2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        };
        let crc = header
            .get(16..20)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Identity {
            format: u16_at(4),
            flags: u16_at(6),
            crc,
            blob_len: word(blob.len()),
            input_len: word(model.input_len()),
            output_len: word(model.output_len()),
            scratch_len: word(model.scratch_len()),
            spec: model.spec().clone(),
        }
    }

    /// Encodes the identity into `out` and returns the used part
    /// ([`Error::OutputLength`] when `out` is shorter than needed; [`Self::MAX_LEN`] always does).
    pub fn encode<'o>(&self, out: &'o mut [u8]) -> Result<&'o [u8], Error> {
        let short = Error::OutputLength {
            expected: Self::MAX_LEN,
            actual: out.len(),
        };
        let (fixed, rest) = out.split_at_mut_checked(FIXED_LEN).ok_or(short)?;
        let spec_len = postcard::to_slice(&self.spec, rest)
            .map_err(|_| short)?
            .len();
        fixed.fill(0);
        fixed[0] = VERSION;
        fixed[2..4].copy_from_slice(&self.format.to_le_bytes());
        fixed[4..6].copy_from_slice(&self.flags.to_le_bytes());
        for (at, v) in [
            (8, self.crc),
            (12, self.blob_len),
            (16, self.input_len),
            (20, self.output_len),
            (24, self.scratch_len),
        ] {
            fixed[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        Ok(&out[..FIXED_LEN + spec_len])
    }

    /// Decodes an identity and checks it: the protocol version, the spec (as
    /// [`dws_core::validate::check_spec`] does when a blob is opened), and the
    /// sizes against the spec. A host can then trust its figures.
    pub fn decode(bytes: &[u8]) -> Result<Identity, Error> {
        let fixed = bytes.get(..FIXED_LEN).ok_or(Error::Truncated)?;
        if fixed[0] != VERSION {
            return Err(Error::UnsupportedVersion(u16::from(fixed[0])));
        }
        let u16_at = |at: usize| u16::from_le_bytes([fixed[at], fixed[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let (spec, rest): (Spec, _) =
            postcard::take_from_bytes(&bytes[FIXED_LEN..]).map_err(|_| Error::Decode)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes);
        }
        let shape = dws_core::validate::check_spec(&spec)?;
        let cells = shape.total_cells() as u64;
        let input_len = cells * u64::from(spec.input_features);
        let output_len = match spec.output {
            Output::Logits { classes } => u64::from(classes),
            Output::WeightSpace { features } => cells * u64::from(features),
        };
        let id = Identity {
            format: u16_at(2),
            flags: u16_at(4),
            crc: u32_at(8),
            blob_len: u32_at(12),
            input_len: u32_at(16),
            output_len: u32_at(20),
            scratch_len: u32_at(24),
            spec,
        };
        if u64::from(id.input_len) != input_len || u64::from(id.output_len) != output_len {
            return Err(Error::InvalidPlan(
                "the identity's sizes do not match its spec",
            ));
        }
        Ok(id)
    }
}
