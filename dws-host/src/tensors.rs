//! Reading and writing named f32 tensors: PyTorch checkpoints (`torch.save` files) and
//! safetensors files.
//!
//! Everything is converted to [`Tensor`], a dense row-major f32 array. Floating types
//! (f16, bf16, f32, f64, and the safetensors f8 formats) and integer/bool types are
//! converted to f32 on load; f16, bf16 and f8 convert exactly, f64 and wide integers
//! round to the nearest f32.
//!
//! PyTorch files are parsed with the `pytorch-reader` crate, which needs no Python. It
//! reads the ZIP container of PyTorch >= 1.6 (what `torch.save` writes today) and also the
//! legacy (0.1.10–1.5) and TAR containers; strided or offset views (`t.t()`, `big[2:5]`) are
//! gathered into contiguous row-major order. Nested dicts/lists/tuples in the saved object
//! are flattened with '.'-joined keys (`{"w": {"mean": [a, b]}}` gives `w.mean.0`,
//! `w.mean.1`); non-tensor values (epoch counters, config dicts, ...) are skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Extents, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Creates a tensor, checking that `data` holds exactly `product(shape)` elements.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let numel = checked_numel(&shape)
            .ok_or_else(|| anyhow!("tensor shape {shape:?} has too many elements"))?;
        if numel != data.len() {
            bail!(
                "tensor shape {shape:?} needs {numel} elements but {} were given",
                data.len()
            );
        }
        Ok(Tensor { shape, data })
    }

    /// Number of elements: the product of the shape (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The first element that is not finite, in words with its index: `a NaN at
    /// [0, 3]`, `an infinity (or a value beyond the f32 range) at [2]`.
    pub fn non_finite(&self) -> Option<String> {
        let flat = self.data.iter().position(|v| !v.is_finite())?;
        let what = if self.data[flat].is_nan() {
            "a NaN"
        } else {
            "an infinity (or a value beyond the f32 range)"
        };
        if self.shape.is_empty() {
            return Some(what.to_string());
        }
        let index: Vec<String> = self.index_of(flat).iter().map(usize::to_string).collect();
        Some(format!("{what} at [{}]", index.join(", ")))
    }

    /// The index of element `flat < numel()` (row-major).
    pub fn index_of(&self, mut flat: usize) -> Vec<usize> {
        debug_assert!(
            flat < self.numel(),
            "element {flat} of a {:?} tensor",
            self.shape
        );
        let mut index = vec![0; self.shape.len()];
        for (i, &d) in self.shape.iter().enumerate().rev() {
            index[i] = flat % d.max(1);
            flat /= d.max(1);
        }
        index
    }
}

/// Tensors by name, sorted.
pub type TensorMap = BTreeMap<String, Tensor>;

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// What a file looks like from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// `PK\x03\x04` / `PK\x05\x06`: a zip archive, i.e. a modern `torch.save` file.
    Zip,
    /// A little-endian u64 header length followed by `{`.
    Safetensors,
    /// Anything else (legacy torch pickle stream, TAR, garbage ...).
    Other,
}

/// Safetensors caps its JSON header at 100 MB.
const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

fn sniff(path: &Path) -> Result<Sniffed> {
    let mut header = Vec::with_capacity(16);
    File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(16)
        .read_to_end(&mut header)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if header.is_empty() {
        bail!("{}: file is empty", path.display());
    }
    Ok(sniff_bytes(&header))
}

fn sniff_bytes(header: &[u8]) -> Sniffed {
    if header.starts_with(b"PK\x03\x04") || header.starts_with(b"PK\x05\x06") {
        return Sniffed::Zip;
    }
    if let Some(len) = header.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) {
        if len <= SAFETENSORS_MAX_HEADER && header.get(8) == Some(&b'{') {
            return Sniffed::Safetensors;
        }
    }
    Sniffed::Other
}

/// The kind of tensor file whose first bytes (16 suffice) are `header`, in words: a
/// `torch.save` zip, a legacy `torch.save` pickle (protocol 2 or later), or a
/// safetensors file; `None` for anything else.
pub fn container(header: &[u8]) -> Option<&'static str> {
    match sniff_bytes(header) {
        Sniffed::Zip => Some("a PyTorch file (torch.save)"),
        Sniffed::Safetensors => Some("a safetensors file"),
        Sniffed::Other if matches!(header, [0x80, 2..=5, ..]) => {
            Some("a PyTorch file (legacy torch.save)")
        }
        Sniffed::Other => None,
    }
}

