//! `import dws`: the dws runtime from Python (PyO3 + maturin).
//!
//! A thin layer over `dws-host` and `dws-core`: NumPy (or torch) arrays in upstream's
//! weight-space layout go in, the host runner runs them on all cores with the GIL
//! released, NumPy (or torch) arrays come out. Errors are `dws.DwsError` (a
//! `ValueError`) carrying the CLI's message (`anyhow`'s `{:#}` chain).
//!
//! The Python half of the package (`python/dws/__init__.py`, `python/dws/ray.py`)
//! re-exports this module and adds the Ray Data helper.

use anyhow::{bail, Context};
use dws_core::blob::Precision;
use dws_core::case::CaseRepr;
use dws_core::plan::Output;
use dws_host::blob_io::{encode, AlignedBlob};
use dws_host::config::Config;
use dws_host::dataset::{self, Entry};
use dws_host::fast::quantized::{QEngine, QSpares};
use dws_host::fast::{FastModel, Isa};
use dws_host::tensors::{self, Tensor, TensorMap};
use dws_host::{convert, inspect, quantize, runner, weight_space};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{PyArray, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::path::{Path, PathBuf};
use std::sync::Arc;

create_exception!(
    dws,
    DwsError,
    PyValueError,
    "An error from dws. The message is the one the `dws` CLI prints."
);

/// The GPU backend (`dws-cuda`), in builds with the `cuda` feature.
#[cfg(any(feature = "cuda-13000", feature = "cuda-12080"))]
mod gpu {
    /// A model loaded on device 0; calls are serialized.
    pub type Gpu = std::sync::Mutex<dws_cuda::CudaModel>;

    pub fn load(blob: &[u8]) -> anyhow::Result<Gpu> {
        Ok(std::sync::Mutex::new(dws_cuda::CudaModel::load(blob)?))
    }

    pub fn run(g: &Gpu, data: &[f32], batch: usize) -> anyhow::Result<Vec<f32>> {
        let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.run_batch(data, batch)?)
    }

    pub fn available() -> bool {
        dws_cuda::available().is_ok()
    }
}

/// Without the GPU backend: no model can be on a GPU.
#[cfg(not(any(feature = "cuda-13000", feature = "cuda-12080")))]
mod gpu {
    /// The message of the `cuda` device in a build without the GPU backend.
    const NO_CUDA: &str = "dws-cuda backend not available in this build \
                           (build the package with the `cuda` feature: maturin build --features cuda)";

    pub enum Gpu {}

    pub fn load(_: &[u8]) -> anyhow::Result<Gpu> {
        anyhow::bail!(NO_CUDA)
    }

    pub fn run(g: &Gpu, _: &[f32], _: usize) -> anyhow::Result<Vec<f32>> {
        match *g {}
    }

    pub fn available() -> bool {
        false
    }
}

type Res<T> = anyhow::Result<T>;

fn py_err(e: anyhow::Error) -> PyErr {
    DwsError::new_err(format!("{e:#}"))
}

trait OrPy<T> {
    fn or_py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for Res<T> {
    fn or_py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
}

/// Runs `f` with the GIL released, mapping its error to `DwsError`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Res<T> + Send) -> PyResult<T> {
    py.detach(f).or_py()
}

fn threads_or(default: usize, threads: Option<usize>) -> PyResult<usize> {
    match threads {
        Some(0) => Err(DwsError::new_err("threads must be at least 1")),
        Some(t) => Ok(t),
        None => Ok(default),
    }
}

/// Whether `device` names the GPU (`Ok(false)`: the CPU).
fn check_device(device: &str) -> PyResult<bool> {
    let d = device.trim().to_ascii_lowercase();
    if d == "cpu" {
        Ok(false)
    } else if d == "cuda" || d == "cuda:0" || d == "gpu" {
        Ok(true)
    } else if d.starts_with("cuda:") {
        Err(DwsError::new_err(format!(
            "device `{device}`: dws runs on the first GPU only (\"cuda\" or \"cuda:0\")"
        )))
    } else {
        Err(DwsError::new_err(format!(
            "unknown device `{device}` (expected \"cpu\" or \"cuda\")"
        )))
    }
}

fn path_of(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    // str, pathlib.Path and anything else `os.fspath` takes.
    let os = obj.py().import("os")?;
    let s: String = os.getattr("fspath")?.call1((obj,))?.extract()?;
    Ok(PathBuf::from(s))
}

// ----------------------------------------------------------------------------------
// Arrays in and out.

/// What the caller passed: NumPy, or torch (outputs go back as torch, on its device).
struct Kind {
    torch_device: Option<Py<PyAny>>,
}

impl Kind {
    fn numpy() -> Self {
        Kind { torch_device: None }
    }
}

fn is_torch_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    // Never imports torch: a torch tensor can only exist when torch is loaded.
    let modules = obj.py().import("sys")?.getattr("modules")?;
    let Ok(torch) = modules.get_item("torch") else {
        return Ok(false);
    };
    let Ok(cls) = torch.getattr("Tensor") else {
        return Ok(false);
    };
    obj.is_instance(&cls)
}

