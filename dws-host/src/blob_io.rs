//! Writing plans as blobs and loading blobs into aligned memory.

use crate::convert::Plan;
use anyhow::{Context, Result};
use dws_core::blob::Precision;
use dws_core::plan::{Op, Spec};
use std::path::{Path, PathBuf};

/// Encodes an f32 plan as a blob (see [`dws_core::blob`]).
pub fn encode(plan: &Plan) -> Result<Vec<u8>> {
    let params: &[u8] = bytemuck::cast_slice(&plan.params);
    encode_parts(Precision::F32, &plan.spec, &plan.ops, params)
}

/// Encodes a spec, ops and a parameter section of the given precision as a blob.
pub fn encode_parts(
    precision: Precision,
    spec: &Spec,
    ops: &[Op],
    params: &[u8],
) -> Result<Vec<u8>> {
    let mut section = postcard::to_allocvec(spec).context("encoding the spec")?;
    for op in ops {
        section.extend(postcard::to_allocvec(op).context("encoding an op")?);
    }
    let mut out = vec![0u8; dws_core::blob::blob_len(section.len(), params.len())];
    dws_core::blob::emit(precision, &section, params, &mut out)?;
    Ok(out)
}

/// Blob bytes in a buffer aligned for in-place f32 parameters.
#[derive(Debug, Clone)]
pub struct AlignedBlob {
    words: Vec<u64>,
    len: usize,
    /// The file it was read from, named in errors.
    path: Option<PathBuf>,
}

impl AlignedBlob {
    /// Copies `bytes` into aligned memory.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBlob {
            words,
            len: bytes.len(),
            path: None,
        }
    }

    /// Reads a blob file (named in the errors of [`Self::model`]).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
        Ok(AlignedBlob {
            path: Some(path.to_path_buf()),
            ..Self::from_bytes(&bytes)
        })
    }

    /// The blob bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// Opens the model. A file that is no blob at all is said what it is (a PyTorch
    /// checkpoint to convert first, an INR, ...; see [`crate::lookalike`]).
    pub fn model(&self) -> Result<dws_core::Model<'_>> {
        dws_core::Model::new_checked(self.bytes()).map_err(|e| match &self.path {
            Some(p) if e == dws_core::Error::BadMagic => anyhow::anyhow!(
                "opening model blob {}: {e}: it is {}",
                p.display(),
                not_a_blob(p)
            ),
            Some(p) => anyhow::anyhow!("opening model blob {}: {e}", p.display()),
            None => anyhow::anyhow!("opening model blob: {e}"),
        })
    }
}

/// What the file at `path`, which is no blob, is, and what to do with it.
fn not_a_blob(path: &Path) -> String {
    let (what, contents) = crate::lookalike::describe_file(path);
    match contents.and_then(|c| c.belongs(path)) {
        Some(hint) => format!("{what}: {hint}"),
        None => format!("{what}; a model blob is what `dws convert` writes"),
    }
}

/// Decodes a blob back into a plan (for tools that rewrite models, such as quantization).
pub fn decode(bytes: &[u8]) -> Result<Plan> {
    let blob = AlignedBlob::from_bytes(bytes);
    let model = blob.model()?;
    let ops = model
        .ops()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("decoding ops: {e}"))?;
    Ok(Plan {
        spec: model.spec().clone(),
        ops,
        params: model.params().to_vec(),
    })
}
