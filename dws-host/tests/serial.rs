//! `dws serial` and the board protocol end to end.
//!
//! The board here is simulated: the firmware's own `dws_embedded::protocol::Server`,
//! compiled for this host, behind a TCP socket (as QEMU puts the real firmware's
//! UART). With `DWS_BOARD=tcp:HOST:PORT` and `DWS_BOARD_MODEL=blob.dws`, the fault
//! test (`faults_get_error_replies_and_the_board_keeps_serving`) talks to that board
//! instead: `dws-embedded/board/qemu-uart.sh --faults` runs it against the real
//! firmware under QEMU, freshly started (the first request must find it not greeted).

use dws_embedded::protocol::{
    write_frame, Decoded, Decoder, ErrorCode, Identity, Kind, Served, Server, ERROR_LEN,
};
use dws_embedded::{Runner, Sizes};
use dws_host::blob_io::AlignedBlob;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DWS: &str = env!("CARGO_BIN_EXE_dws");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inr_tiny")
}

/// A fresh folder for one test, removed when dropped.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(name: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("dws-serial-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn dws(args: &[&str]) -> Run {
    let out = Command::new(DWS).args(args).output().expect("running dws");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- a simulated board ------------------------------------------------------------

/// `embedded-io` over a std stream, as a UART driver would be.
struct Io<T> {
    inner: T,
    /// Bytes read so far.
    count: usize,
    /// Flip the bits of this byte (counted from 0) on its way in: line noise.
    corrupt: Option<usize>,
}

impl<T> embedded_io::ErrorType for Io<T> {
    type Error = embedded_io::ErrorKind;
}

impl<T: Read> embedded_io::Read for Io<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, embedded_io::ErrorKind> {
        let n = self
            .inner
            .read(buf)
            .map_err(|_| embedded_io::ErrorKind::Other)?;
        if let Some(at) = self
            .corrupt
            .filter(|&at| at >= self.count && at < self.count + n)
        {
            buf[at - self.count] ^= 0x10;
        }
        self.count += n;
        Ok(n)
    }
}

impl<T: Write> embedded_io::Write for Io<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, embedded_io::ErrorKind> {
        self.inner
            .write(buf)
            .map_err(|_| embedded_io::ErrorKind::Other)
    }
    fn flush(&mut self) -> Result<(), embedded_io::ErrorKind> {
        self.inner
            .flush()
            .map_err(|_| embedded_io::ErrorKind::Other)
    }
}

/// How the simulated board misbehaves.
#[derive(Default, Clone, Copy)]
struct Quirks {
    /// Close the link after this many outputs (a board that died).
    close_after: Option<usize>,
    /// Corrupt this incoming byte.
    corrupt: Option<usize>,
    /// Restart (forget the hello) after this many outputs.
    restart_after: Option<usize>,
}

