//! The reference suite: upstream PyTorch fixtures and one harness for every backend.
//!
//! Each fixture under `tests/fixtures/<name>/` was written by
//! `tests/reference/generate.py` from the upstream code: `config.json`,
//! `model.pt` (state_dict), `inputs.safetensors`, `expected.safetensors`.
//! Derived from them, and committed so firmware and C can embed them:
//! `model.dws` (the converted blob) and `case.bin` (a postcard
//! [`dws_core::case::CaseRepr`]); `dws-reference write-cases` regenerates both.
//!
//! A backend implements [`Backend`]; [`run_suite`] runs it over every fixture
//! and prints one line per fixture and the closing `N passed, M failed`.
#![forbid(unsafe_code)]

pub mod permute;

use anyhow::{bail, Context, Result};
use dws_core::case::CaseRepr;
use dws_host::blob_io::{encode, AlignedBlob};
use dws_host::config::Config;
use dws_host::quantize::{self, Activations};
use dws_host::tensors::{read_checkpoint, read_safetensors, TensorMap};
use dws_host::{convert, weight_space};
use std::path::{Path, PathBuf};

/// One upstream fixture.
pub struct Fixture {
    /// Folder name.
    pub name: String,
    /// Folder.
    pub dir: PathBuf,
    /// The upstream constructor arguments.
    pub config: Config,
    /// The blob converted from `model.pt` by the converter under test.
    pub blob: AlignedBlob,
    /// Batch size.
    pub batch: usize,
    /// `[batch, input_len]` inputs in the core's layout.
    pub inputs: Vec<f32>,
    /// The case (inputs and upstream's outputs) encoded as `case.bin`.
    pub case: Vec<u8>,
    /// The committed int8 blob and its golden outputs (`model.int8.dws`, `case_int8.bin`).
    pub int8: Golden,
    /// The committed 16x8 blob and its golden outputs (`model.16x8.dws`, `case_16x8.bin`).
    pub x16: Golden,
}

/// The quantized modes: each fixture has a blob and golden outputs for each.
pub const MODES: [Activations; 2] = [Activations::Int8, Activations::Int16];

/// A fixture quantized in one mode (with the quantizer's defaults, calibrated
/// on the fixture's inputs) and the core's outputs on its inputs: the golden
/// case, zero tolerance, that every backend must match bit for bit.
pub struct Golden {
    /// The quantized blob.
    pub blob: AlignedBlob,
    /// The core's outputs as a case (`case_*.bin`).
    pub case: Vec<u8>,
}

impl Golden {
    /// The decoded golden case.
    pub fn case(&self) -> CaseRepr<'_> {
        CaseRepr::new_checked(&self.case).expect("the suite encodes valid cases")
    }
}

/// The committed files of a mode: the blob and the golden case.
pub fn golden_files(mode: Activations) -> (&'static str, &'static str) {
    match mode {
        Activations::Int8 => ("model.int8.dws", "case_int8.bin"),
        Activations::Int16 => ("model.16x8.dws", "case_16x8.bin"),
    }
}

/// The fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Fixture names, sorted.
pub fn fixture_names() -> Result<Vec<String>> {
    fixture_names_in(&fixtures_dir())
}

