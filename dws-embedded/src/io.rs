//! Moving f32 little-endian values through `embedded-io` without a heap.
//!
//! Inputs and outputs travel as the flattened f32 arrays of the core, four
//! little-endian bytes per value, back to back: exactly what `numpy`'s
//! `arr.astype('<f4').tobytes()` sends and `np.frombuffer(b, '<f4')` reads.

use crate::Error;
use embedded_io::{Error as _, ErrorKind, Read, Write};

/// Values converted per transfer (the stack buffer is four times this in bytes).
const CHUNK: usize = 16;

/// Reads exactly `out.len()` f32 LE values.
///
/// [`Error::ShortRead`] when the reader ends first; partial reads are retried.
pub fn read_f32_le<R: Read + ?Sized>(r: &mut R, out: &mut [f32]) -> Result<(), Error> {
    let expected = 4 * out.len();
    let mut done = 0usize;
    let mut buf = [0u8; 4 * CHUNK];
    for values in out.chunks_mut(CHUNK) {
        let bytes = &mut buf[..4 * values.len()];
        let mut filled = 0;
        while filled < bytes.len() {
            match r.read(&mut bytes[filled..]) {
                Ok(0) => {
                    return Err(Error::ShortRead {
                        expected,
                        actual: done + filled,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Read(e.kind())),
            }
        }
        done += filled;
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(())
}

/// Decodes `out.len()` f32 LE values from `bytes` (any alignment, e.g. a slice in flash).
///
/// [`Error::InputBytes`] unless `bytes` holds exactly that many values.
pub fn f32_from_le_bytes(bytes: &[u8], out: &mut [f32]) -> Result<(), Error> {
    if bytes.len() != 4 * out.len() {
        return Err(Error::InputBytes {
            expected: 4 * out.len(),
            actual: bytes.len(),
        });
    }
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Writes `values` as f32 LE and flushes the writer.
pub fn write_f32_le<W: Write + ?Sized>(w: &mut W, values: &[f32]) -> Result<(), Error> {
    let mut buf = [0u8; 4 * CHUNK];
    for chunk in values.chunks(CHUNK) {
        for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        write_all(w, &buf[..4 * chunk.len()])?;
    }
    w.flush().map_err(|e| Error::Write(e.kind()))
}

/// Writes all of `bytes` (partial writes and `Interrupted` retried; no flush).
///
/// [`Error::WriteZero`] when the writer accepts no more bytes.
pub(crate) fn write_all<W: Write + ?Sized>(w: &mut W, mut bytes: &[u8]) -> Result<(), Error> {
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(Error::WriteZero),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Write(e.kind())),
        }
    }
    Ok(())
}