/// Serves `blob` on one connection to a fresh local port; returns `tcp:127.0.0.1:PORT`.
fn sim_board(blob: &Path, quirks: Quirks) -> String {
    let bytes = std::fs::read(blob).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("tcp:{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let blob = AlignedBlob::from_bytes(&bytes);
        let model = blob.model().unwrap();
        let sizes = Sizes::of(&model);
        let mut input = vec![0f32; sizes.input_len];
        let mut scratch = vec![0f32; sizes.scratch_len];
        let mut output = vec![0f32; sizes.output_len];
        let (stream, _) = listener.accept().unwrap();
        let mut rx = Io {
            inner: stream.try_clone().unwrap(),
            count: 0,
            corrupt: quirks.corrupt,
        };
        let mut tx = Io {
            inner: stream,
            count: 0,
            corrupt: None,
        };
        let mut outputs = 0;
        // Each pass is one power-up of the board.
        loop {
            let runner = Runner::new(model.clone(), &mut input, &mut scratch, &mut output).unwrap();
            let mut server = Server::new(runner);
            loop {
                match server.serve(&mut rx, &mut tx) {
                    Ok(Served::Output { .. }) => {
                        outputs += 1;
                        if quirks.close_after == Some(outputs) {
                            return;
                        }
                        if quirks.restart_after == Some(outputs) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
    });
    port
}

// ---- a raw client -------------------------------------------------------------------

/// Frames to and from a board, one at a time.
struct Raw {
    stream: TcpStream,
    decoder: Decoder,
    payload: Vec<u8>,
    pending: Vec<u8>,
}

impl Raw {
    fn connect(port: &str) -> Raw {
        let stream = TcpStream::connect(port.strip_prefix("tcp:").unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Raw {
            stream,
            decoder: Decoder::new(),
            payload: vec![0; 1 << 20],
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Waits until the board answers, without greeting it: a board that is
    /// still starting (QEMU starts the firmware once the host connects) drops
    /// what arrives before its UART is on. Sends frames of an unknown kind until
    /// one is answered; everything else is skipped.
    fn sync(&mut self) {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        'tries: for seq in 0xFF00..0xFF40u16 {
            // A kind the board does not take, answered with `UnknownKind`.
            self.send(&frame(Kind::Output, seq, &[]));
            loop {
                let mut buf = [0u8; 4096];
                let n = match self.stream.read(&mut buf) {
                    Ok(n) => n,
                    Err(_) => continue 'tries, // silence: send again
                };
                assert!(n > 0, "the board closed the link");
                for &b in &buf[..n] {
                    if let Some(Decoded::Frame(h)) = self.decoder.push(b, &mut self.payload) {
                        if h.seq == seq && h.kind == Kind::Error as u8 {
                            self.stream
                                .set_read_timeout(Some(Duration::from_secs(120)))
                                .unwrap();
                            return;
                        }
                    }
                }
            }
        }
        panic!("the board does not answer");
    }

    /// The next reply: (kind, seq, payload), or a panic on a damaged one.
    fn reply(&mut self) -> (u8, u16, Vec<u8>) {
        loop {
            while !self.pending.is_empty() {
                let b = self.pending.remove(0);
                match self.decoder.push(b, &mut self.payload) {
                    Some(Decoded::Frame(h)) => {
                        return (h.kind, h.seq, h.payload(&self.payload).unwrap().to_vec())
                    }
                    Some(Decoded::Fault(f)) => panic!("damaged reply: {f:?}"),
                    None => {}
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).expect("no reply from the board");
            assert!(n > 0, "the board closed the link");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Expects an error reply with `seq`, returns its code and detail.
    fn error(&mut self, seq: u16) -> (ErrorCode, u32) {
        let (kind, got, p) = self.reply();
        assert_eq!((kind, got, p.len()), (Kind::Error as u8, seq, ERROR_LEN));
        let code = ErrorCode::from_u8(p[0]).unwrap();
        (code, u32::from_le_bytes(p[1..5].try_into().unwrap()))
    }
}

fn frame(kind: Kind, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(kind, seq, payload, |b| {
        out.extend_from_slice(b);
        Ok::<(), ()>(())
    })
    .unwrap();
    out
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---- the tests --------------------------------------------------------------------

#[test]
fn faults_get_error_replies_and_the_board_keeps_serving() {
    let (port, blob_path) = match (std::env::var("DWS_BOARD"), std::env::var("DWS_BOARD_MODEL")) {
        (Ok(port), Ok(model)) => (port, PathBuf::from(model)),
        _ => {
            let blob = fixture("dws_skips_sab").join("model.int8.dws");
            (sim_board(&blob, Quirks::default()), blob)
        }
    };
    let blob = AlignedBlob::read(&blob_path).unwrap();
    let model = blob.model().unwrap();
    let n = model.input_len();
    let x: Vec<f32> = (0..n).map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0).collect();
    let mut want = vec![0f32; model.output_len()];
    let mut scratch = vec![0f32; model.scratch_len()];
    model.run(&x, &mut scratch, &mut want).unwrap();
    let good = le(&x);
    let mut c = Raw::connect(&port);
    c.sync();

    // An input before the hello.
    c.send(&frame(Kind::Infer, 1, &good));
    assert_eq!(c.error(1), (ErrorCode::NoHello, 0));
    // The hello: the blob's identity.
    c.send(&frame(Kind::Hello, 2, &[]));
    let (kind, seq, id) = c.reply();
    assert_eq!((kind, seq), (Kind::Identity as u8, 2));
    assert_eq!(Identity::decode(&id).unwrap(), Identity::of(&model));
    // Garbage bytes, ended by an END (too few for a sequence number: 0).
    c.send(&[0x13, 0x37, 0xC0]);
    assert_eq!(c.error(0), (ErrorCode::Malformed, 0));
    // A truncated frame (its tail lost), then a whole one: both answered.
    let whole = frame(Kind::Infer, 3, &good);
    let cut = (whole.len() / 2..)
        .find(|&i| whole[i - 1] != dws_embedded::protocol::ESC)
        .unwrap();
    c.send(&whole[..cut]);
    c.send(&frame(Kind::Hello, 4, &[]));
    assert_eq!(c.error(3), (ErrorCode::Truncated, 0));
    assert_eq!(c.reply().1, 4);
    // A corrupted byte.
    let mut bad = frame(Kind::Infer, 5, &good);
    let at = (10..bad.len())
        .find(|&i| bad[i] < 0x80 && bad[i - 1] != dws_embedded::protocol::ESC)
        .unwrap();
    bad[at] ^= 0x01;
    c.send(&bad);
    assert_eq!(c.error(5).0, ErrorCode::Checksum);
    // Wrong lengths.
    c.send(&frame(Kind::Infer, 6, &good[..good.len() - 4]));
    assert_eq!(c.error(6), (ErrorCode::InputLength, 4 * n as u32));
    c.send(&frame(Kind::Infer, 7, &[good.clone(), vec![0; 8]].concat()));
    assert_eq!(c.error(7), (ErrorCode::InputLength, 4 * n as u32));
    // NaN and infinity.
    for (seq, v) in [(8, f32::NAN), (9, f32::NEG_INFINITY)] {
        let mut y = x.clone();
        y[n / 2] = v;
        c.send(&frame(Kind::Infer, seq, &le(&y)));
        assert_eq!(c.error(seq), (ErrorCode::NonFinite, 0));
    }
    // A kind the board does not take.
    c.send(&frame(Kind::Output, 10, &[]));
    assert_eq!(c.error(10), (ErrorCode::UnknownKind, Kind::Output as u32));
    // And after all that, an input runs: the output is the host core's, bit for bit.
    c.send(&frame(Kind::Infer, 11, &good));
    let (kind, seq, out) = c.reply();
    assert_eq!((kind, seq), (Kind::Output as u8, 11));
    assert_eq!(out, le(&want));
}

/// The CSV `dws run --engine core` writes for the same inputs (the board runs the core).
fn dws_run_core(model: &Path, inputs: &Path, out: &Path) -> Vec<u8> {
    let r = dws(&["run", s(model), s(inputs), "--engine", "core", "-o", s(out)]);
    assert!(r.ok, "{}", r.stderr);
    std::fs::read(out).unwrap()
}

#[test]
fn a_dataset_runs_on_the_board_as_dws_run_runs_it() {
    let dir = TmpDir::new("dataset");
    let model = dir.join("tiny.dws");
    let d = tiny();
    let r = dws(&[
        "convert",
        s(&d.join("model.pt")),
        "--config",
        s(&d.join("config.json")),
        "--statistics",
        s(&d.join("statistics.pth")),
        "-o",
        s(&model),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let splits = d.join("splits.json");
    let port = sim_board(&model, Quirks::default());
    let csv = dir.join("board.csv");
    let r = dws(&[
        "serial",
        "--port",
        &port,
        s(&splits),
        "-o",
        s(&csv),
        "--verify",
        s(&model),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("board on tcp:127.0.0.1:"), "{}", r.stderr);
    assert!(r.stdout.ends_with("passed, 0 failed\n"), "{}", r.stdout);
    assert!(r.stdout.contains("within 1e-4"), "{}", r.stdout);
    let want = dws_run_core(&model, &splits, &dir.join("host.csv"));
    assert_eq!(std::fs::read(&csv).unwrap(), want);
}

#[test]
fn a_tensor_batch_runs_on_the_board_as_dws_run_runs_it() {
    let dir = TmpDir::new("batch");
    for blob in ["model.dws", "model.int8.dws"] {
        let model = fixture("dws_skips_sab").join(blob);
        let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
        let port = sim_board(&model, Quirks::default());
        let out = dir.join("board.safetensors");
        let r = dws(&[
            "serial",
            "--port",
            &port,
            s(&inputs),
            "-o",
            s(&out),
            "--verify",
            s(&model),
        ]);
        assert!(r.ok, "{blob}: {}", r.stderr);
        assert!(r.stdout.contains("4 passed, 0 failed"), "{}", r.stdout);
        let want = dws_run_core(&model, &inputs, &dir.join("host.safetensors"));
        assert_eq!(std::fs::read(&out).unwrap(), want, "{blob}");
    }
}

#[test]
fn a_board_that_dies_mid_stream_leaves_no_output() {
    let dir = TmpDir::new("dies");
    let model = fixture("dws_skips_sab").join("model.int8.dws");
    let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
    let port = sim_board(
        &model,
        Quirks {
            close_after: Some(2),
            ..Quirks::default()
        },
    );
    let out = dir.join("out.safetensors");
    let r = dws(&["serial", "--port", &port, s(&inputs), "-o", s(&out)]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("the board stopped answering after 2 of 4 inputs")
            && r.stderr.contains("was closed")
            && r.stderr.contains("no output file was written"),
        "{}",
        r.stderr
    );
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_damaged_request_is_sent_again() {
    let dir = TmpDir::new("noise");
    let model = fixture("dws_skips_sab").join("model.int8.dws");
    let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
    // The hello is about 13 bytes: byte 40 falls in the first input's frame.
    let port = sim_board(
        &model,
        Quirks {
            corrupt: Some(40),
            ..Quirks::default()
        },
    );
    let out = dir.join("out.safetensors");
    let r = dws(&[
        "serial",
        "--port",
        &port,
        s(&inputs),
        "-o",
        s(&out),
        "--verify",
        s(&model),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("4 passed, 0 failed"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("1 request was sent again after a damaged frame"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_board_that_restarts_is_greeted_again() {
    let dir = TmpDir::new("restart");
    let model = fixture("dws_skips_sab").join("model.int8.dws");
    let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
    let port = sim_board(
        &model,
        Quirks {
            restart_after: Some(1),
            ..Quirks::default()
        },
    );
    let out = dir.join("out.safetensors");
    let r = dws(&[
        "serial",
        "--port",
        &port,
        s(&inputs),
        "-o",
        s(&out),
        "--verify",
        s(&model),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("4 passed, 0 failed"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("the board restarted during the run (1 time)")
            && !r.stderr.contains("damaged"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_board_must_serve_the_blob_given_to_verify() {
    let dir = TmpDir::new("other");
    let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
    let port = sim_board(
        &fixture("dws_skips_sab").join("model.int8.dws"),
        Quirks::default(),
    );
    let other = fixture("dws_skips_sab").join("model.dws");
    let out = dir.join("out.safetensors");
    let r = dws(&[
        "serial",
        "--port",
        &port,
        s(&inputs),
        "-o",
        s(&out),
        "--verify",
        s(&other),
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("the board serves another blob than --verify")
            && r.stderr.contains("CRC 0x"),
        "{}",
        r.stderr
    );
    assert!(dir.files().is_empty());
}

#[test]
fn a_silent_or_missing_board_is_a_clear_error() {
    let inputs = fixture("dws_skips_sab").join("inputs.safetensors");
    // Nobody listening.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let port = format!("tcp:{addr}");
    let r = dws(&["serial", "--port", &port, s(&inputs), "-o", "x.safetensors"]);
    assert!(
        !r.ok && r.stderr.contains("cannot connect to") && r.stderr.contains("QEMU"),
        "{}",
        r.stderr
    );
    // Something that listens but never answers.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("tcp:{}", mute.local_addr().unwrap());
    let r = dws(&[
        "serial",
        "--port",
        &port,
        s(&inputs),
        "-o",
        "x.safetensors",
        "--timeout",
        "1",
    ]);
    assert!(
        !r.ok && r.stderr.contains("no answer to the hello") && r.stderr.contains("within 1 s"),
        "{}",
        r.stderr
    );
    // Bad ports and inputs.
    for (port, want) in [
        ("tcp:localhost", "expected tcp:HOST:PORT"),
        ("/dev/ttyUSB0@fast", "is not a baud rate"),
    ] {
        let r = dws(&["serial", "--port", port, s(&inputs), "-o", "x.safetensors"]);
        assert!(!r.ok && r.stderr.contains(want), "{port}: {}", r.stderr);
    }
    let r = dws(&[
        "serial",
        "--port",
        &port,
        "no/such/file",
        "-o",
        "x.safetensors",
    ]);
    assert!(!r.ok && r.stderr.contains("no such file"), "{}", r.stderr);
    let r = dws(&["serial", "--port", &port, s(&inputs), "-o", "x.csv"]);
    assert!(!r.ok && r.stderr.contains("not x.csv"), "{}", r.stderr);
}
