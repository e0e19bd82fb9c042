//! Frames on the wire: the encoder ([`write_frame`]) and the decoder ([`Decoder`]).

use super::{ErrorCode, Kind};
use dws_core::Crc32;

/// Starts and ends every frame.
pub const END: u8 = 0xC0;
/// Escapes an `END` or `ESC` byte inside a frame (`ESC 0xDC`, `ESC 0xDD`).
pub const ESC: u8 = 0xDB;
const ESC_END: u8 = 0xDC;
const ESC_ESC: u8 = 0xDD;

/// Bytes before the payload: kind (u8), sequence number (u16 LE), payload length (u32 LE).
pub const HEADER_LEN: usize = 7;
/// Bytes after the payload: the CRC-32 of the header and the payload (u32 LE).
pub const CRC_LEN: usize = 4;

/// Escaped bytes collected before each call of the writer.
const CHUNK: usize = 64;

/// The header of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// The frame's kind (a [`Kind`], or a number this side does not know).
    pub kind: u8,
    /// The sequence number: a reply carries its request's.
    pub seq: u16,
    /// Payload bytes.
    pub len: u32,
}

impl Header {
    /// The payload, when it fitted in the buffer given to [`Decoder::push`]
    /// (`None` for a frame longer than that buffer: it was checked, not kept).
    pub fn payload<'p>(&self, buf: &'p [u8]) -> Option<&'p [u8]> {
        buf.get(..usize::try_from(self.len).ok()?)
    }
}

/// A frame that arrived damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fault {
    /// What was wrong (a frame fault: [`ErrorCode::is_frame_fault`]).
    pub code: ErrorCode,
    /// The sequence number as received, when the frame got that far.
    pub seq: Option<u16>,
}

/// What an `END` byte completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decoded {
    /// An intact frame; its payload is in the buffer ([`Header::payload`]).
    Frame(Header),
    /// A damaged frame, or garbage between frames.
    Fault(Fault),
}

/// Writes one frame: `END`, the escaped header, payload and CRC, `END`.
///
/// `put` receives the bytes a few dozen at a time and must take all of them
/// (a UART's blocking write). The payload is at most `u32::MAX` bytes.
pub fn write_frame<E>(
    kind: Kind,
    seq: u16,
    payload: &[u8],
    mut put: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    // A longer payload cannot be described; the receiver would see it as overlong.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let s = seq.to_le_bytes();
    let l = len.to_le_bytes();
    let header = [kind as u8, s[0], s[1], l[0], l[1], l[2], l[3]];
    let mut crc = Crc32::new();
    crc.update(&header);
    crc.update(payload);
    let mut out = Escaper {
        buf: [0; CHUNK + 2],
        n: 0,
    };
    out.buf[0] = END;
    out.n = 1;
    for part in [&header[..], payload, &crc.finish().to_le_bytes()] {
        for &b in part {
            out.push(b, &mut put)?;
        }
    }
    out.buf[out.n] = END;
    out.n += 1;
    put(&out.buf[..out.n])
}

/// Collects escaped bytes and hands them on in chunks.
struct Escaper {
    buf: [u8; CHUNK + 2],
    n: usize,
}

impl Escaper {
    fn push<E>(&mut self, b: u8, put: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        match b {
            END => self.two(ESC, ESC_END),
            ESC => self.two(ESC, ESC_ESC),
            _ => {
                self.buf[self.n] = b;
                self.n += 1;
            }
        }
        if self.n >= CHUNK {
            put(&self.buf[..self.n])?;
            self.n = 0;
        }
        Ok(())
    }

    fn two(&mut self, a: u8, b: u8) {
        self.buf[self.n] = a;
        self.buf[self.n + 1] = b;
        self.n += 2;
    }
}