fn has_safetensors_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Reads a PyTorch checkpoint: a `torch.save` zip file (`.pt`/`.pth`/`.bin`/anything that is a zip) holding a
/// state_dict (flat or nested dicts; nested keys are joined with '.', e.g. statistics.pth's
/// {"weights": {"mean": [t0, t1, ...]}} becomes `weights.mean.0`, `weights.mean.1` — lists/tuples are indexed),
/// or a `.safetensors` file (chosen by extension or by sniffing: zip magic "PK\x03\x04" = torch).
/// Every floating dtype (f16, bf16, f32, f64) and integer dtype (e.g. BatchNorm's int64 `num_batches_tracked`) is converted to f32.
/// Errors name the file and what was wrong (not a zip / legacy non-zip torch format / unsupported dtype ...).
///
/// Legacy (PyTorch 0.1.10–1.5, `_use_new_zipfile_serialization=False`) and TAR torch files are
/// read too. Non-tensor values in the saved object are ignored; a file holding no tensors at
/// all gives an empty map.
pub fn read_checkpoint(path: &Path) -> Result<TensorMap> {
    match sniff(path)? {
        Sniffed::Zip => read_torch(path, true),
        Sniffed::Safetensors => read_safetensors(path),
        Sniffed::Other if has_safetensors_extension(path) => read_safetensors(path),
        Sniffed::Other => read_torch(path, false),
    }
}

fn read_torch(path: &Path, is_zip: bool) -> Result<TensorMap> {
    let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| {
        use pytorch_reader::PytorchError as E;
        let what = match (&e, is_zip) {
            (E::Zip(_), _) => "truncated or corrupt zip archive",
            (E::Pickle(_), _) => "unsupported or malformed checkpoint contents",
            (E::Io(_), _) => "I/O error while reading the checkpoint",
            (_, true) => "malformed torch.save zip archive",
            (_, false) => {
                "not a zip-format torch.save file or safetensors file, \
                 and not readable as a legacy (pre-1.6) torch file"
            }
        };
        // The reader's Display already includes its source, so flatten it into one message
        // rather than chaining it (which would print the cause twice with `{:#}`).
        anyhow!(
            "{}: cannot read PyTorch checkpoint: {what}: {e}",
            path.display()
        )
    })?;
    let mut out = TensorMap::new();
    for (name, t) in reader.into_tensors() {
        let tensor = convert_torch_tensor(&t).with_context(|| {
            format!(
                "{}: cannot read tensor '{name}' ({:?}, shape {:?})",
                path.display(),
                t.dtype(),
                t.shape()
            )
        })?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Element encodings this module can convert to f32.
#[derive(Debug, Clone, Copy)]
enum Elem {
    F64,
    F32,
    F16,
    BF16,
    F8E5M2,
    F8E4M3,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 | Elem::U64 => 8,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 | Elem::U16 => 2,
            Elem::F8E5M2 | Elem::F8E4M3 | Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }
}

fn torch_elem(d: pytorch_reader::DType) -> Elem {
    use pytorch_reader::DType as D;
    match d {
        D::F64 => Elem::F64,
        D::F32 => Elem::F32,
        D::F16 => Elem::F16,
        D::BF16 => Elem::BF16,
        D::I64 => Elem::I64,
        D::I32 => Elem::I32,
        D::I16 => Elem::I16,
        D::I8 => Elem::I8,
        D::U64 => Elem::U64,
        D::U32 => Elem::U32,
        D::U16 => Elem::U16,
        D::U8 => Elem::U8,
        D::Bool => Elem::Bool,
    }
}

fn safetensors_elem(d: safetensors::Dtype) -> Result<Elem> {
    use safetensors::Dtype as D;
    Ok(match d {
        D::F64 => Elem::F64,
        D::F32 => Elem::F32,
        D::F16 => Elem::F16,
        D::BF16 => Elem::BF16,
        D::F8_E5M2 => Elem::F8E5M2,
        D::F8_E4M3 => Elem::F8E4M3,
        D::I64 => Elem::I64,
        D::I32 => Elem::I32,
        D::I16 => Elem::I16,
        D::I8 => Elem::I8,
        D::U64 => Elem::U64,
        D::U32 => Elem::U32,
        D::U16 => Elem::U16,
        D::U8 => Elem::U8,
        D::BOOL => Elem::Bool,
        other => bail!("unsupported dtype {other:?}"),
    })
}

fn convert_torch_tensor(t: &pytorch_reader::Tensor) -> Result<Tensor> {
    let elem = torch_elem(t.dtype());
    let bytes = t.read()?;
    // pytorch-reader hands back native-endian bytes.
    let data = decode(elem, &bytes, cfg!(target_endian = "little"))?;
    Tensor::new(t.shape().to_vec(), data)
}

/// Reads every tensor of a safetensors file as f32 (f16/bf16/f64/ints converted).
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_safetensors_from(&bytes, &path.display().to_string())
}

/// Parses the bytes of a safetensors file, every tensor as f32 (what
/// [`read_safetensors`] does once it has read the file).
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    parse_safetensors_from(bytes, "safetensors bytes")
}

