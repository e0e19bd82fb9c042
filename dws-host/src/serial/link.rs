//! The byte stream to a board: a serial device, or a TCP socket (QEMU's
//! `-serial tcp:HOST:PORT,server`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The baud rate when `PORT` names none (the board template's).
pub const DEFAULT_BAUD: u32 = 115_200;

/// A byte stream whose reads give up after a while.
pub trait Link: Read + Write + Send {
    /// Reads wait at most `t` (then fail with `TimedOut` or `WouldBlock`); `t > 0`.
    fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()>;
}

impl Link for TcpStream {
    fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, Some(t))
    }
}

/// A serial device opened with the `serialport` crate.
struct Serial(Box<dyn serialport::SerialPort>);

impl Read for Serial {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Serial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Link for Serial {
    fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        self.0.set_timeout(t).map_err(std::io::Error::other)
    }
}

/// Where `dws serial --port` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// `tcp:HOST:PORT`.
    Tcp(String),
    /// A serial device, `PATH[@BAUD]` (8N1, no flow control).
    Serial {
        /// `/dev/ttyUSB0`, `COM3`, ...
        path: String,
        /// Bits per second.
        baud: u32,
    },
}

impl Port {
    /// Parses `tcp:HOST:PORT` or `PATH[@BAUD]`.
    pub fn parse(s: &str) -> Result<Port> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            let Some((host, port)) = addr.rsplit_once(':') else {
                bail!("--port {s}: expected tcp:HOST:PORT, e.g. tcp:127.0.0.1:4444");
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                bail!("--port {s}: expected tcp:HOST:PORT with a port number, e.g. tcp:127.0.0.1:4444");
            }
            return Ok(Port::Tcp(addr.to_string()));
        }
        let (path, baud) = match s.rsplit_once('@') {
            Some((path, baud)) => (
                path,
                baud.parse::<u32>()
                    .ok()
                    .filter(|&b| b > 0)
                    .with_context(|| format!("--port {s}: `{baud}` is not a baud rate"))?,
            ),
            None => (s, DEFAULT_BAUD),
        };
        if path.is_empty() {
            bail!("--port {s}: no device (e.g. /dev/ttyUSB0@115200 or tcp:127.0.0.1:4444)");
        }
        Ok(Port::Serial {
            path: path.to_string(),
            baud,
        })
    }

    /// Opens the link (no bytes are exchanged yet).
    pub fn open(&self) -> Result<Box<dyn Link>> {
        match self {
            Port::Tcp(addr) => {
                let s = TcpStream::connect(addr).with_context(|| {
                    format!(
                        "cannot connect to {addr} (is QEMU running with -serial tcp:{addr},server?)"
                    )
                })?;
                s.set_nodelay(true)
                    .with_context(|| format!("configuring the connection to {addr}"))?;
                Ok(Box::new(s))
            }
            Port::Serial { path, baud } => {
                let port = serialport::new(path, *baud)
                    .timeout(Duration::from_secs(1))
                    .open()
                    .with_context(|| format!("cannot open serial port {path}"))?;
                // Bytes left over from before are not ours.
                port.clear(serialport::ClearBuffer::All)
                    .with_context(|| format!("clearing serial port {path}"))?;
                Ok(Box::new(Serial(port)))
            }
        }
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Port::Tcp(addr) => write!(f, "tcp:{addr}"),
            Port::Serial { path, baud } => write!(f, "{path}@{baud}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let tcp = |a: &str| Port::Tcp(a.into());
        let dev = |p: &str, baud| Port::Serial {
            path: p.into(),
            baud,
        };
        assert_eq!(
            Port::parse("tcp:127.0.0.1:4444").unwrap(),
            tcp("127.0.0.1:4444")
        );
        assert_eq!(Port::parse("tcp:[::1]:80").unwrap(), tcp("[::1]:80"));
        assert_eq!(
            Port::parse("/dev/ttyUSB0").unwrap(),
            dev("/dev/ttyUSB0", DEFAULT_BAUD)
        );
        assert_eq!(
            Port::parse("/dev/ttyACM1@921600").unwrap(),
            dev("/dev/ttyACM1", 921_600)
        );
        assert_eq!(Port::parse("COM3@9600").unwrap().to_string(), "COM3@9600");
        for bad in [
            "tcp:4444",
            "tcp::4444",
            "tcp:host:port",
            "/dev/ttyUSB0@fast",
            "@9600",
            "x@0",
        ] {
            assert!(Port::parse(bad).is_err(), "{bad}");
        }
    }
}