/// Copies any array-like (NumPy array of any real dtype, torch tensor, nested lists)
/// into an f32 tensor.
fn read_array(obj: &Bound<'_, PyAny>, kind: &mut Kind, what: &str) -> PyResult<Tensor> {
    let py = obj.py();
    let mut obj = obj.clone();
    if is_torch_tensor(&obj)? {
        if kind.torch_device.is_none() {
            kind.torch_device = Some(obj.getattr("device")?.unbind());
        }
        obj = obj
            .call_method0("detach")?
            .call_method0("cpu")?
            .call_method0("float")?
            .call_method0("numpy")?;
    }
    let np = py.import("numpy")?;
    let f32_ = np.getattr("float32")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", f32_)?;
    let arr = np
        .getattr("ascontiguousarray")?
        .call((obj,), Some(&kwargs))
        .map_err(|e| DwsError::new_err(format!("{what} is not an array of numbers: {e}")))?;
    let arr = arr.cast_into::<PyArrayDyn<f32>>()?;
    let ro = arr.readonly();
    let data = ro
        .as_slice()
        .map_err(|e| DwsError::new_err(format!("{what}: {e}")))?
        .to_vec();
    Ok(Tensor {
        shape: arr.shape().to_vec(),
        data,
    })
}

fn new_array<'py>(py: Python<'py>, shape: &[usize], data: Vec<f32>) -> PyResult<Bound<'py, PyAny>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| DwsError::new_err(format!("internal: output shape {shape:?}: {e}")))?;
    Ok(PyArray::from_owned_array(py, a).into_any())
}

/// A NumPy array, or a torch tensor on the caller's device when the inputs were torch.
fn out_array<'py>(
    py: Python<'py>,
    kind: &Kind,
    shape: &[usize],
    data: Vec<f32>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = new_array(py, shape, data)?;
    match &kind.torch_device {
        None => Ok(a),
        Some(dev) => {
            let t = py.import("torch")?.getattr("from_numpy")?.call1((a,))?;
            let dev = dev.bind(py);
            if dev.getattr("type")?.extract::<String>()? == "cpu" {
                Ok(t)
            } else {
                t.call_method1("to", (dev,))
            }
        }
    }
}

/// A list/tuple of arrays (not one array: that would iterate over its batch axis).
fn read_list(
    obj: &Bound<'_, PyAny>,
    kind: &mut Kind,
    name: &str,
    expected: usize,
) -> PyResult<Vec<Tensor>> {
    let np_array = obj.py().import("numpy")?.getattr("ndarray")?;
    if obj.is_instance(&np_array)? || is_torch_tensor(obj)? {
        return Err(DwsError::new_err(format!(
            "{name} must be a list of {expected} arrays ({name}[i] for layer i), got one array"
        )));
    }
    let items: Vec<Bound<'_, PyAny>> = obj
        .try_iter()
        .map_err(|_| DwsError::new_err(format!("{name} must be a list of {expected} arrays")))?
        .collect::<PyResult<_>>()?;
    if items.len() != expected {
        return Err(DwsError::new_err(format!(
            "{name} has {} arrays, expected {expected} (the model's input network has {expected} layers)",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| read_array(x, kind, &format!("{name}[{i}]")))
        .collect()
}

/// `(weights, biases)` as the named tensors `weights.{i}` / `biases.{i}`; whether
/// the arrays lacked the batch axis.
fn read_weight_space(
    weights: &Bound<'_, PyAny>,
    biases: &Bound<'_, PyAny>,
    layers: usize,
    kind: &mut Kind,
) -> PyResult<(TensorMap, bool)> {
    let mut w = read_list(weights, kind, "weights", layers)?;
    let mut b = read_list(biases, kind, "biases", layers)?;
    // One unbatched input: [d_i, d_{i+1}, F] and [d_{i+1}, F].
    let unbatched = w.iter().all(|t| t.shape.len() == 3) && b.iter().all(|t| t.shape.len() == 2);
    if unbatched {
        for t in w.iter_mut().chain(b.iter_mut()) {
            t.shape.insert(0, 1);
        }
    }
    let mut map = TensorMap::new();
    for (i, t) in w.into_iter().enumerate() {
        map.insert(format!("weights.{i}"), t);
    }
    for (i, t) in b.into_iter().enumerate() {
        map.insert(format!("biases.{i}"), t);
    }
    Ok((map, unbatched))
}

/// Named tensors `{prefix}.{i}` as a list of arrays, dropping the batch axis if asked.
fn tensor_list<'py>(
    py: Python<'py>,
    kind: &Kind,
    map: &mut TensorMap,
    prefix: &str,
    layers: usize,
    squeeze: bool,
) -> PyResult<Bound<'py, PyList>> {
    let mut out = Vec::with_capacity(layers);
    for i in 0..layers {
        let t = map
            .remove(&format!("{prefix}.{i}"))
            .ok_or_else(|| DwsError::new_err(format!("internal: no output {prefix}.{i}")))?;
        let shape = if squeeze { &t.shape[1..] } else { &t.shape[..] };
        out.push(out_array(py, kind, shape, t.data)?);
    }
    PyList::new(py, out)
}

/// A flat `[n, input_len]` batch in the core's layout as `(weights, biases)` lists.
fn split_flat<'py>(
    py: Python<'py>,
    dims: &[u32],
    features: usize,
    n: usize,
    flat: &[f32],
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let shapes = weight_space::tensor_shapes(dims, features);
    let per: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let l = dims.len() - 1;
    let (mut ws, mut bs) = (Vec::with_capacity(l), Vec::with_capacity(l));
    let mut at = 0;
    for (k, (_, shape)) in shapes.iter().enumerate() {
        let m: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n * m);
        for b in 0..n {
            data.extend_from_slice(&flat[b * per + at..b * per + at + m]);
        }
        let mut full = vec![n];
        full.extend(shape);
        let a = new_array(py, &full, data)?;
        if k < l {
            ws.push(a);
        } else {
            bs.push(a);
        }
        at += m;
    }
    Ok((PyList::new(py, ws)?, PyList::new(py, bs)?))
}