/// The names of the fixtures in a fixtures folder, sorted.
pub fn fixture_names_in(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let e = e?;
        if e.path().join("config.json").exists() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

impl Fixture {
    /// Loads a fixture, converting its checkpoint with the `dws convert` code path.
    pub fn load(name: &str) -> Result<Fixture> {
        Fixture::load_from(&fixtures_dir(), name)
    }

    /// [`Fixture::load`] from another fixtures folder.
    pub fn load_from(root: &Path, name: &str) -> Result<Fixture> {
        let dir = root.join(name);
        let config = Config::load(&dir.join("config.json"))?;
        let sd = read_checkpoint(&dir.join("model.pt"))?;
        let plan = convert::convert(&config, &sd, None)
            .with_context(|| format!("converting fixture {name}"))?;
        let blob = AlignedBlob::from_bytes(&encode(&plan)?);
        let model = blob.model()?;
        let inputs = read_safetensors(&dir.join("inputs.safetensors"))?;
        let expected = read_safetensors(&dir.join("expected.safetensors"))?;
        let (batch, flat) = weight_space::flatten_inputs(&model, &inputs)?;
        let case = encode_case(name, &model, batch, &flat, &expected)?;
        // The committed quantized blobs (quantizing is slow; the freshness
        // test and `write-cases` quantize afresh), or new ones for a new fixture.
        let golden = |mode: Activations| -> Result<Golden> {
            let path = dir.join(golden_files(mode).0);
            let blob = match std::fs::read(&path) {
                Ok(bytes) => AlignedBlob::from_bytes(&bytes),
                Err(_) => AlignedBlob::from_bytes(&quantize_fixture(&model, &flat, mode)?),
            };
            let case = golden_case(name, &blob.model()?, batch, &flat)
                .with_context(|| format!("running {}", path.display()))?;
            Ok(Golden { blob, case })
        };
        let (int8, x16) = (golden(Activations::Int8)?, golden(Activations::Int16)?);
        drop(model);
        Ok(Fixture {
            name: name.to_string(),
            dir,
            config,
            blob,
            batch,
            inputs: flat,
            case,
            int8,
            x16,
        })
    }

    /// The golden blob and case of a mode.
    pub fn golden(&self, mode: Activations) -> &Golden {
        match mode {
            Activations::Int8 => &self.int8,
            Activations::Int16 => &self.x16,
        }
    }

    /// The fixture quantized afresh in `mode` with the quantizer's defaults,
    /// calibrated on its inputs.
    pub fn quantize(&self, mode: Activations) -> Result<Vec<u8>> {
        quantize_fixture(&self.blob.model()?, &self.inputs, mode)
    }

    /// The decoded case.
    pub fn case(&self) -> CaseRepr<'_> {
        CaseRepr::new_checked(&self.case).expect("the suite encodes valid cases")
    }
}

/// `model` quantized in `mode` with the quantizer's defaults (one thread:
/// the result does not depend on the count), calibrated on `inputs`.
fn quantize_fixture(
    model: &dws_core::Model<'_>,
    inputs: &[f32],
    mode: Activations,
) -> Result<Vec<u8>> {
    let opts = quantize::Options {
        threads: 1,
        ..quantize::Options::new(mode)
    };
    let cal = quantize::calibrate(model, inputs, &opts)?;
    Ok(quantize::quantize(model, &cal, &opts)?.blob)
}

/// Loads every fixture.
pub fn load_all() -> Result<Vec<Fixture>> {
    fixture_names()?.iter().map(|n| Fixture::load(n)).collect()
}

/// Every fixture, loaded once per process (tests share them).
pub fn shared() -> &'static [Fixture] {
    static ALL: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| load_all().expect("loading the reference fixtures"))
}

/// Encodes expected outputs (named tensors) as a case for `model`.
pub fn encode_case(
    name: &str,
    model: &dws_core::Model<'_>,
    batch: usize,
    inputs: &[f32],
    expected: &TensorMap,
) -> Result<Vec<u8>> {
    let flat_expected = flatten_outputs(model, batch, expected)?;
    let segments = output_segments(model);
    let mut scale = Vec::new();
    let per = model.output_len();
    let mut at = 0;
    for &len in &segments {
        let mut m = 0f32;
        for b in 0..batch {
            for v in &flat_expected[b * per + at..b * per + at + len as usize] {
                m = m.max(v.abs());
            }
        }
        scale.push(m);
        at += len as usize;
    }
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (scale_b, in_b, exp_b) = (bytes(&scale), bytes(inputs), bytes(&flat_expected));
    let case = CaseRepr {
        version: dws_core::case::CASE_VERSION,
        name,
        batch: batch as u32,
        input_len: model.input_len() as u32,
        output_len: per as u32,
        segments: segments.iter().copied().collect(),
        scale: &scale_b,
        inputs: &in_b,
        expected: &exp_b,
    };
    Ok(postcard::to_allocvec(&case)?)
}

/// The core's outputs of `model` on `inputs` as a zero-tolerance case: the
/// golden outputs of a quantized blob every other backend must match bit for bit.
pub fn golden_case(
    name: &str,
    model: &dws_core::Model<'_>,
    batch: usize,
    inputs: &[f32],
) -> Result<Vec<u8>> {
    let mut scratch = vec![0f32; model.scratch_len()];
    let per = model.output_len();
    let mut out = vec![0f32; batch * per];
    for (x, y) in inputs.chunks(model.input_len()).zip(out.chunks_mut(per)) {
        model
            .run(x, &mut scratch, y)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let segments = output_segments(model);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let zeros = vec![0f32; segments.len()];
    let (scale_b, in_b, exp_b) = (bytes(&zeros), bytes(inputs), bytes(&out));
    let case = CaseRepr {
        version: dws_core::case::CASE_VERSION,
        name,
        batch: batch as u32,
        input_len: model.input_len() as u32,
        output_len: per as u32,
        segments: segments.iter().copied().collect(),
        scale: &scale_b,
        inputs: &in_b,
        expected: &exp_b,
    };
    Ok(postcard::to_allocvec(&case)?)
}

/// Elements of each output tensor within one output.
pub fn output_segments(model: &dws_core::Model<'_>) -> Vec<u32> {
    match model.spec().output {
        dws_core::plan::Output::Logits { classes } => vec![classes],
        dws_core::plan::Output::WeightSpace { features } => {
            weight_space::tensor_shapes(model.dims(), features as usize)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u32)
                .collect()
        }
    }
}

