//! Host tests against the committed fixtures, with in-memory readers, writers and pins.

use crate::build::{blob_sizes, read_blob, AlignedBytes};
use crate::io::{f32_from_le_bytes, read_f32_le, write_f32_le};
use crate::{check_case, Arena, Error, Failure, Infer, NoPin, Runner, Sizes};
use core::convert::Infallible;
use dws_core::case::CaseRepr;
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use std::path::PathBuf;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

// ---- fixtures ---------------------------------------------------------------

pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Every fixture with a blob and a case, sorted.
pub(crate) fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.dws").exists() && p.join("case.bin").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "fixtures missing: {names:?}");
    names
}

pub(crate) struct Fixture {
    pub(crate) blob: AlignedBytes,
    pub(crate) case: Vec<u8>,
}

impl Fixture {
    pub(crate) fn load(name: &str) -> Fixture {
        let dir = fixtures_dir().join(name);
        Fixture {
            blob: read_blob(&dir.join("model.dws")).unwrap(),
            case: std::fs::read(dir.join("case.bin")).unwrap(),
        }
    }
    pub(crate) fn case(&self) -> CaseRepr<'_> {
        CaseRepr::new_checked(&self.case).unwrap()
    }
    pub(crate) fn model(&self) -> dws_core::Model<'_> {
        dws_core::Model::new_checked(self.blob.bytes()).unwrap()
    }
    /// Input `k` as the f32 LE bytes a UART would carry.
    pub(crate) fn input_bytes(&self, k: usize) -> Vec<u8> {
        let c = self.case();
        let n = 4 * c.input_len as usize;
        c.inputs[k * n..(k + 1) * n].to_vec()
    }
}

/// The smallest fixture (by blob size): quick error tests.
pub(crate) fn small() -> Fixture {
    let name = fixture_names()
        .into_iter()
        .min_by_key(|n| {
            std::fs::metadata(fixtures_dir().join(n).join("model.dws"))
                .unwrap()
                .len()
        })
        .unwrap();
    Fixture::load(&name)
}

/// Heap buffers exactly as large as `sizes`.
pub(crate) struct Buffers {
    input: Vec<f32>,
    scratch: Vec<f32>,
    output: Vec<f32>,
}

impl Buffers {
    pub(crate) fn new(s: Sizes) -> Self {
        Buffers {
            input: vec![0.0; s.input_len],
            scratch: vec![0.0; s.scratch_len],
            output: vec![0.0; s.output_len],
        }
    }
    pub(crate) fn runner<M: Infer>(&mut self, model: M) -> Result<Runner<'_, M>, Error> {
        Runner::new(model, &mut self.input, &mut self.scratch, &mut self.output)
    }
}

// ---- in-memory I/O -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoError(pub(crate) ErrorKind);

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl core::error::Error for IoError {}

impl embedded_io::Error for IoError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Hands out at most `step` bytes per read; fails with `fail` once `fail_at` bytes were read;
/// reports `Interrupted` before every other read when `interrupt` is set.
pub(crate) struct MemReader {
    data: Vec<u8>,
    at: usize,
    step: usize,
    pub(crate) fail_at: Option<(usize, ErrorKind)>,
    interrupt: bool,
    toggle: bool,
}

impl MemReader {
    pub(crate) fn new(data: Vec<u8>, step: usize) -> Self {
        MemReader {
            data,
            at: 0,
            step,
            fail_at: None,
            interrupt: false,
            toggle: false,
        }
    }
}

impl ErrorType for MemReader {
    type Error = IoError;
}

impl Read for MemReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        if let Some((at, kind)) = self.fail_at {
            if self.at >= at {
                return Err(IoError(kind));
            }
        }
        if self.interrupt {
            self.toggle = !self.toggle;
            if self.toggle {
                return Err(IoError(ErrorKind::Interrupted));
            }
        }
        let n = buf.len().min(self.step).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Accepts at most `step` bytes per write, `capacity` in all (then writes 0 bytes),
/// or fails with `fail`.
pub(crate) struct MemWriter {
    pub(crate) data: Vec<u8>,
    step: usize,
    capacity: usize,
    pub(crate) fail: Option<ErrorKind>,
    flushed: bool,
}