// ----------------------------------------------------------------------------------
// Model.

type CoreModel<'a> = dws_core::Model<'a>;

self_cell::self_cell!(
    /// A blob and the core model opened (validated) over it.
    struct Loaded {
        owner: AlignedBlob,
        #[covariant]
        dependent: CoreModel,
    }
);

/// A `.dws` model, loaded once and run any number of times.
///
/// ``model(weights, biases)`` takes lists of arrays in upstream's layout:
/// ``weights[i]`` is ``[B, d_i, d_{i+1}, F]`` and ``biases[i]`` is ``[B, d_{i+1}, F]``
/// (or one input without the ``B`` axis). A classifier returns logits ``[B, C]``; a
/// DWSModel returns a ``(weights, biases)`` pair. NumPy in, NumPy out; torch tensors
/// in, torch tensors out. The batch runs on ``threads`` Rust threads with the GIL
/// released.
#[pyclass(module = "dws", frozen)]
struct Model {
    loaded: Loaded,
    threads: usize,
    device: String,
    path: Option<String>,
    dims: Vec<u32>,
    input_features: usize,
    output: Output,
    precision: Precision,
    input_len: usize,
    output_len: usize,
    scratch_len: usize,
    macs: u64,
    params: usize,
    /// The batched f32 engine (packed once here); `None` for int8 models and on the GPU.
    fast: Option<FastModel>,
    /// The quantized kernels (with their packed weights) kept between calls.
    q_spares: Arc<QSpares>,
    /// The model on the GPU (`device="cuda"`).
    gpu: Option<gpu::Gpu>,
}

impl Model {
    fn from_blob(
        blob: AlignedBlob,
        path: Option<String>,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let on_gpu = check_device(device)?;
        let threads = threads_or(runner::default_threads(), threads)?;
        // Validated once here; calls reuse the opened model.
        let loaded = Loaded::try_new(blob, |b| b.model()).or_py()?;
        let m = loaded.borrow_dependent();
        let gpu = if on_gpu {
            Some(gpu::load(loaded.borrow_owner().bytes()).or_py()?)
        } else {
            None
        };
        let fast = match m.precision() {
            Precision::F32 if gpu.is_none() => Some(FastModel::new(m).or_py()?),
            _ => None,
        };
        Ok(Model {
            device: if gpu.is_some() { "cuda" } else { "cpu" }.into(),
            gpu,
            fast,
            q_spares: Arc::default(),
            threads,
            path,
            dims: m.dims().to_vec(),
            input_features: m.spec().input_features as usize,
            output: m.spec().output,
            precision: m.precision(),
            input_len: m.input_len(),
            output_len: m.output_len(),
            scratch_len: m.scratch_len(),
            macs: m.layout().macs,
            params: match m.precision() {
                Precision::F32 => m.params().len(),
                Precision::Int8 | Precision::Int16x8 => m.param_bytes().len(),
            },
            loaded,
        })
    }

    /// The opened core model.
    fn core(&self) -> &dws_core::Model<'_> {
        self.loaded.borrow_dependent()
    }

    /// The blob bytes.
    fn bytes(&self) -> &[u8] {
        self.loaded.borrow_owner().bytes()
    }

    fn n_layers(&self) -> usize {
        self.dims.len() - 1
    }

    /// Runs flat inputs on the GPU, the fast engine (f32) or the core's int8
    /// executor with the host's SIMD kernels (the same bits as the core).
    fn run_engine(&self, data: &[f32], batch: usize, threads: usize) -> anyhow::Result<Vec<f32>> {
        match (&self.gpu, &self.fast) {
            (Some(g), _) => gpu::run(g, data, batch),
            (None, Some(f)) => f.run_batch(data, batch, threads),
            (None, None) => {
                let spares = Arc::clone(&self.q_spares);
                QEngine::with_spares(self.core(), Isa::detect(), spares)?
                    .run_batch(data, batch, threads)
            }
        }
    }

    /// Flattens, runs and returns `(batch, outputs)` with the GIL released.
    fn run_map(
        &self,
        py: Python<'_>,
        inputs: &TensorMap,
        threads: usize,
    ) -> PyResult<(usize, Vec<f32>)> {
        detached(py, || {
            let m = self.core();
            let (batch, data) = weight_space::flatten_inputs(m, inputs)?;
            let out = self.run_engine(&data, batch, threads)?;
            Ok((batch, out))
        })
    }

    /// Calibration inputs from `(weights, biases)` or one `(weights, biases)` pair.
    fn calibration_inputs(
        &self,
        weights: &Bound<'_, PyAny>,
        biases: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<TensorMap> {
        let mut kind = Kind::numpy();
        let (w, b) = match biases {
            Some(b) => (weights.clone(), b.clone()),
            None => {
                let pair = weights.cast::<PyTuple>().map_err(|_| {
                    DwsError::new_err(
                        "quantize takes (weights, biases): two lists of calibration arrays",
                    )
                })?;
                if pair.len() != 2 {
                    return Err(DwsError::new_err(
                        "quantize takes (weights, biases): two lists of calibration arrays",
                    ));
                }
                (pair.get_item(0)?, pair.get_item(1)?)
            }
        };
        Ok(read_weight_space(&w, &b, self.n_layers(), &mut kind)?.0)
    }
}