/// Named expected outputs to `[batch, output_len]`.
fn flatten_outputs(model: &dws_core::Model<'_>, batch: usize, t: &TensorMap) -> Result<Vec<f32>> {
    let names: Vec<(String, usize)> = match model.spec().output {
        dws_core::plan::Output::Logits { classes } => vec![("logits".into(), classes as usize)],
        dws_core::plan::Output::WeightSpace { features } => {
            weight_space::tensor_shapes(model.dims(), features as usize)
                .into_iter()
                .map(|(n, s)| (n, s.iter().product()))
                .collect()
        }
    };
    let per: usize = names.iter().map(|(_, n)| n).sum();
    let mut out = vec![0f32; batch * per];
    let mut at = 0;
    for (name, n) in names {
        let Some(x) = t.get(&name) else {
            bail!("expected output `{name}` missing")
        };
        if x.data.len() != batch * n {
            bail!(
                "expected output `{name}` has {} values, want {}",
                x.data.len(),
                batch * n
            );
        }
        for b in 0..batch {
            out[b * per + at..b * per + at + n].copy_from_slice(&x.data[b * n..(b + 1) * n]);
        }
        at += n;
    }
    Ok(out)
}

/// Something that runs models: the core, the host runner, the CLI, the GPU, C ...
pub trait Backend {
    /// Short name for reports.
    fn name(&self) -> String;
    /// Runs `fixture.batch` inputs of the blob and returns `[batch, output_len]`.
    fn run(&mut self, fixture: &Fixture, blob: &[u8]) -> Result<Vec<f32>>;
}

/// The core, one input at a time with one scratch buffer.
pub struct CoreBackend;