/// Turns the bytes of a line into frames, one byte at a time, with no heap.
///
/// Bytes between two `END`s form a frame. Its payload goes into the buffer
/// passed to [`Decoder::push`] (bytes beyond the buffer's end are checked but
/// dropped), and the `END` that closes it returns a [`Decoded`]: the header of
/// an intact frame, or the [`Fault`] of a damaged one. Whatever happened, the
/// next frame is decoded from its own `END` on: a lost, added or corrupted byte
/// costs the frame it hit and nothing else.
#[derive(Debug, Clone)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    crc_bytes: [u8; CRC_LEN],
    /// Unescaped bytes of the current frame (saturating).
    count: u32,
    crc: Crc32,
    escaped: bool,
    /// Set by a bad escape or a line error: the frame ends as this fault.
    fault: Option<ErrorCode>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// Waiting for a frame.
    pub const fn new() -> Self {
        Decoder {
            header: [0; HEADER_LEN],
            crc_bytes: [0; CRC_LEN],
            count: 0,
            crc: Crc32::new(),
            escaped: false,
            fault: None,
        }
    }

    /// Feeds one byte from the line; a frame's payload goes to `payload`.
    /// Returns what an `END` byte completed (empty frames, such as the `END`
    /// that opens a frame, complete nothing).
    pub fn push(&mut self, byte: u8, payload: &mut [u8]) -> Option<Decoded> {
        if byte == END {
            if self.escaped {
                self.fault = Some(ErrorCode::Malformed);
            }
            if self.count == 0 && self.fault.is_none() {
                return None;
            }
            let done = self.finish();
            *self = Decoder::new();
            return Some(done);
        }
        let byte = if self.escaped {
            self.escaped = false;
            match byte {
                ESC_END => END,
                ESC_ESC => ESC,
                _ => {
                    self.fault = Some(ErrorCode::Malformed);
                    return None;
                }
            }
        } else if byte == ESC {
            self.escaped = true;
            return None;
        } else {
            byte
        };
        self.take(byte, payload);
        None
    }

    /// Marks the frame being received as damaged (the UART reported an
    /// overrun, noise or a framing error): it ends as an [`ErrorCode::Line`] fault.
    pub fn line_error(&mut self) {
        self.fault = Some(ErrorCode::Line);
    }

    fn len(&self) -> u32 {
        let h = &self.header;
        u32::from_le_bytes([h[3], h[4], h[5], h[6]])
    }

    fn take(&mut self, byte: u8, payload: &mut [u8]) {
        let i = self.count;
        self.count = self.count.saturating_add(1);
        if let Some(slot) = self.header.get_mut(i as usize) {
            *slot = byte;
            self.crc.update(&[byte]);
            return;
        }
        let at = i - HEADER_LEN as u32;
        let len = self.len();
        if at < len {
            self.crc.update(&[byte]);
            if let Some(slot) = payload.get_mut(at as usize) {
                *slot = byte;
            }
        } else if let Some(slot) = self.crc_bytes.get_mut((at - len) as usize) {
            *slot = byte;
        }
    }

    fn finish(&self) -> Decoded {
        let seq = (self.count >= 3).then(|| u16::from_le_bytes([self.header[1], self.header[2]]));
        let fault = |code| Decoded::Fault(Fault { code, seq });
        if let Some(code) = self.fault {
            return fault(code);
        }
        if (self.count as usize) < HEADER_LEN {
            return fault(ErrorCode::Malformed);
        }
        let want = (HEADER_LEN + CRC_LEN) as u64 + u64::from(self.len());
        let got = u64::from(self.count);
        if got < want {
            return fault(ErrorCode::Truncated);
        }
        if got > want {
            return fault(ErrorCode::Overlong);
        }
        if self.crc.finish() != u32::from_le_bytes(self.crc_bytes) {
            return fault(ErrorCode::Checksum);
        }
        Decoded::Frame(Header {
            kind: self.header[0],
            seq: u16::from_le_bytes([self.header[1], self.header[2]]),
            len: self.len(),
        })
    }
}
