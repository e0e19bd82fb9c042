//! The serial protocol between a host (`dws serial`) and a board that serves a
//! model ([`Server`]); `docs/serial.md` is its one-page description.
//!
//! Every message is a *frame*: a kind, a sequence number, a payload length, the
//! payload and a CRC-32, escaped and delimited as SLIP (RFC 1055) does, so the
//! receiver finds the next frame after any garbage, lost or corrupted byte:
//!
//! ```text
//! wire:   END  escape(kind u8 | seq u16 | len u32 | payload[len] | crc32 u32)  END
//!         END = 0xC0; inside a frame 0xC0 is sent as DB DC and 0xDB as DB DD
//!         integers little-endian; crc32 is zlib's CRC-32 of kind..payload
//! ```
//!
//! A session: the host sends [`Kind::Hello`]; the board answers
//! [`Kind::Identity`] with its blob's [`Identity`] (CRC, sizes, the model's
//! [`Spec`](dws_core::plan::Spec)). Then each [`Kind::Infer`] frame carries one
//! input (f32 little-endian) and gets either [`Kind::Output`] (the output, f32
//! little-endian) or [`Kind::Error`] (an [`ErrorCode`] and a detail), with the
//! request's sequence number. One request at a time: a UART has no buffer while
//! the board computes.
//!
//! [`write_frame`] and [`Decoder`] are the one encoder and decoder, used by the
//! firmware and by the host; neither allocates, and the board decodes a request
//! straight into its input buffer.

mod frame;
mod identity;
mod server;
#[cfg(test)]
mod tests;

pub use frame::{write_frame, Decoded, Decoder, Fault, Header, CRC_LEN, END, ESC, HEADER_LEN};
pub use identity::Identity;
pub use server::{Served, Server};

use core::fmt;

/// The protocol version a board announces in its [`Identity`].
pub const VERSION: u8 = 1;

/// Bytes of an [`Kind::Error`] payload: the code (u8) and a detail (u32 LE).
pub const ERROR_LEN: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// Host to board, no payload: "who are you?". Required before any input.
    Hello = 1,
    /// Board to host: the answer to a hello, an encoded [`Identity`].
    Identity = 2,
    /// Host to board: one input, `4 * input_len` bytes of f32 LE.
    Infer = 3,
    /// Board to host: the output of an input, `4 * output_len` bytes of f32 LE.
    Output = 4,
    /// Board to host: a request was refused or a frame was damaged
    /// ([`ERROR_LEN`] bytes: [`ErrorCode`], detail).
    Error = 5,
}

impl Kind {
    /// The kind with this number, if there is one.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Identity,
            3 => Kind::Infer,
            4 => Kind::Output,
            5 => Kind::Error,
            _ => return None,
        })
    }
}

/// Why the board sent an error frame.
///
/// Codes below 16 are *frame faults*: the frame arrived damaged, so its
/// sequence number (echoed as received, 0 when there was none) is not to be
/// trusted; the sender may send it again. Codes from 16 on are *refusals*: the
/// frame was intact and the request is refused as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The CRC does not match: a byte was corrupted.
    Checksum = 1,
    /// The frame ended before its length said: bytes were lost.
    Truncated = 2,
    /// The frame has more bytes than its length said (two frames ran together).
    Overlong = 3,
    /// Shorter than a header, or an invalid escape sequence: garbage on the line.
    Malformed = 4,
    /// The UART reported an error (overrun, noise, framing) during the frame.
    Line = 5,
    /// The frame's kind is not one the board accepts (detail: the kind).
    UnknownKind = 16,
    /// An input before any hello: the host has not checked which model runs here.
    NoHello = 17,
    /// The payload is not one input (detail: the bytes of one input).
    InputLength = 18,
    /// The input holds a NaN or an infinity.
    NonFinite = 19,
    /// The model refused the input otherwise.
    Model = 20,
}

impl ErrorCode {
    /// The code with this number, if there is one.
    pub fn from_u8(v: u8) -> Option<ErrorCode> {
        use ErrorCode as C;
        Some(match v {
            1 => C::Checksum,
            2 => C::Truncated,
            3 => C::Overlong,
            4 => C::Malformed,
            5 => C::Line,
            16 => C::UnknownKind,
            17 => C::NoHello,
            18 => C::InputLength,
            19 => C::NonFinite,
            20 => C::Model,
            _ => return None,
        })
    }

    /// A damaged frame (rather than a refused request): worth sending again.
    pub fn is_frame_fault(self) -> bool {
        (self as u8) < 16
    }

    /// The [`Kind::Error`] payload of this code with `detail`.
    pub fn payload(self, detail: u32) -> [u8; ERROR_LEN] {
        let d = detail.to_le_bytes();
        [self as u8, d[0], d[1], d[2], d[3]]
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::Checksum => "the frame's checksum does not match (corrupted bytes)",
            ErrorCode::Truncated => "the frame ended early (lost bytes)",
            ErrorCode::Overlong => "the frame is longer than its length says",
            ErrorCode::Malformed => "garbage bytes on the line",
            ErrorCode::Line => "the UART reported a line error",
            ErrorCode::UnknownKind => "unknown frame kind",
            ErrorCode::NoHello => "an input before the hello",
            ErrorCode::InputLength => "the input has the wrong length",
            ErrorCode::NonFinite => "the input holds a NaN or an infinity",
            ErrorCode::Model => "the model refused the input",
        })
    }
}