impl MemWriter {
    pub(crate) fn new(step: usize) -> Self {
        MemWriter {
            data: Vec::new(),
            step,
            capacity: usize::MAX,
            fail: None,
            flushed: false,
        }
    }
    fn values(&self) -> Vec<f32> {
        self.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

impl ErrorType for MemWriter {
    type Error = IoError;
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        if let Some(kind) = self.fail {
            return Err(IoError(kind));
        }
        let n = buf
            .len()
            .min(self.step)
            .min(self.capacity - self.data.len());
        self.data.extend_from_slice(&buf[..n]);
        self.flushed = false;
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.flushed = true;
        Ok(())
    }
}

// ---- pins ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    High,
    Low,
}

#[derive(Default)]
struct RecordingPin(Vec<Level>);

impl embedded_hal::digital::ErrorType for RecordingPin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.push(Level::Low);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.push(Level::High);
        Ok(())
    }
}

#[derive(Debug)]
struct PinError;

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

struct BrokenPin;

impl embedded_hal::digital::ErrorType for BrokenPin {
    type Error = PinError;
}

impl embedded_hal::digital::OutputPin for BrokenPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        Err(PinError)
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        Err(PinError)
    }
}

/// A model that answers zeros: what a broken backend would do.
struct Zeros(Sizes);

impl Infer for Zeros {
    fn input_len(&self) -> usize {
        self.0.input_len
    }
    fn output_len(&self) -> usize {
        self.0.output_len
    }
    fn scratch_len(&self) -> usize {
        self.0.scratch_len
    }
    fn infer<'o>(
        &self,
        _: &[f32],
        _: &mut [f32],
        output: &'o mut [f32],
    ) -> Result<&'o [f32], dws_core::Error> {
        let out = &mut output[..self.0.output_len];
        out.fill(0.0);
        Ok(out)
    }
}

// ---- every fixture ------------------------------------------------------------

#[test]
fn every_fixture_serves_reader_to_writer_within_tolerance() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let case = f.case();
        let sizes = blob_sizes(&fixtures_dir().join(&name).join("model.dws")).unwrap();
        assert_eq!(sizes, Sizes::of(&f.model()), "{name}");
        let mut bufs = Buffers::new(sizes);
        let mut runner = bufs.runner(f.model()).unwrap();
        for k in 0..case.batch as usize {
            // Odd chunk sizes: values straddle reads and writes.
            let mut r = MemReader::new(f.input_bytes(k), 7);
            let mut w = MemWriter::new(5);
            let outcome = runner.serve(&mut r, &mut w).unwrap();
            assert!(w.flushed, "{name}: output not flushed");
            let out = w.values();
            assert_eq!(out.len(), case.output_len as usize, "{name}");
            assert_eq!(outcome.outputs, case.output_len, "{name}");
            assert_eq!(out[outcome.argmax as usize], outcome.max, "{name}");
            assert!(out.iter().all(|&v| v <= outcome.max), "{name}");
            if let Err(m) = case.check(k, &out) {
                panic!("{name} input {k}: {m:?}");
            }
        }
    }
}

#[test]
fn every_fixture_passes_check_case() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let mut bufs = Buffers::new(Sizes::of(&f.model()));
        let mut runner = bufs.runner(f.model()).unwrap();
        let report = check_case(&mut runner, &f.case()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.inputs, f.case().batch);
        assert!(report.worst <= 1.0, "{name}: {}", report.worst);
    }
}

#[test]
fn every_int8_fixture_is_bit_exact_through_check_case() {
    // What the firmware checks on the target: the int8 blob, an arena sized by
    // `blob_sizes`, and `case_int8.bin` (zero tolerance: `check_case` passes
    // only on identical bits).
    let mut seen = 0;
    for name in fixture_names() {
        let dir = fixtures_dir().join(&name);
        let (blob, case) = (dir.join("model.int8.dws"), dir.join("case_int8.bin"));
        if !blob.exists() || !case.exists() {
            continue;
        }
        seen += 1;
        let bytes = read_blob(&blob).unwrap();
        let case_bytes = std::fs::read(case).unwrap();
        let case = CaseRepr::new_checked(&case_bytes).unwrap();
        let model = dws_core::Model::new_checked(bytes.bytes()).unwrap();
        assert_eq!(model.precision(), dws_core::blob::Precision::Int8, "{name}");
        let sizes = blob_sizes(&blob).unwrap();
        assert_eq!(sizes, Sizes::of(&model), "{name}");
        let mut bufs = Buffers::new(sizes);
        let mut runner = bufs.runner(model).unwrap();
        let report = check_case(&mut runner, &case).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.inputs, case.batch, "{name}");
        assert_eq!(report.worst, 0.0, "{name}");
        // Zero tolerance really is bit-exact: one ulp off is a mismatch.
        let mut off = runner.output().to_vec();
        off[0] = f32::from_bits(off[0].to_bits() ^ 1);
        assert!(case.check(case.batch as usize - 1, &off).is_err(), "{name}");
    }
    assert!(seen >= 5, "int8 fixtures missing: {seen}");
}