#[pymethods]
impl Model {
    /// Loads a ``.dws`` blob. ``device`` is ``"cpu"`` or ``"cuda"`` (the first GPU; needs
    /// a package built with the ``cuda`` feature, see ``dws.cuda_available()``);
    /// ``threads`` is the default number of worker threads of every CPU call (all cores
    /// when omitted).
    #[staticmethod]
    #[pyo3(signature = (path, *, device = "cpu", threads = None))]
    fn load(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let path = path_of(path)?;
        check_device(device)?;
        let blob = detached(py, || AlignedBlob::read(&path))?;
        Model::from_blob(blob, Some(path.display().to_string()), device, threads)
    }

    /// A model from blob bytes (what ``to_bytes`` returns or a ``.dws`` file holds).
    #[staticmethod]
    #[pyo3(signature = (data, *, device = "cpu", threads = None))]
    fn from_bytes(data: &[u8], device: &str, threads: Option<usize>) -> PyResult<Self> {
        Model::from_blob(AlignedBlob::from_bytes(data), None, device, threads)
    }

    /// Runs a batch: see the class documentation.
    #[pyo3(signature = (weights, biases, *, threads = None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        weights: &Bound<'py, PyAny>,
        biases: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let threads = threads_or(self.threads, threads)?;
        let mut kind = Kind::numpy();
        let (inputs, unbatched) = read_weight_space(weights, biases, self.n_layers(), &mut kind)?;
        let (batch, out) = self.run_map(py, &inputs, threads)?;
        drop(inputs);
        match self.output {
            Output::Logits { classes } => {
                let c = classes as usize;
                if unbatched {
                    out_array(py, &kind, &[c], out)
                } else {
                    out_array(py, &kind, &[batch, c], out)
                }
            }
            Output::WeightSpace { .. } => {
                let mut named = detached(py, || {
                    let m = self.core();
                    weight_space::unflatten_outputs(m, batch, &out)
                })?;
                let l = self.n_layers();
                let w = tensor_list(py, &kind, &mut named, "weights", l, unbatched)?;
                let b = tensor_list(py, &kind, &mut named, "biases", l, unbatched)?;
                Ok(PyTuple::new(py, [w.into_any(), b.into_any()])?.into_any())
            }
        }
    }

    /// Runs inputs already in the core's flat layout: ``[B, input_len]`` (or
    /// ``[input_len]``) float32 to ``[B, output_len]`` (or ``[output_len]``).
    #[pyo3(signature = (inputs, *, threads = None))]
    fn run_flat<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let threads = threads_or(self.threads, threads)?;
        let mut kind = Kind::numpy();
        let x = read_array(inputs, &mut kind, "inputs")?;
        let (per, ilen) = (self.output_len, self.input_len);
        let batch = match x.shape.as_slice() {
            [n] if *n == ilen => None,
            [b, n] if *n == ilen => Some(*b),
            s => {
                return Err(DwsError::new_err(format!(
                    "inputs have shape {s:?}, expected [B, {ilen}] or [{ilen}]"
                )))
            }
        };
        let b = batch.unwrap_or(1);
        let out = detached(py, || {
            if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
                let at = match batch {
                    Some(_) => format!("[{}, {}]", i / ilen, i % ilen),
                    None => format!("[{i}]"),
                };
                bail!("inputs hold a NaN or infinity at {at}");
            }
            self.run_engine(&x.data, b, threads)
        })?;
        match batch {
            None => out_array(py, &kind, &[per], out),
            Some(b) => out_array(py, &kind, &[b, per], out),
        }
    }

    /// Quantizes this f32 model with calibration inputs (``weights``, ``biases``
    /// as for a call, a few hundred typical inputs): ``dws quantize`` in memory.
    /// ``activations`` is ``"int8"`` or ``"int16"`` (the 16x8 mode),
    /// ``weight_scales`` ``"per-channel"`` or ``"per-tensor"``, ``rounding``
    /// ``"adaround"`` or ``"nearest"`` (see docs/quantization.md). Returns the
    /// quantized model.
    #[pyo3(signature = (weights, biases = None, *, activations = "int8", weight_scales = "per-channel", rounding = "adaround"))]
    fn quantize(
        &self,
        py: Python<'_>,
        weights: &Bound<'_, PyAny>,
        biases: Option<&Bound<'_, PyAny>>,
        activations: &str,
        weight_scales: &str,
        rounding: &str,
    ) -> PyResult<Self> {
        let choice = |what: &str, v: &str, options: &[&str]| -> PyResult<usize> {
            options.iter().position(|o| *o == v).ok_or_else(|| {
                DwsError::new_err(format!(
                    "{what} must be one of {}, not {v:?}",
                    options
                        .iter()
                        .map(|o| format!("{o:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let opts = quantize::Options {
            weights: [
                quantize::WeightScales::PerChannel,
                quantize::WeightScales::PerTensor,
            ][choice(
                "weight_scales",
                weight_scales,
                &["per-channel", "per-tensor"],
            )?],
            rounding: [quantize::Rounding::Adaround, quantize::Rounding::Nearest]
                [choice("rounding", rounding, &["adaround", "nearest"])?],
            threads: self.threads,
            ..quantize::Options::new(
                [quantize::Activations::Int8, quantize::Activations::Int16]
                    [choice("activations", activations, &["int8", "int16"])?],
            )
        };
        let inputs = self.calibration_inputs(weights, biases)?;
        let bytes = detached(py, || {
            let m = self.core();
            let (n, data) =
                weight_space::flatten_inputs(m, &inputs).context("in the calibration inputs")?;
            if n == 0 {
                bail!("the calibration set is empty");
            }
            if m.precision() != Precision::F32 {
                bail!("the model is already quantized ({})", m.precision().name());
            }
            let cal = quantize::calibrate(m, &data, &opts)?;
            Ok(quantize::quantize(m, &cal, &opts)?.blob)
        })?;
        Model::from_blob(
            AlignedBlob::from_bytes(&bytes),
            None,
            &self.device,
            Some(self.threads),
        )
    }

    /// The blob bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.bytes())
    }

    /// Writes the blob to ``path``.
    fn save(&self, path: &Bound<'_, PyAny>) -> PyResult<()> {
        let path = path_of(path)?;
        std::fs::write(&path, self.bytes())
            .with_context(|| format!("writing {}", path.display()))
            .or_py()
    }

    /// ``dws inspect``'s summary: architecture, sizes, cost.
    fn summary(&self) -> PyResult<String> {
        let m = self.core();
        inspect::summary(m, self.bytes().len()).map_err(|e| DwsError::new_err(format!("{e}")))
    }

    /// ``d_0 .. d_L`` of the input network.
    #[getter]
    fn dims(&self) -> Vec<u32> {
        self.dims.clone()
    }

    /// Number of weight matrices ``L`` of the input network.
    #[getter]
    fn layers(&self) -> usize {
        self.dims.len() - 1
    }

    /// Features per weight-space entry of the input (``F``).
    #[getter]
    fn input_features(&self) -> usize {
        self.input_features
    }

    /// Per-input shapes ``(weights, biases)``: ``[d_i, d_{i+1}, F]`` and ``[d_{i+1}, F]``.
    #[getter]
    fn input_shapes(&self) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
        let s = weight_space::tensor_shapes(&self.dims, self.input_features);
        let l = self.n_layers();
        let mut it = s.into_iter().map(|(_, s)| s);
        let w = it.by_ref().take(l).collect();
        (w, it.collect())
    }

    /// ``"DWSModelForClassification"`` or ``"DWSModel"``.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.output {
            Output::Logits { .. } => "DWSModelForClassification",
            Output::WeightSpace { .. } => "DWSModel",
        }
    }

    /// Whether the model returns class logits.
    #[getter]
    fn is_classifier(&self) -> bool {
        matches!(self.output, Output::Logits { .. })
    }

    /// Number of classes of a classifier (``None`` for a DWSModel).
    #[getter]
    fn classes(&self) -> Option<u32> {
        match self.output {
            Output::Logits { classes } => Some(classes),
            Output::WeightSpace { .. } => None,
        }
    }

    /// Output features of a DWSModel (``None`` for a classifier).
    #[getter]
    fn output_features(&self) -> Option<u32> {
        match self.output {
            Output::Logits { .. } => None,
            Output::WeightSpace { features } => Some(features),
        }
    }

    /// ``"f32"``, ``"int8"`` or ``"16x8"``.
    #[getter]
    fn precision(&self) -> &'static str {
        match self.precision {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Int16x8 => "16x8",
        }
    }

    /// f32 values of one input in the core's flat layout.
    #[getter]
    fn input_len(&self) -> usize {
        self.input_len
    }

    /// f32 values of one output.
    #[getter]
    fn output_len(&self) -> usize {
        self.output_len
    }

    /// Bytes of scratch memory one inference needs (per worker thread).
    #[getter]
    fn scratch_bytes(&self) -> usize {
        4 * self.scratch_len
    }

    /// Bytes of the blob.
    #[getter]
    fn blob_bytes(&self) -> usize {
        self.bytes().len()
    }

    /// Parameters (f32 values; bytes of the parameter section for int8).
    #[getter]
    fn parameters(&self) -> usize {
        self.params
    }

    /// Multiply-accumulates per input.
    #[getter]
    fn macs(&self) -> u64 {
        self.macs
    }

    /// Default worker threads of a call.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Where the model runs: ``"cpu"``.
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// The file the model was loaded from, if any.
    #[getter]
    fn path(&self) -> Option<String> {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        let what = match self.output {
            Output::Logits { classes } => format!("{classes} classes"),
            Output::WeightSpace { features } => format!("{features} output features"),
        };
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!(
            "<dws.Model {} dims={} F={} {} {}, {} threads>",
            self.kind(),
            dims.join("-"),
            self.input_features,
            what,
            self.precision(),
            self.threads
        )
    }
}