/// [`parse_safetensors`] with errors starting with `origin` (the file name).
fn parse_safetensors_from(bytes: &[u8], origin: &str) -> Result<TensorMap> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow!("{e:?}").context(format!(
            "{origin}: not a valid safetensors file (truncated or corrupt header/data)"
        ))
    })?;
    let mut out = TensorMap::new();
    for (name, view) in st.iter() {
        let tensor = (|| -> Result<Tensor> {
            let elem = safetensors_elem(view.dtype())?;
            // safetensors data is always little-endian.
            let data = decode(elem, view.data(), true)?;
            Tensor::new(view.shape().to_vec(), data)
        })()
        .with_context(|| {
            format!(
                "{origin}: cannot read tensor '{name}' ({:?}, shape {:?})",
                view.dtype(),
                view.shape()
            )
        })?;
        out.insert(name.to_string(), tensor);
    }
    Ok(out)
}

/// Writes f32 tensors to a safetensors file (little-endian f32, given order irrelevant).
pub fn write_safetensors(path: &Path, tensors: &TensorMap) -> Result<()> {
    let mut buffers: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if checked_numel(&t.shape) != Some(t.data.len()) {
            bail!(
                "{}: tensor '{name}' has shape {:?} but {} elements",
                path.display(),
                t.shape,
                t.data.len()
            );
        }
        let mut bytes = Vec::with_capacity(t.data.len() * 4);
        for v in &t.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        buffers.push((name.as_str(), t.shape.as_slice(), bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), bytes)
                .map_err(|e| anyhow!("{e:?}"))
                .with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        views.push((*name, view));
    }
    let bytes = safetensors::serialize(views, &None)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("encoding safetensors file {}", path.display()))?;
    crate::output::write(path, &bytes)
}

/// Converts raw element bytes to f32.
fn decode(elem: Elem, bytes: &[u8], little_endian: bool) -> Result<Vec<f32>> {
    let size = elem.size();
    if !bytes.len().is_multiple_of(size) {
        bail!(
            "{} bytes is not a whole number of {size}-byte {elem:?} elements",
            bytes.len()
        );
    }
    fn arr<const N: usize>(c: &[u8], le: bool) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        if !le {
            a.reverse();
        }
        a
    }
    let le = little_endian;
    let chunks = bytes.chunks_exact(size);
    let out: Vec<f32> = match elem {
        Elem::F64 => chunks
            .map(|c| f64::from_le_bytes(arr(c, le)) as f32)
            .collect(),
        Elem::F32 => chunks.map(|c| f32::from_le_bytes(arr(c, le))).collect(),
        Elem::F16 => chunks
            .map(|c| f16_to_f32(u16::from_le_bytes(arr(c, le))))
            .collect(),
        Elem::BF16 => chunks
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes(arr(c, le))) << 16))
            .collect(),
        Elem::F8E5M2 => chunks.map(|c| f16_to_f32(u16::from(c[0]) << 8)).collect(),
        Elem::F8E4M3 => chunks.map(|c| f8e4m3fn_to_f32(c[0])).collect(),
        Elem::I64 => chunks
            .map(|c| i64::from_le_bytes(arr(c, le)) as f32)
            .collect(),
        Elem::I32 => chunks
            .map(|c| i32::from_le_bytes(arr(c, le)) as f32)
            .collect(),
        Elem::I16 => chunks
            .map(|c| f32::from(i16::from_le_bytes(arr(c, le))))
            .collect(),
        Elem::I8 => chunks.map(|c| f32::from(c[0] as i8)).collect(),
        Elem::U64 => chunks
            .map(|c| u64::from_le_bytes(arr(c, le)) as f32)
            .collect(),
        Elem::U32 => chunks
            .map(|c| u32::from_le_bytes(arr(c, le)) as f32)
            .collect(),
        Elem::U16 => chunks
            .map(|c| f32::from(u16::from_le_bytes(arr(c, le))))
            .collect(),
        Elem::U8 => chunks.map(|c| f32::from(c[0])).collect(),
        Elem::Bool => chunks.map(|c| if c[0] != 0 { 1.0 } else { 0.0 }).collect(),
    };
    Ok(out)
}