// ---- the static arena ---------------------------------------------------------

#[test]
fn arena_sized_from_the_blob_runs_the_case() {
    let f = small();
    let s = Sizes::of_blob(f.blob.bytes()).unwrap();
    // What a build script would emit, and the exact arena it declares.
    let mut src = String::new();
    s.write_consts(&mut src, "M_").unwrap();
    assert_eq!(
        src,
        format!(
            "pub const M_INPUT_LEN: usize = {};\npub const M_SCRATCH_LEN: usize = {};\npub const M_OUTPUT_LEN: usize = {};\n",
            s.input_len, s.scratch_len, s.output_len
        )
    );
    // The smallest fixture is known to fit this one; `holds` says so before any run.
    let mut arena = std::boxed::Box::new(Arena::<512, 8192, 512>::new());
    assert!(Arena::<512, 8192, 512>::SIZES.holds(&s), "{s:?}");
    let mut runner = arena.open(f.blob.bytes()).unwrap();
    let report = check_case(&mut runner, &f.case()).unwrap();
    assert!(report.worst <= 1.0);
}

#[test]
fn arena_too_small_is_refused_before_any_run() {
    let f = small();
    let s = Sizes::of(&f.model());
    let mut short = Buffers::new(s);
    short.scratch.pop();
    assert_eq!(
        short.runner(f.model()).unwrap_err(),
        Error::Model(dws_core::Error::ScratchTooSmall {
            expected: s.scratch_len,
            actual: s.scratch_len - 1
        })
    );
    let mut short = Buffers::new(s);
    short.input.pop();
    assert!(matches!(
        short.runner(f.model()),
        Err(Error::Model(dws_core::Error::InputLength { .. }))
    ));
    let mut short = Buffers::new(s);
    short.output.pop();
    assert!(matches!(
        short.runner(f.model()),
        Err(Error::Model(dws_core::Error::OutputLength { .. }))
    ));
    let mut tiny = Arena::<1, 1, 1>::new();
    assert!(!Arena::<1, 1, 1>::SIZES.holds(&s));
    assert!(tiny.open(f.blob.bytes()).is_err());
    // Larger buffers are fine: the runner uses the front of each.
    let mut big = Buffers::new(Sizes {
        input_len: s.input_len + 3,
        scratch_len: s.scratch_len + 3,
        output_len: s.output_len + 3,
    });
    let mut runner = big.runner(f.model()).unwrap();
    assert_eq!(runner.input_mut().len(), s.input_len);
    check_case(&mut runner, &f.case()).unwrap();
}

#[test]
fn sizes_combine_for_several_models() {
    let a = Sizes {
        input_len: 10,
        scratch_len: 5,
        output_len: 1,
    };
    let b = Sizes {
        input_len: 3,
        scratch_len: 50,
        output_len: 2,
    };
    let m = a.max(b);
    assert_eq!(
        m,
        Sizes {
            input_len: 10,
            scratch_len: 50,
            output_len: 2
        }
    );
    assert!(m.holds(&a) && m.holds(&b) && !a.holds(&b));
    assert_eq!(m.ram_bytes(), 4 * 62);
}

// ---- inputs from a slice in flash ---------------------------------------------

#[test]
fn unaligned_le_bytes_in_flash_run_like_the_reader() {
    let f = small();
    let case = f.case();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap();
    let bytes = f.input_bytes(0);
    // At an odd address, as a `&[u8]` in flash may be.
    let mut shifted = vec![0u8; 1];
    shifted.extend_from_slice(&bytes);
    runner.run_le_bytes(&shifted[1..]).unwrap();
    case.check(0, runner.output()).unwrap();
    let by_slice = runner.output().to_vec();
    runner.run_from(&mut &bytes[..]).unwrap(); // `&[u8]` is an embedded_io::Read
    assert_eq!(runner.output(), &by_slice[..]);
    // Wrong length.
    assert_eq!(
        runner.run_le_bytes(&bytes[4..]).unwrap_err(),
        Error::InputBytes {
            expected: bytes.len(),
            actual: bytes.len() - 4
        }
    );
    // `run` with f32 values.
    let mut values = vec![0f32; case.input_len as usize];
    f32_from_le_bytes(&bytes, &mut values).unwrap();
    runner.run(&values).unwrap();
    assert_eq!(runner.output(), &by_slice[..]);
    assert!(matches!(
        runner.run(&values[1..]),
        Err(Error::Model(dws_core::Error::InputLength { .. }))
    ));
}