// ----------------------------------------------------------------------------------
// Functions.

/// A checkpoint (or statistics) as ``dws.convert`` takes it: a file, or tensors in
/// memory.
enum Checkpoint {
    File(PathBuf),
    Tensors(TensorMap),
}

impl Checkpoint {
    /// A path; or a module (its ``state_dict()``); or a mapping of tensors or arrays,
    /// whose nested mappings and sequences (``statistics.pth`` holds ``{"weights":
    /// {"mean": [...]}}``) are flattened with ``.`` the way a torch file is read.
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Checkpoint> {
        let mut obj = obj.clone();
        if obj.hasattr("state_dict")? && obj.getattr("state_dict")?.is_callable() {
            obj = obj.call_method0("state_dict")?;
        }
        if !obj.hasattr("items")? {
            return Ok(Checkpoint::File(path_of(&obj)?));
        }
        let mut out = TensorMap::new();
        flatten_tensors("", &obj, &mut out)?;
        Ok(Checkpoint::Tensors(out))
    }

    fn read(self) -> Res<TensorMap> {
        match self {
            Checkpoint::File(p) => tensors::read_checkpoint(&p),
            Checkpoint::Tensors(t) => Ok(t),
        }
    }

    fn name(&self) -> String {
        match self {
            Checkpoint::File(p) => p.display().to_string(),
            Checkpoint::Tensors(_) => "the state_dict".to_string(),
        }
    }
}