impl Backend for CoreBackend {
    fn name(&self) -> String {
        "core".into()
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> Result<Vec<f32>> {
        let blob = AlignedBlob::from_bytes(blob);
        let m = blob.model()?;
        let mut scratch = vec![0f32; m.scratch_len()];
        let mut out = vec![0f32; f.batch * m.output_len()];
        for (x, y) in f
            .inputs
            .chunks(m.input_len())
            .zip(out.chunks_mut(m.output_len()))
        {
            m.run(x, &mut scratch, y)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(out)
    }
}

/// The host batch runner with `threads` workers.
pub struct HostBackend {
    /// Worker threads.
    pub threads: usize,
}

impl Backend for HostBackend {
    fn name(&self) -> String {
        format!("host ({} threads)", self.threads)
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> Result<Vec<f32>> {
        let blob = AlignedBlob::from_bytes(blob);
        let m = blob.model()?;
        dws_host::runner::run_batch(&m, &f.inputs, f.batch, self.threads)
    }
}

/// The fast batched f32 engine (`dws_host::fast`) with `threads` workers and the
/// given options (chunk size, instruction set).
pub struct FastBackend {
    /// Worker threads.
    pub threads: usize,
    /// The engine's options.
    pub options: dws_host::fast::FastOptions,
}

impl FastBackend {
    /// The default options with `threads` workers.
    pub fn new(threads: usize) -> Self {
        FastBackend {
            threads,
            options: dws_host::fast::FastOptions::default(),
        }
    }
}

impl Backend for FastBackend {
    fn name(&self) -> String {
        format!(
            "fast ({} threads, chunk {}, {})",
            self.threads,
            self.options.chunk,
            self.options.isa.supported().name()
        )
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> Result<Vec<f32>> {
        let blob = AlignedBlob::from_bytes(blob);
        let m = blob.model()?;
        let fast = dws_host::fast::FastModel::with_options(&m, self.options)?;
        fast.run_batch(&f.inputs, f.batch, self.threads)
    }
}

/// Quantized blobs on the host: the core's executor with the host's SIMD kernels
/// (`dws_host::fast::quantized`) of the given instruction set, `threads` workers.
pub struct QHostBackend {
    /// Worker threads.
    pub threads: usize,
    /// The kernels' instruction set (portable if the CPU lacks it).
    pub isa: dws_host::fast::Isa,
    /// Run the inputs one call each (batch 1): with two threads and two
    /// cores, each on two threads (a helper thread takes half of each join).
    pub one_at_a_time: bool,
}

impl Backend for QHostBackend {
    fn name(&self) -> String {
        format!(
            "host quantized kernels ({} threads, {})",
            self.threads,
            self.isa.supported().name()
        )
    }
    fn run(&mut self, f: &Fixture, blob: &[u8]) -> Result<Vec<f32>> {
        let blob = AlignedBlob::from_bytes(blob);
        let m = blob.model()?;
        let engine = dws_host::fast::quantized::QEngine::new(&m, self.isa)?;
        if !self.one_at_a_time {
            return engine.run_batch(&f.inputs, f.batch, self.threads);
        }
        let mut out = Vec::new();
        for x in f.inputs.chunks(m.input_len()) {
            out.extend(engine.run_batch(x, 1, self.threads)?);
        }
        Ok(out)
    }
}

/// Result of a suite run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Fixtures within tolerance.
    pub passed: usize,
    /// Fixtures outside tolerance or failing to run.
    pub failed: usize,
    /// Names of the failed fixtures.
    pub failures: Vec<String>,
}

impl Report {
    /// Panics unless all of `fixtures` passed, listing the failures.
    #[track_caller]
    pub fn assert_all_passed(&self, fixtures: usize) {
        assert_eq!(
            (self.passed, self.failed),
            (fixtures, 0),
            "failures: {:?}",
            self.failures
        );
    }
}

/// Checks `[batch, output_len]` outputs against a case; `Ok(worst relative error)`.
pub fn check_outputs(case: &CaseRepr<'_>, out: &[f32]) -> Result<f32> {
    let per = case.output_len as usize;
    if out.len() != case.batch as usize * per {
        bail!(
            "backend returned {} values, expected {}",
            out.len(),
            case.batch as usize * per
        );
    }
    let mut worst = 0f32;
    for (k, y) in out.chunks(per).enumerate() {
        match case.check(k, y) {
            Ok(w) => worst = worst.max(w),
            Err(m) => bail!(
                "input {k}, output tensor {}, element {}: |diff| {:.3e} > allowed {:.3e}",
                m.tensor,
                m.index,
                m.diff,
                m.allowed
            ),
        }
    }
    Ok(worst)
}

/// Runs `backend` over `fixtures`, printing a line per fixture and `N passed, M failed`.
pub fn run_suite(backend: &mut dyn Backend, fixtures: &[Fixture]) -> Report {
    run_suite_with(backend, fixtures, |_, blob| blob.to_vec())
}

/// Runs `backend` over the golden blobs of `mode` (int8 or 16x8) of every
/// fixture, bit for bit, printing a line per fixture and `N passed, M failed`.
pub fn run_golden_suite(
    backend: &mut dyn Backend,
    fixtures: &[Fixture],
    mode: Activations,
) -> Report {
    let mut r = Report::default();
    let name = mode.precision().name();
    println!(
        "reference suite ({name}, bit-exact), backend {}:",
        backend.name()
    );
    for f in fixtures {
        let g = f.golden(mode);
        let res = backend
            .run(f, g.blob.bytes())
            .and_then(|out| check_outputs(&g.case(), &out));
        match res {
            Ok(_) => {
                r.passed += 1;
                println!("  ok    {:<28} bit-exact", f.name);
            }
            Err(e) => {
                r.failed += 1;
                r.failures.push(f.name.clone());
                println!("  FAIL  {:<28} {e:#}", f.name);
            }
        }
    }
    println!("{} passed, {} failed", r.passed, r.failed);
    r
}

/// Like [`run_suite`], handing each blob through `edit` first (for negative controls).
pub fn run_suite_with(
    backend: &mut dyn Backend,
    fixtures: &[Fixture],
    edit: impl Fn(&Fixture, &[u8]) -> Vec<u8>,
) -> Report {
    let mut r = Report::default();
    println!("reference suite, backend {}:", backend.name());
    for f in fixtures {
        let blob = edit(f, f.blob.bytes());
        let res = backend
            .run(f, &blob)
            .and_then(|out| check_outputs(&f.case(), &out));
        match res {
            Ok(worst) => {
                r.passed += 1;
                println!(
                    "  ok    {:<28} worst error {:.3} of tolerance",
                    f.name, worst
                );
            }
            Err(e) => {
                r.failed += 1;
                r.failures.push(f.name.clone());
                println!("  FAIL  {:<28} {e:#}", f.name);
            }
        }
    }
    println!("{} passed, {} failed", r.passed, r.failed);
    r
}
