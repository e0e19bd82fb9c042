//! Output files and stdout: a failed command leaves existing files as they were.
//!
//! Files are written under a temporary name in the target's directory and
//! renamed over the target only once complete ([`AtomicFile`]), so a full disk
//! or an error half-way never leaves a truncated blob, tensor file or CSV.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file written under a temporary name and renamed to its path by
/// [`AtomicFile::commit`]; dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (a temporary file next to it).
    pub fn create(path: &Path) -> Result<Self> {
        if path.is_dir() {
            bail!("cannot write {}: it is a directory", path.display());
        }
        let name = path
            .file_name()
            .with_context(|| format!("cannot write {}: not a file name", path.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".dws-tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(AtomicFile {
            target: path.to_path_buf(),
            tmp,
            file: Some(BufWriter::new(file)),
        })
    }

    /// Flushes the file and renames it to its path.
    pub fn commit(mut self) -> Result<()> {
        let what = || format!("writing {}", self.target.display());
        if let Some(f) = self.file.take() {
            let f = f
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(what)?;
            f.sync_all().with_context(what)?;
        }
        std::fs::rename(&self.tmp, &self.target).with_context(what)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()
}

/// Checks that `path` can be written (its folder exists and takes a new file), so
/// that a long command fails at its start rather than at its end; nothing is left
/// behind.
pub fn check_writable(path: &Path) -> Result<()> {
    AtomicFile::create(path).map(drop)
}

/// Refuses an output path that names one of the command's input files (a
/// typo that would replace the model or its inputs).
pub fn check_not_an_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out) = output.canonicalize() else {
        return Ok(()); // does not exist yet
    };
    for input in inputs {
        if input.canonicalize().is_ok_and(|i| i == out) {
            bail!(
                "the output {} is also an input of this command; choose another output path",
                output.display()
            );
        }
    }
    Ok(())
}

/// `n` and a noun, plural unless `n` is 1: `1 input`, `2 inputs`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `eprintln!` that never panics: a line for a closed or full stderr is dropped (there
/// is nowhere left to report it), and the command goes on. For the CLI's diagnostics.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` that reports a closed or full stdout as an error instead of panicking.
pub fn print(args: std::fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncommitted_file_leaves_the_old_one() {
        let dir = std::env::temp_dir().join(format!("dws-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"new, unfinished").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "the temporary is removed"
        );
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(check_not_an_input(&path, &[&dir.join("other")]).is_ok());
        assert!(check_not_an_input(&path, &[&dir.join("./out.bin")]).is_err());
        assert!(write(&dir, b"x").is_err(), "a directory");
        assert!(check_writable(&path).is_ok());
        assert!(check_writable(&dir.join("no/such/folder/out.bin")).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