/// Adds the tensors of `obj` (a mapping, a list or tuple, or an array) under `prefix`.
fn flatten_tensors(prefix: &str, obj: &Bound<'_, PyAny>, out: &mut TensorMap) -> PyResult<()> {
    let key = |k: String| match prefix {
        "" => k,
        p => format!("{p}.{k}"),
    };
    if obj.hasattr("items")? {
        for item in obj.call_method0("items")?.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            flatten_tensors(&key(k.str()?.to_string()), &v, out)?;
        }
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        for (i, v) in obj.try_iter()?.enumerate() {
            flatten_tensors(&key(i.to_string()), &v?, out)?;
        }
    } else {
        out.insert(
            prefix.to_string(),
            read_array(obj, &mut Kind::numpy(), &format!("`{prefix}`"))?,
        );
    }
    Ok(())
}

/// ``dws convert``: an upstream checkpoint and its config (a JSON file, or a dict of
/// the upstream constructor's keyword arguments plus ``"model"``) become a model,
/// written to ``output`` when given. The checkpoint is a file (``.pt``/``.pth`` or
/// ``.safetensors``, as for ``dws convert``), or in memory: the trained module itself
/// or its ``state_dict()`` (torch tensors or NumPy arrays). ``statistics`` is
/// upstream's ``statistics.pth``, a file or the loaded dict.
#[pyfunction(name = "convert")]
#[pyo3(signature = (checkpoint, config, output = None, statistics = None, *, threads = None))]
fn convert_checkpoint(
    py: Python<'_>,
    checkpoint: &Bound<'_, PyAny>,
    config: &Bound<'_, PyAny>,
    output: Option<&Bound<'_, PyAny>>,
    statistics: Option<&Bound<'_, PyAny>>,
    threads: Option<usize>,
) -> PyResult<Model> {
    let checkpoint = Checkpoint::from_py(checkpoint)?;
    let statistics = statistics.map(Checkpoint::from_py).transpose()?;
    let output = output.map(path_of).transpose()?;
    enum Cfg {
        File(PathBuf),
        Json(String),
    }
    let cfg = if config.is_instance_of::<PyDict>() {
        let json = py.import("json")?;
        let text: String = json.getattr("dumps")?.call1((config,))?.extract()?;
        Cfg::Json(text)
    } else {
        Cfg::File(path_of(config)?)
    };
    let bytes = detached(py, || {
        let cfg = match &cfg {
            Cfg::File(p) => Config::load(p)?,
            Cfg::Json(t) => Config::parse(t).context("in the config dict")?,
        };
        let what = checkpoint.name();
        let sd = checkpoint.read()?;
        let stats = statistics.map(Checkpoint::read).transpose()?;
        let plan = convert::convert(&cfg, &sd, stats.as_ref())
            .with_context(|| format!("converting {what}"))?;
        let bytes = encode(&plan)?;
        AlignedBlob::from_bytes(&bytes)
            .model()
            .context("the converted model failed validation")?;
        if let Some(out) = &output {
            std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(bytes)
    })?;
    Model::from_blob(
        AlignedBlob::from_bytes(&bytes),
        output.map(|p| p.display().to_string()),
        "cpu",
        threads,
    )
}

/// Reads every tensor of a safetensors file (or a torch checkpoint) as float32 NumPy
/// arrays: ``{name: array}``.
#[pyfunction]
fn read_tensors<'py>(py: Python<'py>, path: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let path = path_of(path)?;
    let map = detached(py, || tensors::read_checkpoint(&path))?;
    let d = PyDict::new(py);
    for (name, t) in map {
        d.set_item(name, new_array(py, &t.shape, t.data)?)?;
    }
    Ok(d)
}

/// Writes ``{name: array}`` as a float32 safetensors file (the ``dws run`` input and
/// output format).
#[pyfunction]
fn write_safetensors(
    py: Python<'_>,
    path: &Bound<'_, PyAny>,
    tensors: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let path = path_of(path)?;
    let mut kind = Kind::numpy();
    let mut map = TensorMap::new();
    for (k, v) in tensors.iter() {
        let name: String = k.extract()?;
        let t = read_array(&v, &mut kind, &name)?;
        map.insert(name, t);
    }
    detached(py, || tensors::write_safetensors(&path, &map))
}

