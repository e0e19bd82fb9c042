//! The host's side of the protocol: a hello, then one input at a time, with
//! damaged frames sent again.

use super::link::{Link, Port};
use anyhow::{anyhow, bail, Result};
use dws_embedded::protocol::{write_frame, Decoded, Decoder, ErrorCode, Identity, Kind, ERROR_LEN};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// How long a hello waits for its answer before it is sent again (a board that
/// was busy or still starting drops it).
const HELLO_RETRY: Duration = Duration::from_millis(500);
/// How often one input is sent again after a damaged frame before giving up.
const RESENDS: usize = 3;
/// Bytes read from the link at a time.
const READ_CHUNK: usize = 4096;

/// Why a request failed.
#[derive(Debug)]
pub enum BoardError {
    /// The board answered with a refusal (the frame was intact).
    Refused {
        /// The code, when this host knows it.
        code: Option<ErrorCode>,
        /// The code's number.
        raw: u8,
        /// The refusal's detail (for a wrong input length: the bytes of one input).
        detail: u32,
    },
    /// The link failed, closed, or the board stopped answering.
    Link(anyhow::Error),
}

impl std::fmt::Display for BoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardError::Refused {
                code: Some(ErrorCode::InputLength),
                detail,
                ..
            } => write!(
                f,
                "the board refused the input: it takes inputs of {detail} bytes"
            ),
            BoardError::Refused {
                code: Some(code), ..
            } => write!(f, "the board refused the input: {code}"),
            BoardError::Refused { raw, detail, .. } => write!(
                f,
                "the board refused the input with error code {raw} (detail {detail})"
            ),
            BoardError::Link(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BoardError {}

impl From<anyhow::Error> for BoardError {
    fn from(e: anyhow::Error) -> Self {
        BoardError::Link(e)
    }
}

/// The link and the frames on it.
struct Conn {
    link: Box<dyn Link>,
    port: String,
    decoder: Decoder,
    rx: Vec<u8>,
    rx_at: usize,
    rx_len: usize,
    /// Reply payloads.
    payload: Vec<u8>,
    /// Encoded request frames.
    frame: Vec<u8>,
    seq: u16,
    timeout: Duration,
}

/// A board that answered the hello.
pub struct Board {
    conn: Conn,
    identity: Identity,
    /// The longest an answered request took.
    slowest: Duration,
    resent: usize,
    restarts: usize,
}

/// What an error frame says.
fn error_of(payload: &[u8]) -> Option<(u8, u32)> {
    let p: &[u8; ERROR_LEN] = payload.try_into().ok()?;
    Some((p[0], u32::from_le_bytes([p[1], p[2], p[3], p[4]])))
}

impl Board {
    /// Opens `port` and says hello; `timeout` bounds the wait for the hello's
    /// answer and for each output.
    pub fn connect(port: &Port, timeout: Duration) -> Result<Board> {
        let link = port.open()?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut conn = Conn {
            link,
            port: port.to_string(),
            decoder: Decoder::new(),
            rx: vec![0; READ_CHUNK],
            rx_at: 0,
            rx_len: 0,
            payload: vec![0; Identity::MAX_LEN],
            frame: Vec::new(),
            // Replies to an earlier session of this board do not match.
            seq: start as u16,
            timeout,
        };
        let identity = conn.hello()?;
        let out = 4 * identity.output_len as usize;
        conn.payload.resize(out.max(Identity::MAX_LEN), 0);
        Ok(Board {
            conn,
            identity,
            slowest: Duration::ZERO,
            resent: 0,
            restarts: 0,
        })
    }

    /// What the board serves.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Requests sent again after a damaged frame so far.
    pub fn resent(&self) -> usize {
        self.resent
    }

    /// Times the board restarted during the run (and was greeted again).
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// Runs one input (`input_len` values) on the board into `output` (`output_len`).
    pub fn infer(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), BoardError> {
        let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        let start = Instant::now();
        let mut sent: Vec<u16> = Vec::new();
        let mut damaged = false;
        loop {
            if sent.len() > RESENDS {
                return Err(anyhow!(
                    "sent this input {} times without an answer (damaged frames or restarts)",
                    sent.len()
                )
                .into());
            }
            if damaged {
                self.resent += 1;
            }
            damaged = true; // unless the board restarted (below)
            sent.push(self.conn.send(Kind::Infer, &bytes)?);
            let mut deadline = Instant::now() + self.conn.timeout;
            let mut shortened = false;
            loop {
                let Some(d) = self.conn.next(deadline)? else {
                    if shortened {
                        break; // a damaged frame was probably ours: send again
                    }
                    return Err(anyhow!(
                        "no answer from the board within {:.0} s (--timeout)",
                        self.conn.timeout.as_secs_f64()
                    )
                    .into());
                };
                let h = match d {
                    Decoded::Frame(h) => h,
                    Decoded::Fault(_) => {
                        // A damaged reply: perhaps ours. Wait as long as an input
                        // takes, then send again.
                        deadline = deadline.min(Instant::now() + self.grace());
                        shortened = true;
                        continue;
                    }
                };
                let payload = h.payload(&self.conn.payload).unwrap_or(&[]);
                let ours = sent.contains(&h.seq);
                match Kind::from_u8(h.kind) {
                    Some(Kind::Output) if ours => {
                        if payload.len() != 4 * output.len() {
                            return Err(anyhow!(
                                "the board sent an output of {} bytes, expected {}",
                                h.len,
                                4 * output.len()
                            )
                            .into());
                        }
                        for (o, b) in output.iter_mut().zip(payload.chunks_exact(4)) {
                            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                        self.slowest = self.slowest.max(start.elapsed());
                        return Ok(());
                    }
                    Some(Kind::Error) => {
                        let Some((raw, detail)) = error_of(payload) else {
                            continue;
                        };
                        let code = ErrorCode::from_u8(raw);
                        let fault = code.is_some_and(ErrorCode::is_frame_fault);
                        if ours && code == Some(ErrorCode::NoHello) {
                            self.greet_again()?;
                            damaged = false;
                            break;
                        }
                        if ours && !fault {
                            return Err(BoardError::Refused { code, raw, detail });
                        }
                        if ours {
                            break; // our request was damaged on the way
                        }
                        if fault {
                            deadline = deadline.min(Instant::now() + self.grace());
                            shortened = true;
                        }
                    }
                    _ => {} // a late answer to something earlier
                }
            }
        }
    }

    /// The board restarted (it wants a hello again): greet it, and go on only
    /// if it still serves the same blob.
    fn greet_again(&mut self) -> Result<()> {
        let id = self.conn.hello()?;
        self.restarts += 1;
        if id != self.identity {
            bail!(
                "the board on {} restarted with another blob (CRC {:#010x}, was {:#010x})",
                self.conn.port,
                id.crc,
                self.identity.crc
            );
        }
        Ok(())
    }

    /// How long to wait for our answer after a frame that may have been ours
    /// was damaged: as long as the slowest input so far took, twice, plus a second.
    fn grace(&self) -> Duration {
        2 * self.slowest + Duration::from_secs(1)
    }
}

impl Conn {
    /// Sends hellos until one is answered.
    fn hello(&mut self) -> Result<Identity> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let seq = self.send(Kind::Hello, &[])?;
            let retry = (Instant::now() + HELLO_RETRY).min(deadline);
            while let Some(d) = self.next(retry)? {
                if let Decoded::Frame(h) = d {
                    if h.kind == Kind::Identity as u8 && h.seq == seq {
                        let bytes = h.payload(&self.payload).unwrap_or(&[]);
                        return Identity::decode(bytes).map_err(|e| {
                            anyhow!(
                                "the board on {} answered the hello with an identity this dws \
                                 cannot read ({e}): is its firmware from another dws version?",
                                self.port
                            )
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no answer to the hello from {} within {:.0} s: is the board running the \
                     dws-board firmware{}?",
                    self.port,
                    self.timeout.as_secs_f64(),
                    if self.port.starts_with("tcp:") {
                        ""
                    } else {
                        ", at this baud rate"
                    }
                );
            }
        }
    }

    /// Sends a frame with the next sequence number and returns that number.
    fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<u16> {
        self.seq = self.seq.wrapping_add(1);
        self.frame.clear();
        let frame = &mut self.frame;
        write_frame(kind, self.seq, payload, |b| {
            frame.extend_from_slice(b);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        self.link
            .write_all(&self.frame)
            .and_then(|()| self.link.flush())
            .map_err(|e| self.link_error("sending to the board", e))?;
        Ok(self.seq)
    }

    /// The next frame or fault from the board, or `None` at `deadline`.
    fn next(&mut self, deadline: Instant) -> Result<Option<Decoded>> {
        loop {
            while self.rx_at < self.rx_len {
                let b = self.rx[self.rx_at];
                self.rx_at += 1;
                if let Some(d) = self.decoder.push(b, &mut self.payload) {
                    return Ok(Some(d));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.link
                .set_read_timeout(left.max(Duration::from_millis(1)))
                .map_err(|e| self.link_error("configuring the link", e))?;
            match self.link.read(&mut self.rx) {
                Ok(0) => bail!("the connection to {} was closed", self.port),
                Ok(n) => (self.rx_at, self.rx_len) = (0, n),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.link_error("reading from the board", e)),
            }
        }
    }

    fn link_error(&self, what: &str, e: std::io::Error) -> anyhow::Error {
        anyhow::Error::new(e).context(format!("{what} ({})", self.port))
    }
}
