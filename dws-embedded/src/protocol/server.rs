//! The board's side of the protocol: answer every frame, keep serving.

use super::{write_frame, Decoded, Decoder, ErrorCode, Fault, Header, Identity, Kind};
use crate::io::write_all;
use crate::{Error, Outcome, Runner};
use dws_core::Model;
use embedded_hal::digital::OutputPin;
use embedded_io::{Error as _, ErrorKind, Read, Write};

/// What one [`Server::serve`] call answered.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Served {
    /// A hello: the identity was sent.
    Hello {
        /// The request's sequence number.
        seq: u16,
    },
    /// An input: it ran and its output was sent.
    Output {
        /// The request's sequence number.
        seq: u16,
        /// The result in short.
        outcome: Outcome,
    },
    /// A damaged frame or a refused request: an error frame was sent.
    Refused {
        /// The sequence number as received (0 when there was none).
        seq: u16,
        /// Why.
        code: ErrorCode,
    },
}

/// Serves a model over a byte stream (a UART): decodes request frames straight
/// into the runner's input buffer, runs them, and answers each frame with
/// exactly one reply ([`super`] describes the session).
///
/// Nothing a host sends stops it: garbage, a damaged or truncated frame, an
/// input of the wrong length or with NaN values, an input before the hello:
/// each gets an error reply, and the next frame is served.
#[derive(Debug)]
pub struct Server<'a, 'm, P> {
    runner: Runner<'a, Model<'m>, P>,
    identity: Identity,
    decoder: Decoder,
    greeted: bool,
}

impl<'a, 'm, P: OutputPin> Server<'a, 'm, P> {
    /// Serves `runner`'s model (its identity is taken from the blob).
    pub fn new(runner: Runner<'a, Model<'m>, P>) -> Self {
        let identity = Identity::of(runner.model());
        Server {
            runner,
            identity,
            decoder: Decoder::new(),
            greeted: false,
        }
    }

    /// What the hello answers.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The runner (its last output, its pin).
    pub fn runner(&self) -> &Runner<'a, Model<'m>, P> {
        &self.runner
    }

    /// Reads from `rx` until a frame is complete, answers it on `tx`, and says
    /// what it answered.
    ///
    /// Errors: [`Error::Read`] when the reader fails (the frame being received
    /// then ends as an [`ErrorCode::Line`] fault; call again to go on),
    /// [`Error::Closed`] when it ends, [`Error::Write`] or [`Error::WriteZero`]
    /// when the reply could not be written.
    pub fn serve<R: Read + ?Sized, W: Write + ?Sized>(
        &mut self,
        rx: &mut R,
        tx: &mut W,
    ) -> Result<Served, Error> {
        let mut byte = [0u8; 1];
        loop {
            match rx.read(&mut byte) {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.decoder.line_error();
                    return Err(Error::Read(e.kind()));
                }
            }
            let input = bytemuck::cast_slice_mut(self.runner.input_mut());
            if let Some(done) = self.decoder.push(byte[0], input) {
                return self.answer(done, tx);
            }
        }
    }

    fn answer<W: Write + ?Sized>(&mut self, done: Decoded, tx: &mut W) -> Result<Served, Error> {
        let h = match done {
            Decoded::Frame(h) => h,
            Decoded::Fault(Fault { code, seq }) => return refuse(tx, seq.unwrap_or(0), code, 0),
        };
        match Kind::from_u8(h.kind) {
            Some(Kind::Hello) => {
                self.greeted = true;
                let mut buf = [0u8; Identity::MAX_LEN];
                let identity = self.identity.encode(&mut buf)?;
                send(tx, Kind::Identity, h.seq, identity)?;
                Ok(Served::Hello { seq: h.seq })
            }
            Some(Kind::Infer) => self.infer(h, tx),
            _ => refuse(tx, h.seq, ErrorCode::UnknownKind, u32::from(h.kind)),
        }
    }

    fn infer<W: Write + ?Sized>(&mut self, h: Header, tx: &mut W) -> Result<Served, Error> {
        if !self.greeted {
            return refuse(tx, h.seq, ErrorCode::NoHello, 0);
        }
        let want = 4 * self.runner.model().input_len();
        if usize::try_from(h.len) != Ok(want) {
            let detail = u32::try_from(want).unwrap_or(u32::MAX);
            return refuse(tx, h.seq, ErrorCode::InputLength, detail);
        }
        match self.runner.run_loaded() {
            Ok(outcome) => {
                send(
                    tx,
                    Kind::Output,
                    h.seq,
                    bytemuck::cast_slice(self.runner.output()),
                )?;
                Ok(Served::Output {
                    seq: h.seq,
                    outcome,
                })
            }
            Err(Error::Model(dws_core::Error::NonFiniteInput)) => {
                refuse(tx, h.seq, ErrorCode::NonFinite, 0)
            }
            Err(_) => refuse(tx, h.seq, ErrorCode::Model, 0),
        }
    }
}

fn send<W: Write + ?Sized>(tx: &mut W, kind: Kind, seq: u16, payload: &[u8]) -> Result<(), Error> {
    write_frame(kind, seq, payload, |bytes| write_all(tx, bytes))?;
    tx.flush().map_err(|e| Error::Write(e.kind()))
}

fn refuse<W: Write + ?Sized>(
    tx: &mut W,
    seq: u16,
    code: ErrorCode,
    detail: u32,
) -> Result<Served, Error> {
    send(tx, Kind::Error, seq, &code.payload(detail))?;
    Ok(Served::Refused { seq, code })
}