/// Decodes a reference case (``case.bin``, ``case_int8.bin``): a dict with ``name``,
/// ``batch``, ``inputs`` (``[batch, input_len]``), ``expected`` (``[batch,
/// output_len]``), ``segments`` (elements of each output tensor) and ``scale``
/// (per output tensor, max |expected|).
#[pyfunction]
fn read_case<'py>(py: Python<'py>, path: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let path = path_of(path)?;
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading case {}", path.display()))
        .or_py()?;
    let c = CaseRepr::new_checked(&bytes)
        .map_err(|e| DwsError::new_err(format!("{}: {e}", path.display())))?;
    let floats = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (b, i, o) = (
        c.batch as usize,
        c.input_len as usize,
        c.output_len as usize,
    );
    let d = PyDict::new(py);
    d.set_item("name", c.name)?;
    d.set_item("batch", b)?;
    d.set_item("inputs", new_array(py, &[b, i], floats(c.inputs))?)?;
    d.set_item("expected", new_array(py, &[b, o], floats(c.expected))?)?;
    d.set_item("segments", c.segments.to_vec())?;
    d.set_item("scale", floats(c.scale))?;
    d.set_item("tolerance", dws_core::case::RELATIVE_TOLERANCE)?;
    Ok(d)
}

/// Entries of an INR dataset: split ``split`` of an upstream splits JSON, or every INR
/// file under a folder. A list of dicts ``{"path", "file", "label"}``: ``path`` as
/// written in the splits file, ``file`` where it is read from, ``label`` an int or
/// ``None``. A listed file that is not where its path says (a dataset that moved) is
/// looked for by the path's trailing parts under ``data_root``, then under the splits
/// file's folder (as ``dws eval --data-root``).
#[pyfunction]
#[pyo3(signature = (splits, split = "test", *, data_root = None))]
fn dataset_entries<'py>(
    py: Python<'py>,
    splits: &Bound<'py, PyAny>,
    split: &str,
    data_root: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let splits = path_of(splits)?;
    let data_root = data_root.map(path_of).transpose()?;
    let entries = detached(py, || list_entries(&splits, split, data_root.as_deref()))?;
    let items = entries
        .into_iter()
        .map(|e| {
            let d = PyDict::new(py);
            d.set_item("path", e.path)?;
            d.set_item("file", e.file.display().to_string())?;
            d.set_item("label", e.label)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn list_entries(splits: &Path, split: &str, data_root: Option<&Path>) -> Res<Vec<Entry>> {
    if splits.is_dir() {
        if data_root.is_some() {
            bail!(
                "data_root applies to a splits JSON, and {} is a folder",
                splits.display()
            );
        }
        dataset::list_dir(splits)
    } else {
        dataset::read_splits(splits, split, data_root)
    }
}

/// Orders keys like `seq.10.weight` after `seq.9.weight` (as `dws_host::dataset` does).
fn natural_key(s: &str) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let digit = c.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (head, tail) = rest.split_at(end);
        if digit {
            let t = head.trim_start_matches('0');
            out.push((0, format!("{:0>20}", t)));
        } else {
            out.push((1, head.to_string()));
        }
        rest = tail;
    }
    out
}

/// The layer widths `d_0 .. d_L` of the MLP in an INR file.
fn infer_dims(file: &Path) -> Res<Vec<u32>> {
    let sd = tensors::read_checkpoint(file)?;
    let mut weights: Vec<&String> = sd
        .keys()
        .filter(|k| k.rsplit('.').next() == Some("weight"))
        .collect();
    weights.sort_by_key(|k| natural_key(k));
    if weights.is_empty() {
        bail!(
            "{}: no `weight` tensors, cannot infer the layer widths (pass dims=)",
            file.display()
        );
    }
    let mut dims = Vec::new();
    for (i, k) in weights.iter().enumerate() {
        let s = &sd[*k].shape;
        if s.len() != 2 {
            bail!(
                "{}: `{k}` has shape {s:?}, expected nn.Linear's [out, in]",
                file.display()
            );
        }
        if i == 0 {
            dims.push(s[1] as u32);
        }
        dims.push(s[0] as u32);
    }
    Ok(dims)
}

/// Layer widths, the inputs that loaded, and the failures as messages.
type LoadedInrs = (Vec<u32>, dataset::Loaded, Vec<(usize, String)>);

/// Loads INR files (the layer widths default to the first file's).
fn load_inrs(entries: &[Entry], dims: Option<Vec<u32>>, threads: usize) -> Res<LoadedInrs> {
    let dims = match dims {
        Some(d) => d,
        None => match entries.first() {
            Some(e) => infer_dims(&e.file)?,
            None => bail!("the dataset is empty"),
        },
    };
    if dims.len() < 2 || dims.contains(&0) {
        bail!("dims must be at least two positive layer widths, got {dims:?}");
    }
    let input_len: usize = dims
        .windows(2)
        .map(|w| (w[0] as usize) * (w[1] as usize) + w[1] as usize)
        .sum();
    let mut loaded = dataset::load_batch(entries, &dims, input_len, threads);
    let failed = std::mem::take(&mut loaded.failed)
        .into_iter()
        .map(|(i, e)| {
            let entry = &entries[i];
            let file = entry.file.display().to_string();
            let msg = if file == entry.path {
                format!("{}: {e:#}", entry.path)
            } else {
                format!("{} (read as {file}): {e:#}", entry.path)
            };
            (i, msg)
        })
        .collect();
    Ok((dims, loaded, failed))
}