// ---- I/O errors ---------------------------------------------------------------

#[test]
fn short_read_reports_how_far_it_got() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap();
    let bytes = f.input_bytes(0);
    let n = bytes.len();
    for cut in [0, 1, 4, 63, 64, 65, n / 2, n - 1] {
        let mut r = MemReader::new(bytes[..cut].to_vec(), 3);
        assert_eq!(
            runner.run_from(&mut r).unwrap_err(),
            Error::ShortRead {
                expected: n,
                actual: cut
            },
            "cut at {cut}"
        );
    }
    // Nothing is written when the read fails.
    let mut w = MemWriter::new(64);
    let mut r = MemReader::new(bytes[..n - 1].to_vec(), 64);
    assert!(runner.serve(&mut r, &mut w).is_err());
    assert!(w.data.is_empty());
    // A reader with more than one input leaves the rest for the next call.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let mut r = MemReader::new(two, 64);
    runner.run_from(&mut r).unwrap();
    runner.run_from(&mut r).unwrap();
    assert!(matches!(
        runner.run_from(&mut r),
        Err(Error::ShortRead { actual: 0, .. })
    ));
}

#[test]
fn reader_errors_are_reported_and_interrupts_retried() {
    let f = small();
    let case = f.case();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap();
    let mut r = MemReader::new(f.input_bytes(0), 16);
    r.fail_at = Some((32, ErrorKind::BrokenPipe));
    assert_eq!(
        runner.run_from(&mut r).unwrap_err(),
        Error::Read(ErrorKind::BrokenPipe)
    );
    let mut r = MemReader::new(f.input_bytes(0), 16);
    r.interrupt = true;
    runner.run_from(&mut r).unwrap();
    case.check(0, runner.output()).unwrap();
}

#[test]
fn writer_errors_are_reported() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap();
    runner.run_le_bytes(&f.input_bytes(0)).unwrap();
    let mut w = MemWriter::new(64);
    w.fail = Some(ErrorKind::TimedOut);
    assert_eq!(
        runner.write_output(&mut w).unwrap_err(),
        Error::Write(ErrorKind::TimedOut)
    );
    let mut w = MemWriter::new(64);
    w.capacity = 6;
    assert_eq!(runner.write_output(&mut w).unwrap_err(), Error::WriteZero);
    assert_eq!(w.data.len(), 6);
    // A plain byte slice as the writer: exactly the output's bytes fit.
    let mut buf = vec![0u8; 4 * runner.output().len()];
    runner.write_output(&mut &mut buf[..]).unwrap();
    let mut back = vec![0f32; runner.output().len()];
    f32_from_le_bytes(&buf, &mut back).unwrap();
    assert_eq!(back, runner.output());
}

#[test]
fn io_helpers_round_trip() {
    let values: Vec<f32> = (0..100).map(|i| i as f32 * -0.37).collect();
    let mut w = MemWriter::new(9);
    write_f32_le(&mut w, &values).unwrap();
    assert_eq!(w.values(), values);
    let mut back = vec![0f32; 100];
    read_f32_le(&mut MemReader::new(w.data.clone(), 11), &mut back).unwrap();
    assert_eq!(back, values);
    read_f32_le(&mut MemReader::new(Vec::new(), 1), &mut []).unwrap();
}

// ---- bad blobs and bad inputs ---------------------------------------------------

