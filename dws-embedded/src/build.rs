//! Host helpers for build scripts (feature `std`): size an [`crate::Arena`]
//! from blob files so firmware never guesses.
//!
//! ```no_run
//! // build.rs of a firmware crate, with `dws-embedded = { .., features = ["std"] }`
//! // under [build-dependencies]:
//! let sizes = dws_embedded::build::blob_sizes("model.dws".as_ref()).unwrap();
//! let mut src = String::new();
//! sizes.write_consts(&mut src, "").unwrap(); // pub const SCRATCH_LEN: usize = ..;
//! let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
//! std::fs::write(out.join("sizes.rs"), src).unwrap();
//! // in the firmware: include!(concat!(env!("OUT_DIR"), "/sizes.rs"));
//! //                  static mut ARENA: Arena<INPUT_LEN, SCRATCH_LEN, OUTPUT_LEN> = Arena::new();
//! ```

use crate::Sizes;
use std::path::Path;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

/// Blob bytes in 4-byte aligned memory, as `Model::new_checked` wants them.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into aligned memory.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}

/// Reads a blob file into aligned memory.
pub fn read_blob(path: &Path) -> Result<AlignedBytes, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(AlignedBytes::new(&bytes))
}

/// Validates the blob file at `path` and returns the buffers it needs.
pub fn blob_sizes(path: &Path) -> Result<Sizes, String> {
    let blob = read_blob(path)?;
    Sizes::of_blob(blob.bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