fn dims_arg(dims: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<u32>>> {
    let Some(d) = dims else { return Ok(None) };
    if let Ok(m) = d.cast::<Model>() {
        let m = m.get();
        if m.input_features != 1 {
            return Err(DwsError::new_err(format!(
                "the model takes {} input features per entry; INR files have 1",
                m.input_features
            )));
        }
        return Ok(Some(m.dims.clone()));
    }
    Ok(Some(d.extract()?))
}

/// Reads INR files (``torch.save``d state_dicts of ``nn.Linear`` MLPs, or safetensors)
/// into ``(weights, biases, errors)``: ``weights[i]`` ``[n, d_i, d_{i+1}, 1]`` and
/// ``biases[i]`` ``[n, d_{i+1}, 1]`` hold the files that could be read, in order;
/// ``errors`` maps the index of each file that could not to why (only with
/// ``skip_errors=True``; otherwise the first such file raises). ``dims`` (layer
/// widths, or a ``Model``) defaults to the first file's.
#[pyfunction]
#[pyo3(signature = (files, *, dims = None, threads = None, skip_errors = false))]
fn read_inr_files<'py>(
    py: Python<'py>,
    files: &Bound<'py, PyAny>,
    dims: Option<&Bound<'py, PyAny>>,
    threads: Option<usize>,
    skip_errors: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let threads = threads_or(runner::default_threads(), threads)?;
    let dims = dims_arg(dims)?;
    let entries = files
        .try_iter()?
        .map(|f| {
            let p = path_of(&f?)?;
            Ok(Entry {
                path: p.display().to_string(),
                file: p,
                label: None,
                relocated: false,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let (dims, loaded, failed) = detached(py, || load_inrs(&entries, dims, threads))?;
    if !skip_errors {
        if let Some((_, msg)) = failed.first() {
            return Err(DwsError::new_err(msg.clone()));
        }
    }
    let (w, b) = split_flat(py, &dims, 1, loaded.ok.len(), &loaded.data)?;
    let errors = PyDict::new(py);
    for (i, msg) in failed {
        errors.set_item(i, msg)?;
    }
    PyTuple::new(py, [w.into_any(), b.into_any(), errors.into_any()])
}

/// Reads split ``split`` of an INR dataset (an upstream splits JSON, or a folder of
/// INR files) into ``(weights, biases, labels, paths)``: the arrays as for
/// ``read_inr_files``, ``labels`` an int64 array (``None`` when the dataset has no
/// labels) and ``paths`` as written in the splits file. A file that cannot be read
/// raises, or with ``skip_errors=True`` is left out with a warning. ``data_root`` as
/// for ``dataset_entries``.
#[pyfunction]
#[pyo3(signature = (splits, split = "test", *, dims = None, threads = None, skip_errors = false, data_root = None))]
fn read_inr_dataset<'py>(
    py: Python<'py>,
    splits: &Bound<'py, PyAny>,
    split: &str,
    dims: Option<&Bound<'py, PyAny>>,
    threads: Option<usize>,
    skip_errors: bool,
    data_root: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let threads = threads_or(runner::default_threads(), threads)?;
    let dims = dims_arg(dims)?;
    let splits = path_of(splits)?;
    let data_root = data_root.map(path_of).transpose()?;
    let (entries, (dims, loaded, failed)) = detached(py, || {
        let entries = list_entries(&splits, split, data_root.as_deref())?;
        let loaded = load_inrs(&entries, dims, threads)?;
        Ok((entries, loaded))
    })?;
    if let Some((_, msg)) = failed.first() {
        if !skip_errors {
            return Err(DwsError::new_err(msg.clone()));
        }
        let warn = py.import("warnings")?.getattr("warn")?;
        for (_, msg) in &failed {
            warn.call1((format!("skipping {msg}"),))?;
        }
    }
    let n = loaded.ok.len();
    let (w, b) = split_flat(py, &dims, 1, n, &loaded.data)?;
    let kept: Vec<&Entry> = loaded.ok.iter().map(|&i| &entries[i]).collect();
    let labels = if !entries.is_empty() && entries.iter().all(|e| e.label.is_some()) {
        let l: Vec<i64> = kept.iter().map(|e| e.label.unwrap_or(-1)).collect();
        PyArray::from_vec(py, l).into_any()
    } else {
        py.None().into_bound(py)
    };
    let paths = PyList::new(py, kept.iter().map(|e| e.path.as_str()))?;
    PyTuple::new(py, [w.into_any(), b.into_any(), labels, paths.into_any()])
}

/// Whether this build can run models on a GPU (``device="cuda"``).
#[pyfunction]
fn cuda_available() -> bool {
    gpu::available()
}

/// Number of worker threads a call uses by default: all cores.
#[pyfunction]
fn default_threads() -> usize {
    runner::default_threads()
}

#[pymodule]
fn _dws(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DwsError", m.py().get_type::<DwsError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("RELATIVE_TOLERANCE", dws_core::case::RELATIVE_TOLERANCE)?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(convert_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(write_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(read_case, m)?)?;
    m.add_function(wrap_pyfunction!(dataset_entries, m)?)?;
    m.add_function(wrap_pyfunction!(read_inr_files, m)?)?;
    m.add_function(wrap_pyfunction!(read_inr_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_available, m)?)?;
    m.add_function(wrap_pyfunction!(default_threads, m)?)?;
    Ok(())
}
