//! The framing, the identity and the server, on the committed fixtures, with
//! damaged, truncated and garbage input.

use super::*;
use crate::tests::{fixture_names, fixtures_dir, small, Buffers, Fixture, IoError, MemWriter};
use crate::{Error, NoPin, Sizes};
use embedded_io::{ErrorKind, ErrorType, Read};
use std::vec::Vec;
use std::{format, vec};

// ---- helpers ------------------------------------------------------------------

/// The bytes of one frame.
fn frame(kind: Kind, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(kind, seq, payload, |b| {
        out.extend_from_slice(b);
        Ok::<(), ()>(())
    })
    .unwrap();
    out
}

/// Every frame or fault in `bytes`, with the payloads (a 64-byte buffer).
fn decode_all(bytes: &[u8]) -> Vec<(Decoded, Vec<u8>)> {
    let mut d = Decoder::new();
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(done) = d.push(b, &mut buf) {
            let payload = match done {
                Decoded::Frame(h) => h.payload(&buf).map(<[u8]>::to_vec).unwrap_or_default(),
                Decoded::Fault(_) => Vec::new(),
            };
            out.push((done, payload));
        }
    }
    out
}

fn header(kind: Kind, seq: u16, len: usize) -> Decoded {
    Decoded::Frame(Header {
        kind: kind as u8,
        seq,
        len: len as u32,
    })
}

fn fault(code: ErrorCode, seq: Option<u16>) -> Decoded {
    Decoded::Fault(Fault { code, seq })
}

/// f32 values as the LE bytes an input frame carries.
fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

// ---- framing ------------------------------------------------------------------

#[test]
fn frames_round_trip_with_bytes_that_need_escaping() {
    let awkward: Vec<u8> = vec![END, ESC, 0, ESC, END, END, 0xDC, 0xDD, 1];
    let mut line = frame(Kind::Infer, 0xC0DB, &awkward);
    line.extend(frame(Kind::Hello, 7, &[]));
    line.extend(frame(Kind::Output, u16::MAX, &[0xAA; 64]));
    assert_eq!(
        decode_all(&line),
        [
            (header(Kind::Infer, 0xC0DB, awkward.len()), awkward),
            (header(Kind::Hello, 7, 0), vec![]),
            (header(Kind::Output, u16::MAX, 64), vec![0xAA; 64]),
        ]
    );
    // END only opens and closes frames; inside, both special bytes are escaped.
    let f = frame(Kind::Infer, 1, &[END, ESC]);
    assert_eq!((f[0], f[f.len() - 1]), (END, END));
    assert!(!f[1..f.len() - 1].contains(&END));
}

#[test]
fn frames_checksum_matches_zlib() {
    // The CRC field is zlib's crc32 of kind..payload, so a host in any language
    // (Python: zlib.crc32) can speak the protocol.
    let f = frame(Kind::Hello, 0x0102, &[]);
    let body = &f[1..f.len() - 1];
    let crc = u32::from_le_bytes(body[7..11].try_into().unwrap());
    assert_eq!(body[..7], [1, 0x02, 0x01, 0, 0, 0, 0]);
    assert_eq!(crc, dws_core::crc32(&body[..7]));
}

#[test]
fn every_corrupted_byte_is_caught_and_the_next_frame_still_decodes() {
    let good = frame(Kind::Infer, 9, &le(&[1.5, -2.0, 1e-3]));
    let next = frame(Kind::Hello, 10, &[]);
    for at in 1..good.len() - 1 {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut line = good.clone();
            line[at] ^= flip;
            line.extend(&next);
            let got = decode_all(&line);
            // Never a frame with the first one's header, always the second intact.
            assert!(
                got.iter()
                    .all(|(d, _)| !matches!(d, Decoded::Frame(h) if h.seq == 9)),
                "byte {at} ^ {flip:#x}: {got:?}"
            );
            assert_eq!(
                got.last().unwrap().0,
                header(Kind::Hello, 10, 0),
                "byte {at} ^ {flip:#x}"
            );
        }
    }
}