/// IEEE binary16 to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if mant == 0 => sign,
        0 => {
            // Subnormal: mant * 2^-24, exact in f32.
            let v = mant as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// OCP FP8 E4M3 ("fn": no infinities, S.1111.111 is NaN) to f32 (exact).
fn f8e4m3fn_to_f32(b: u8) -> f32 {
    let negative = b & 0x80 != 0;
    let exp = u32::from((b >> 3) & 0x0f);
    let mant = u32::from(b & 0x07);
    let v = if exp == 0x0f && mant == 0x07 {
        f32::NAN
    } else if exp == 0 {
        // Subnormal: mant * 2^-9.
        mant as f32 * f32::from_bits((127 - 9) << 23)
    } else {
        f32::from_bits(((exp + 120) << 23) | (mant << 20))
    };
    if negative {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dws-tensors-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir.join(name)
    }

    #[test]
    fn tensor_new_checks_len() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::new(vec![usize::MAX, 2], vec![]).is_err());
        let s = Tensor::new(vec![], vec![7.0]).map(|t| t.numel());
        assert_eq!(s.ok(), Some(1));
        assert_eq!(
            Tensor::new(vec![0, 4], vec![]).map(|t| t.numel()).ok(),
            Some(0)
        );
    }

    #[test]
    fn half_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f8e4m3fn_to_f32(0x38), 1.0);
        assert_eq!(f8e4m3fn_to_f32(0x7e), 448.0);
        assert_eq!(f8e4m3fn_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8e4m3fn_to_f32(0xb8), -1.0);
        assert!(f8e4m3fn_to_f32(0x7f).is_nan());
    }

    #[test]
    fn decode_dtypes() {
        let bf = [0x80u8, 0x3f]; // bf16 1.0
        assert_eq!(decode(Elem::BF16, &bf, true).ok(), Some(vec![1.0]));
        let i = (-3i64).to_le_bytes();
        assert_eq!(decode(Elem::I64, &i, true).ok(), Some(vec![-3.0]));
        let mut be = 2.5f64.to_le_bytes();
        be.reverse();
        assert_eq!(decode(Elem::F64, &be, false).ok(), Some(vec![2.5]));
        assert!(decode(Elem::F32, &[0u8; 5], true).is_err());
        assert_eq!(
            decode(Elem::Bool, &[0, 1, 2], true).ok(),
            Some(vec![0.0, 1.0, 1.0])
        );
    }

    #[test]
    fn safetensors_roundtrip() -> Result<()> {
        let p = tmp("roundtrip.safetensors");
        let mut m = TensorMap::new();
        m.insert(
            "b".into(),
            Tensor::new(vec![2, 2], vec![1.0, -2.0, 3.5, f32::MIN_POSITIVE])?,
        );
        m.insert("a".into(), Tensor::new(vec![], vec![42.0])?);
        m.insert("empty".into(), Tensor::new(vec![0, 3], vec![])?);
        write_safetensors(&p, &m)?;
        assert_eq!(read_safetensors(&p)?, m);
        assert_eq!(read_checkpoint(&p)?, m);
        // Sniffing works whatever the extension.
        let q = tmp("roundtrip.bin");
        std::fs::copy(&p, &q)?;
        assert_eq!(read_checkpoint(&q)?, m);
        Ok(())
    }

    #[test]
    fn write_rejects_inconsistent_tensor() {
        let p = tmp("bad.safetensors");
        let mut m = TensorMap::new();
        m.insert(
            "x".into(),
            Tensor {
                shape: vec![3],
                data: vec![1.0],
            },
        );
        assert!(write_safetensors(&p, &m).is_err());
    }

    #[test]
    fn bad_files_error_with_path() -> Result<()> {
        let junk = tmp("junk.pt");
        std::fs::write(&junk, b"hello, this is not a checkpoint at all")?;
        let e = format!(
            "{:#}",
            read_checkpoint(&junk).err().ok_or_else(|| anyhow!("ok?"))?
        );
        assert!(e.contains("junk.pt"), "{e}");
        assert!(e.contains("not a zip-format"), "{e}");

        let empty = tmp("empty.pt");
        std::fs::write(&empty, b"")?;
        let e = format!(
            "{:#}",
            read_checkpoint(&empty)
                .err()
                .ok_or_else(|| anyhow!("ok?"))?
        );
        assert!(e.contains("empty.pt") && e.contains("empty"), "{e}");

        let zip = tmp("trunc.pt");
        std::fs::write(&zip, b"PK\x03\x04garbage garbage garbage")?;
        let e = format!(
            "{:#}",
            read_checkpoint(&zip).err().ok_or_else(|| anyhow!("ok?"))?
        );
        assert!(e.contains("trunc.pt") && e.contains("zip"), "{e}");

        let st = tmp("trunc.safetensors");
        let mut bytes = 200u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{\"x\":");
        std::fs::write(&st, &bytes)?;
        let e = format!(
            "{:#}",
            read_checkpoint(&st).err().ok_or_else(|| anyhow!("ok?"))?
        );
        assert!(
            e.contains("trunc.safetensors") && e.contains("safetensors"),
            "{e}"
        );

        let missing = tmp("does-not-exist.pt");
        let e = format!(
            "{:#}",
            read_checkpoint(&missing)
                .err()
                .ok_or_else(|| anyhow!("ok?"))?
        );
        assert!(e.contains("does-not-exist.pt"), "{e}");
        Ok(())
    }
}