#[test]
fn bad_blobs_are_refused_when_opened() {
    let f = small();
    let good = f.blob.bytes().to_vec();
    let mut arena = std::boxed::Box::new(Arena::<512, 8192, 512>::new());
    let open = |arena: &mut Arena<512, 8192, 512>, bytes: &[u8]| {
        let b = AlignedBytes::new(bytes);
        arena.open(b.bytes()).map(|_| ()).unwrap_err()
    };
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    assert_eq!(
        open(&mut arena, &flipped),
        Error::Model(dws_core::Error::Checksum)
    );
    assert_eq!(
        open(&mut arena, &good[..good.len() - 1]),
        Error::Model(dws_core::Error::Truncated)
    );
    assert_eq!(
        open(&mut arena, &good[..3]),
        Error::Model(dws_core::Error::Truncated)
    );
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(matches!(open(&mut arena, &magic), Error::Model(_)));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(open(&mut arena, &trailing), Error::Model(_)));
    assert!(matches!(open(&mut arena, &[]), Error::Model(_)));
    // Valid bytes at an address that is not 4-byte aligned.
    let mut shifted = vec![0u8; 2];
    shifted.extend_from_slice(&good);
    let b = AlignedBytes::new(&shifted);
    assert_eq!(
        arena.open(&b.bytes()[2..]).map(|_| ()).unwrap_err(),
        Error::Model(dws_core::Error::Misaligned)
    );
    assert!(Sizes::of_blob(&flipped).is_err());
    assert!(blob_sizes(&fixtures_dir().join("no-such-fixture/model.dws")).is_err());
}

#[test]
fn non_finite_inputs_are_refused() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut bytes = f.input_bytes(0);
        bytes[8..12].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(
            runner.run_le_bytes(&bytes).unwrap_err(),
            Error::Model(dws_core::Error::NonFiniteInput)
        );
    }
}

// ---- the timing pin -------------------------------------------------------------

#[test]
fn pin_is_high_exactly_around_each_inference() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs
        .runner(f.model())
        .unwrap()
        .with_pin(RecordingPin::default());
    let bytes = f.input_bytes(0);
    runner.run_le_bytes(&bytes).unwrap();
    runner.run_le_bytes(&bytes).unwrap();
    // A read failure never raises the pin; a model error still lowers it.
    assert!(runner.run_le_bytes(&bytes[1..]).is_err());
    let mut nan = bytes.clone();
    nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(runner.run_le_bytes(&nan).is_err());
    let pin = runner.into_pin();
    use Level::{High, Low};
    assert_eq!(pin.0, [High, Low, High, Low, High, Low]);
}

#[test]
fn pin_errors_are_reported() {
    let f = small();
    let mut bufs = Buffers::new(Sizes::of(&f.model()));
    let mut runner = bufs.runner(f.model()).unwrap().with_pin(BrokenPin);
    assert_eq!(
        runner.run_le_bytes(&f.input_bytes(0)).unwrap_err(),
        Error::Pin(embedded_hal::digital::ErrorKind::Other)
    );
    let runner = runner.with_pin(NoPin);
    assert_eq!(runner.into_pin(), NoPin);
}

// ---- cases that must fail -------------------------------------------------------

#[test]
fn check_case_catches_wrong_outputs_and_foreign_cases() {
    let names = fixture_names();
    let f = small();
    let s = Sizes::of(&f.model());
    // A model with the right shapes but wrong answers.
    let mut bufs = Buffers::new(s);
    let mut runner = bufs.runner(Zeros(s)).unwrap();
    match check_case(&mut runner, &f.case()) {
        Err(Failure::Mismatch {
            input: 0,
            diff,
            allowed,
            ..
        }) => assert!(diff > allowed),
        other => panic!("{other:?}"),
    }
    // A case of another model.
    let other = names
        .iter()
        .map(|n| Fixture::load(n))
        .find(|g| g.case().input_len as usize != s.input_len)
        .expect("fixtures of different input sizes");
    let mut bufs = Buffers::new(s);
    let mut runner = bufs.runner(f.model()).unwrap();
    let err = check_case(&mut runner, &other.case()).unwrap_err();
    assert!(
        matches!(
            err,
            Failure::Case(Error::Model(dws_core::Error::InputLength { .. }))
        ),
        "{err:?}"
    );
    assert!(!format!("{err}").is_empty());
}

#[test]
fn errors_display() {
    let all = [
        Error::Model(dws_core::Error::Checksum),
        Error::ShortRead {
            expected: 8,
            actual: 3,
        },
        Error::InputBytes {
            expected: 8,
            actual: 3,
        },
        Error::Read(ErrorKind::Other),
        Error::Write(ErrorKind::Other),
        Error::WriteZero,
        Error::Pin(embedded_hal::digital::ErrorKind::Other),
    ];
    for e in all {
        assert!(!format!("{e}").is_empty());
    }
    assert!(format!("{}", all[1]).contains("3 bytes"));
}