#[test]
fn truncated_overlong_and_garbage_frames_are_faults() {
    let full = frame(Kind::Infer, 3, &le(&[1.0, 2.0]));
    let next = frame(Kind::Hello, 4, &[]);
    // Bytes lost at the end (the closing END too): the next frame's END closes it.
    let mut line = full[..full.len() - 5].to_vec();
    line.extend(&next);
    assert_eq!(
        decode_all(&line)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [
            fault(ErrorCode::Truncated, Some(3)),
            header(Kind::Hello, 4, 0)
        ]
    );
    // A frame's closing END and the next one's opening END lost: one long frame.
    let mut merged = full[..full.len() - 1].to_vec();
    merged.extend(&next[1..]);
    merged.extend(&next);
    assert_eq!(
        decode_all(&merged)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [
            fault(ErrorCode::Overlong, Some(3)),
            header(Kind::Hello, 4, 0)
        ]
    );
    // Garbage: too short for a header, or a bad escape, then a frame.
    let mut line = vec![0x13, 0x37, END, 1, 2, 3, 4, 5, 6, 7, ESC, 0x00, 8, END];
    line.extend(&next);
    assert_eq!(
        decode_all(&line)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [
            fault(ErrorCode::Malformed, None),
            fault(ErrorCode::Malformed, Some(0x0302)),
            header(Kind::Hello, 4, 0),
        ]
    );
    // An escape right before END is not a frame either.
    assert_eq!(
        decode_all(&[1, 2, ESC, END])[0].0,
        fault(ErrorCode::Malformed, None)
    );
}

#[test]
fn noise_between_frames_costs_nothing_but_itself() {
    // Many frames with random bytes in between: each frame decodes, the noise
    // (which may hold END bytes) only ever gives faults.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut line = Vec::new();
    for seq in 0..50u16 {
        for _ in 0..(next() % 20) {
            line.push(next() as u8);
        }
        line.extend(frame(Kind::Output, seq, &[seq as u8; 12]));
    }
    let frames: Vec<u16> = decode_all(&line)
        .into_iter()
        .filter_map(|(d, p)| match d {
            Decoded::Frame(h) if h.kind == Kind::Output as u8 => {
                assert_eq!(p, [h.seq as u8; 12]);
                Some(h.seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(frames, (0..50).collect::<Vec<_>>());
}

#[test]
fn payloads_beyond_the_buffer_are_checked_not_kept() {
    let big = vec![7u8; 100];
    let mut d = Decoder::new();
    let mut buf = [0u8; 8];
    let mut done = None;
    for b in frame(Kind::Infer, 1, &big) {
        done = done.or(d.push(b, &mut buf));
    }
    let Some(Decoded::Frame(h)) = done else {
        panic!("{done:?}")
    };
    assert_eq!((h.len, h.payload(&buf)), (100, None));
    assert_eq!(buf, [7; 8]);
}

#[test]
fn a_line_error_spoils_the_frame_it_hits() {
    let mut d = Decoder::new();
    let mut buf = [0u8; 8];
    let f = frame(Kind::Hello, 5, &[]);
    let mut got = Vec::new();
    for (i, &b) in f.iter().enumerate() {
        if i == 4 {
            d.line_error();
        }
        got.extend(d.push(b, &mut buf));
    }
    for &b in &f {
        got.extend(d.push(b, &mut buf));
    }
    assert_eq!(
        got,
        [fault(ErrorCode::Line, Some(5)), header(Kind::Hello, 5, 0)]
    );
}

#[test]
fn error_codes_round_trip() {
    for v in 0..=255u8 {
        if let Some(c) = ErrorCode::from_u8(v) {
            assert_eq!(c as u8, v);
            assert_eq!(c.is_frame_fault(), v < 16);
            assert_eq!(c.payload(0x0102_0304), [v, 4, 3, 2, 1]);
            assert!(!format!("{c}").is_empty());
        }
        if let Some(k) = Kind::from_u8(v) {
            assert_eq!(k as u8, v);
        }
    }
}

// ---- identity -------------------------------------------------------------------

#[test]
fn every_fixture_identity_round_trips() {
    for name in fixture_names() {
        for file in ["model.dws", "model.int8.dws"] {
            let path = fixtures_dir().join(&name).join(file);
            let Ok(blob) = crate::build::read_blob(&path) else {
                continue;
            };
            let model = dws_core::Model::new_checked(blob.bytes()).unwrap();
            let id = Identity::of(&model);
            assert_eq!(
                id.crc,
                u32::from_le_bytes(blob.bytes()[16..20].try_into().unwrap())
            );
            assert_eq!(id.blob_len as usize, blob.bytes().len());
            assert_eq!(id.flags, model.precision().flags());
            assert_eq!(
                Sizes {
                    input_len: id.input_len as usize,
                    scratch_len: id.scratch_len as usize,
                    output_len: id.output_len as usize
                },
                Sizes::of(&model),
                "{name}/{file}"
            );
            let mut buf = [0u8; Identity::MAX_LEN];
            let bytes = id.encode(&mut buf).unwrap();
            assert_eq!(Identity::decode(bytes), Ok(id.clone()), "{name}/{file}");
        }
    }
}

#[test]
fn bad_identities_are_refused() {
    let f = small();
    let id = Identity::of(&f.model());
    let mut buf = [0u8; Identity::MAX_LEN];
    let good = id.encode(&mut buf).unwrap().to_vec();
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        Identity::decode(&v2),
        Err(dws_core::Error::UnsupportedVersion(2))
    );
    assert_eq!(
        Identity::decode(&good[..20]),
        Err(dws_core::Error::Truncated)
    );
    assert_eq!(
        Identity::decode(&good[..good.len() - 1]),
        Err(dws_core::Error::Decode)
    );
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        Identity::decode(&longer),
        Err(dws_core::Error::TrailingBytes)
    );
    let mut sizes = good.clone();
    sizes[16] ^= 1; // input_len
    assert!(matches!(
        Identity::decode(&sizes),
        Err(dws_core::Error::InvalidPlan(_))
    ));
    let mut spec = id.clone();
    spec.spec.dims.truncate(1);
    let bytes = spec.encode(&mut buf).unwrap();
    assert!(matches!(
        Identity::decode(bytes),
        Err(dws_core::Error::InvalidPlan(_))
    ));
    assert!(matches!(
        id.encode(&mut [0u8; 20]),
        Err(dws_core::Error::OutputLength { .. })
    ));
}

// ---- the server -----------------------------------------------------------------

/// A line from host to board: bytes handed out a few at a time, with a
/// one-time read error before byte `fail_before`, then the end.
struct Line {
    data: Vec<u8>,
    at: usize,
    fail_before: Option<usize>,
}

impl ErrorType for Line {
    type Error = IoError;
}

impl Read for Line {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        if self.fail_before == Some(self.at) {
            self.fail_before = None;
            return Err(IoError(ErrorKind::InvalidData));
        }
        let end = self.fail_before.unwrap_or(usize::MAX).min(self.data.len());
        let n = buf.len().min(3).min(end - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Replies decoded from what the server wrote: (header or fault, payload).
fn replies(w: &MemWriter) -> Vec<(Decoded, Vec<u8>)> {
    let mut d = Decoder::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    for &b in &w.data {
        if let Some(done) = d.push(b, &mut buf) {
            let p = match done {
                Decoded::Frame(h) => h.payload(&buf).unwrap().to_vec(),
                Decoded::Fault(_) => Vec::new(),
            };
            out.push((done, p));
        }
    }
    out
}

/// What each `serve` call returned, and the replies.
type Session = (Vec<Result<Served, Error>>, Vec<(Decoded, Vec<u8>)>);

/// Serves `line` until it ends.
fn serve_all(f: &Fixture, line: Line) -> Session {
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut server = Server::new(bufs.runner(f.model()).unwrap().with_pin(NoPin));
    let (mut rx, mut tx) = (line, MemWriter::new(5));
    let mut served = Vec::new();
    loop {
        let r = server.serve(&mut rx, &mut tx);
        let closed = r == Err(Error::Closed);
        served.push(r);
        if closed {
            break;
        }
    }
    (served, replies(&tx))
}

fn error_reply(seq: u16, code: ErrorCode, detail: u32) -> (Decoded, Vec<u8>) {
    (
        header(Kind::Error, seq, ERROR_LEN),
        code.payload(detail).to_vec(),
    )
}

#[test]
fn the_server_answers_every_frame_and_keeps_serving() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let model = f.model();
        let case = f.case();
        let (ilen, olen) = (4 * model.input_len(), 4 * model.output_len());
        let input = f.input_bytes(0);
        let mut nan = input.clone();
        nan[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        let infer = frame(Kind::Infer, 11, &input);

        let mut line = Vec::new();
        line.extend(frame(Kind::Infer, 1, &input)); // before the hello
        line.extend(frame(Kind::Hello, 2, &[]));
        line.extend([0x55, END, 0xAA, 0x55, 0x13]); // garbage
                                                    // Truncated (not right after an escape byte, which would make it garbage).
        let cut = (infer.len() / 2..).find(|&i| infer[i - 1] != ESC).unwrap();
        line.extend(&infer[..cut]);
        line.extend(frame(Kind::Infer, 3, &input[..ilen - 4])); // one value short
        line.extend(frame(Kind::Infer, 4, &[input.clone(), vec![0; 4]].concat())); // one long
        line.extend(frame(Kind::Infer, 5, &nan));
        line.extend(frame(Kind::Output, 6, &[]));
        let mut bad = frame(Kind::Infer, 7, &input);
        bad[20] ^= 0x40; // corrupted on the line
        line.extend(bad);
        line.extend(frame(Kind::Infer, 8, &input));
        let (served, got) = serve_all(
            &f,
            Line {
                data: line,
                at: 0,
                fail_before: None,
            },
        );

        let mut want_out = vec![0f32; model.output_len()];
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut x = vec![0f32; model.input_len()];
        model
            .run(case.input(0, &mut x).unwrap(), &mut scratch, &mut want_out)
            .unwrap();
        let want = [
            error_reply(1, ErrorCode::NoHello, 0),
            (header(Kind::Identity, 2, got[1].1.len()), got[1].1.clone()),
            error_reply(0, ErrorCode::Malformed, 0),
            // 0xAA 0x55 0x13, ended by the cut frame's END: a "seq" of 0x1355.
            error_reply(0x1355, ErrorCode::Malformed, 0),
            error_reply(11, ErrorCode::Truncated, 0),
            error_reply(3, ErrorCode::InputLength, ilen as u32),
            error_reply(4, ErrorCode::InputLength, ilen as u32),
            error_reply(5, ErrorCode::NonFinite, 0),
            error_reply(6, ErrorCode::UnknownKind, Kind::Output as u32),
            got[9].clone(), // the corrupted frame: a fault whose seq may be wrong
            (header(Kind::Output, 8, olen), le(&want_out)),
        ];
        assert_eq!(got, want, "{name}");
        assert!(matches!(got[9], (Decoded::Frame(h), _) if h.kind == Kind::Error as u8));
        assert!(ErrorCode::from_u8(got[9].1[0]).unwrap().is_frame_fault());
        assert_eq!(Identity::decode(&got[1].1).unwrap(), Identity::of(&model));
        assert_eq!(served.len(), want.len() + 1);
        assert!(matches!(
            served[10],
            Ok(Served::Output { seq: 8, outcome }) if outcome.outputs as usize == model.output_len()
        ));
    }
}

#[test]
fn a_read_error_is_reported_and_serving_goes_on() {
    let f = small();
    let input = f.input_bytes(0);
    let mut line = frame(Kind::Hello, 1, &[]);
    let cut = line.len() + 10;
    line.extend(frame(Kind::Infer, 2, &input));
    line.extend(frame(Kind::Infer, 3, &input));
    let (served, got) = serve_all(
        &f,
        Line {
            data: line,
            at: 0,
            fail_before: Some(cut),
        },
    );
    assert_eq!(served[1], Err(Error::Read(ErrorKind::InvalidData)));
    assert_eq!(
        served[2],
        Ok(Served::Refused {
            seq: 2,
            code: ErrorCode::Line
        })
    );
    assert!(matches!(served[3], Ok(Served::Output { seq: 3, .. })));
    assert_eq!(served[4], Err(Error::Closed));
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], error_reply(2, ErrorCode::Line, 0));
}

#[test]
fn a_failing_writer_is_reported() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut server = Server::new(bufs.runner(f.model()).unwrap());
    let mut rx = Line {
        data: frame(Kind::Hello, 1, &[]),
        at: 0,
        fail_before: None,
    };
    let mut tx = MemWriter::new(5);
    tx.fail = Some(ErrorKind::BrokenPipe);
    assert_eq!(
        server.serve(&mut rx, &mut tx),
        Err(Error::Write(ErrorKind::BrokenPipe))
    );
    assert_eq!(server.identity(), &Identity::of(&f.model()));
}
