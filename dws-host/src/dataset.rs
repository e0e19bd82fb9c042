//! INR datasets in upstream's layout: one `torch.save`d state_dict per input network,
//! listed by a splits JSON or found in a directory.
//!
//! An INR file holds an MLP's `nn.Linear` parameters, `seq.{k}.weight` (`[out, in]`)
//! and `seq.{k}.bias` (`[out]`), as upstream's `experiments/data.py` reads them. Like
//! upstream, every weight is transposed to `[in, out]` and every tensor gets a trailing
//! feature axis of size 1, so the input becomes `W_0..W_{L-1}` (`[d_i, d_{i+1}, 1]`)
//! then `b_0..b_{L-1}` (`[d_{i+1}, 1]`): the core's flat layout (see
//! [`dws_core::Model::run`]). Keys are matched by their last component (`weight` /
//! `bias`) and ordered by layer number (`seq.10` after `seq.9`); other entries are
//! ignored, as upstream ignores them.
//!
//! A splits file is upstream's `{split: {"path": [...], "label": [...]}}`. Relative paths
//! are looked up in the splits file's folder first, then in the current folder (where
//! upstream's own `torch.load(path)` looks). Upstream writes absolute paths, so a dataset
//! that moved (to another machine or folder) is found by the paths' trailing parts under
//! a data root or the splits file's folder (see [`resolve`]).

use crate::tensors::{self, TensorMap};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One input network of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as written in the splits file (or found in the directory).
    pub path: String,
    /// Where the file is read from.
    pub file: PathBuf,
    /// The class label, if the dataset has one.
    pub label: Option<i64>,
    /// Whether the file was found by the trailing parts of `path` under a data root or
    /// the splits file's folder, not where `path` says (see [`resolve`]).
    pub relocated: bool,
}

/// A note for the user when `entries` were read from somewhere else than their paths
/// say: how many, and one example.
pub fn relocation_note(entries: &[Entry]) -> Option<String> {
    let moved: Vec<&Entry> = entries.iter().filter(|e| e.relocated).collect();
    let first = moved.first()?;
    Some(format!(
        "note: {} of {} listed files are not where their paths say; each is read from the \
         file that its trailing path parts name under the data root or the splits file's \
         folder (e.g. {} is read from {})",
        moved.len(),
        entries.len(),
        first.path,
        first.file.display()
    ))
}

/// File extensions [`list_dir`] picks up.
pub const INR_EXTENSIONS: [&str; 3] = ["pth", "pt", "safetensors"];

/// Reads split `split` of an upstream splits JSON; each path is looked up as [`resolve`]
/// says, with `data_root` (if any) before the splits file's folder. Two paths that
/// would be read from the same file, one of them found by its trailing parts, are an
/// error (a data root that matches too little of the paths).
///
/// `"label"` may be missing (labels unknown); when present it must have one integer
/// (or integral number, or string of an integer, as upstream's `int(label)` accepts)
/// per path.
pub fn read_splits(splits: &Path, split: &str, data_root: Option<&Path>) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(splits)
        .with_context(|| format!("cannot read splits file {}", splits.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", splits.display()))?;
    let Value::Object(all) = &json else {
        bail!(
            "{}: expected an object {{split: {{\"path\": [...], \"label\": [...]}}}}",
            splits.display()
        );
    };
    let Some(part) = all.get(split) else {
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        bail!(
            "{}: no split `{split}` (the file has: {})",
            splits.display(),
            names.join(", ")
        );
    };
    let at = |what: &str| format!("{}: split `{split}`: {what}", splits.display());
    let paths = part
        .get("path")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!(at("expected a \"path\" array")))?;
    let labels = match part.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::Array(l)) => Some(l),
        Some(_) => bail!(at("\"label\" is not an array")),
    };
    if let Some(l) = labels {
        if l.len() != paths.len() {
            bail!(at(&format!("{} paths but {} labels", paths.len(), l.len())));
        }
    }
    if paths.is_empty() {
        bail!(at("the split is empty"));
    }
    let base = splits.parent().unwrap_or(Path::new(""));
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = p
                .as_str()
                .ok_or_else(|| anyhow!(at(&format!("path {i} is not a string: {p}"))))?;
            let label = labels
                .map(|l| {
                    parse_label(&l[i]).ok_or_else(|| {
                        anyhow!(at(&format!("label {i} ({}) is not an integer", l[i])))
                    })
                })
                .transpose()?;
            let (file, relocated) = resolve(base, data_root, path);
            Ok(Entry {
                path: path.to_string(),
                file,
                label,
                relocated,
            })
        })
        .collect::<Result<Vec<Entry>>>()
        .and_then(|entries| {
            check_distinct(&entries).map_err(|e| anyhow!(at(&e)))?;
            Ok(entries)
        })
}

/// An error when two different paths, one of them relocated, name the same file.
fn check_distinct(entries: &[Entry]) -> std::result::Result<(), String> {
    if !entries.iter().any(|e| e.relocated) {
        return Ok(());
    }
    let mut seen: std::collections::HashMap<&Path, &Entry> = Default::default();
    for e in entries {
        match seen.insert(&e.file, e) {
            Some(other) if other.path != e.path && (other.relocated || e.relocated) => {
                return Err(format!(
                    "`{}` and `{}` would both be read from {} (found by their trailing path \
                     parts): pass --data-root with the folder that holds the paths' distinct \
                     parts",
                    other.path,
                    e.path,
                    e.file.display()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_label(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Where the file of a splits entry `path` is read from, and whether it was relocated:
///
/// 1. the path as written: an absolute path as it is, a relative one in `base` (the
///    splits file's folder), then in the current folder;
/// 2. otherwise (a dataset that moved: upstream writes absolute paths), relocated: the
///    longest trailing part of `path`, at least the file and its folder, that names a
///    file under `data_root` or else under `base`: `/old/home/dataset/inrs/test/0_1.pth`
///    is found as `ROOT/inrs/test/0_1.pth`, or as `ROOT/test/0_1.pth`.
///
/// When it is found nowhere, the candidate of step 1 is returned (and its read error
/// names it).
pub fn resolve(base: &Path, data_root: Option<&Path>, path: &str) -> (PathBuf, bool) {
    let p = Path::new(path);
    let as_written = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    if as_written.exists() {
        return (as_written, false);
    }
    if !p.is_absolute() && p.is_file() {
        return (p.to_path_buf(), false);
    }
    let parts = normal_parts(p);
    (parts.len().min(2)..=parts.len())
        .rev()
        .flat_map(|keep| {
            let tail: PathBuf = parts[parts.len() - keep..].iter().collect();
            data_root
                .into_iter()
                .chain([base])
                .map(move |root| root.join(&tail))
        })
        .find(|candidate| candidate.is_file())
        .map_or((as_written, false), |found| (found, true))
}

/// The named parts of a path (no root, `.` or `..`).
fn normal_parts(path: &Path) -> Vec<&std::ffi::OsStr> {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

/// Every INR file (`.pth`, `.pt`, `.safetensors`) under `dir`, recursively, sorted by path;
/// hidden files and folders are skipped. Labels are unknown.
pub fn list_dir(dir: &Path) -> Result<Vec<Entry>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no INR files (.{}) found",
            dir.display(),
            INR_EXTENSIONS.join(", .")
        );
    }
    Ok(files
        .into_iter()
        .map(|file| Entry {
            path: file.to_string_lossy().into_owned(),
            file,
            label: None,
            relocated: false,
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        // `file_type` does not follow symbolic links, so linked folders cannot loop;
        // `is_file` follows them, so linked files are read.
        let ft = e
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if path.is_file()
            && path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| INR_EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e)))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Orders keys like `seq.10.weight` after `seq.9.weight`: digit runs compare as numbers.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> impl Iterator<Item = (bool, &str)> + '_ {
        let mut rest = s;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (head, tail) = rest.split_at(end);
            rest = tail;
            Some((digit, head))
        })
    }
    let (mut x, mut y) = (parts(a), parts(b));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some((true, p)), Some((true, q))) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                let o = p.len().cmp(&q.len()).then_with(|| p.cmp(q));
                if o.is_ne() {
                    return o;
                }
            }
            (Some((_, p)), Some((_, q))) => {
                let o = p.cmp(q);
                if o.is_ne() {
                    return o;
                }
            }
        }
    }
}

/// Writes an INR state_dict as one input of a model with layer widths `dims` and one
/// feature per entry into `out` (`input_len` elements).
pub fn inr_to_input(sd: &TensorMap, dims: &[u32], out: &mut [f32]) -> Result<()> {
    let l = dims.len() - 1;
    let d = |i: usize| dims[i] as usize;
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let mut weights: Vec<&String> = sd.keys().filter(|k| last(k) == "weight").collect();
    let mut biases: Vec<&String> = sd.keys().filter(|k| last(k) == "bias").collect();
    weights.sort_by(|a, b| natural_cmp(a, b));
    biases.sort_by(|a, b| natural_cmp(a, b));
    let dims_str = format!("{dims:?}");
    if weights.len() != l || biases.len() != l {
        const SHOWN: usize = 8;
        let mut keys: Vec<&str> = sd.keys().take(SHOWN).map(String::as_str).collect();
        let more = format!("... ({} more)", sd.len().saturating_sub(SHOWN));
        if sd.len() > SHOWN {
            keys.push(&more);
        }
        bail!(
            "expected {l} weights and {l} biases (an MLP with layer widths {dims_str}), \
             found {} weights and {} biases (keys: {})",
            weights.len(),
            biases.len(),
            keys.join(", ")
        );
    }
    let need: usize = (0..l).map(|i| d(i) * d(i + 1) + d(i + 1)).sum();
    if out.len() != need {
        bail!(
            "internal: input buffer holds {} values, expected {need}",
            out.len()
        );
    }
    let mut at = 0;
    for (i, key) in weights.iter().enumerate() {
        let t = &sd[*key];
        let (rows, cols) = (d(i), d(i + 1));
        if t.shape != [cols, rows] {
            bail!(
                "`{key}` has shape {:?}, expected [{cols}, {rows}] (nn.Linear's [out, in] \
                 for layer widths {dims_str})",
                t.shape
            );
        }
        check_finite(key, t)?;
        // [out, in] -> [in, out] (one feature per entry).
        for r in 0..rows {
            for c in 0..cols {
                out[at + r * cols + c] = t.data[c * rows + r];
            }
        }
        at += rows * cols;
    }
    for (i, key) in biases.iter().enumerate() {
        let t = &sd[*key];
        if t.shape != [d(i + 1)] {
            bail!(
                "`{key}` has shape {:?}, expected [{}] (layer widths {dims_str})",
                t.shape,
                d(i + 1)
            );
        }
        check_finite(key, t)?;
        out[at..at + t.data.len()].copy_from_slice(&t.data);
        at += t.data.len();
    }
    Ok(())
}

fn check_finite(key: &str, t: &tensors::Tensor) -> Result<()> {
    match t.non_finite() {
        Some(what) => bail!("`{key}` holds {what}"),
        None => Ok(()),
    }
}

/// Reads one INR file into `out` (see [`inr_to_input`]).
pub fn load_inr(file: &Path, dims: &[u32], out: &mut [f32]) -> Result<()> {
    let sd = tensors::read_checkpoint(file)?;
    inr_to_input(&sd, dims, out).with_context(|| format!("{}", file.display()))
}

/// [`load_inr`], turning a panic while parsing one file into that file's error, so one
/// pathological file cannot take the files loaded beside it down with it.
fn load_isolated(file: &Path, dims: &[u32], out: &mut [f32]) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_inr(file, dims, out)))
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "{}: the reader panicked on this file",
                file.display()
            ))
        })
}

/// Inputs loaded for a slice of entries.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Indices (into the slice) of the entries that loaded, in order.
    pub ok: Vec<usize>,
    /// Their inputs, `[ok.len(), input_len]`.
    pub data: Vec<f32>,
    /// Indices of the entries that did not load, with why.
    pub failed: Vec<(usize, anyhow::Error)>,
}

/// Loads `entries` on `threads` threads for a model with layer widths `dims` (one feature
/// per entry, `input_len` values per input). A file that cannot be read or has the
/// wrong shapes lands in [`Loaded::failed`]; the others still load.
pub fn load_batch(entries: &[Entry], dims: &[u32], input_len: usize, threads: usize) -> Loaded {
    let n = entries.len();
    let mut data = vec![0f32; n * input_len];
    let mut results: Vec<Result<()>> = Vec::with_capacity(n);
    if n > 0 && input_len > 0 {
        let threads = threads.clamp(1, n);
        let per = n.div_ceil(threads);
        let parts: Vec<Vec<Result<()>>> = std::thread::scope(|s| {
            let handles: Vec<_> = entries
                .chunks(per)
                .zip(data.chunks_mut(per * input_len))
                .map(|(es, buf)| {
                    s.spawn(move || {
                        es.iter()
                            .zip(buf.chunks_mut(input_len))
                            .map(|(e, out)| load_isolated(&e.file, dims, out))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (0..per)
                            .map(|_| Err(anyhow!("loader thread panicked")))
                            .collect()
                    })
                })
                .collect()
        });
        results.extend(parts.into_iter().flatten().take(n));
    } else {
        results.extend((0..n).map(|_| Ok(())));
    }
    let mut loaded = Loaded::default();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                let to = loaded.ok.len();
                if to != i {
                    data.copy_within(i * input_len..(i + 1) * input_len, to * input_len);
                }
                loaded.ok.push(i);
            }
            Err(e) => loaded.failed.push((i, e)),
        }
    }
    data.truncate(loaded.ok.len() * input_len);
    loaded.data = data;
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::Tensor;

    #[test]
    fn natural_order() {
        let mut k = vec![
            "seq.10.weight",
            "seq.2.weight",
            "seq.1.weight",
            "seq.01.weight",
        ];
        k.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            k,
            [
                "seq.01.weight",
                "seq.1.weight",
                "seq.2.weight",
                "seq.10.weight"
            ]
        );
        assert!(natural_cmp("a.b", "a.b").is_eq());
        assert!(natural_cmp("layer9", "layer10").is_lt());
    }

    #[test]
    fn labels() {
        assert_eq!(parse_label(&serde_json::json!(3)), Some(3));
        assert_eq!(parse_label(&serde_json::json!(3.0)), Some(3));
        assert_eq!(parse_label(&serde_json::json!("7")), Some(7));
        assert_eq!(parse_label(&serde_json::json!(2.5)), None);
        assert_eq!(parse_label(&serde_json::json!(null)), None);
    }

    fn sd(entries: &[(&str, Vec<usize>)]) -> TensorMap {
        let mut m = TensorMap::new();
        let mut v = 0.0;
        for (k, shape) in entries {
            let n: usize = shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    v += 1.0;
                    v
                })
                .collect();
            m.insert(k.to_string(), Tensor::new(shape.clone(), data).unwrap());
        }
        m
    }

    #[test]
    fn transposes_and_orders() -> Result<()> {
        // dims [2, 3, 1]; keys out of order and with a layer number >= 10.
        let m = sd(&[
            ("seq.0.weight", vec![3, 2]),  // 1..=6
            ("seq.0.bias", vec![3]),       // 7..=9
            ("seq.10.weight", vec![1, 3]), // 10..=12
            ("seq.10.bias", vec![1]),      // 13
            ("seq.0.extra_buffer", vec![2]),
        ]);
        let mut out = vec![0.0; 6 + 3 + 3 + 1];
        inr_to_input(&m, &[2, 3, 1], &mut out)?;
        // W_0 = [[1,2],[3,4],[5,6]]^T = [[1,3,5],[2,4,6]].
        assert_eq!(
            out,
            [1., 3., 5., 2., 4., 6., 10., 11., 12., 7., 8., 9., 13.]
        );
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut out = vec![0.0; 13];
        let wrong = sd(&[
            ("seq.0.weight", vec![2, 3]),
            ("seq.0.bias", vec![3]),
            ("seq.1.weight", vec![1, 3]),
            ("seq.1.bias", vec![1]),
        ]);
        let e = format!(
            "{:#}",
            inr_to_input(&wrong, &[2, 3, 1], &mut out).unwrap_err()
        );
        assert!(e.contains("seq.0.weight") && e.contains("[3, 2]"), "{e}");
        let missing = sd(&[("seq.0.weight", vec![3, 2]), ("seq.0.bias", vec![3])]);
        let e = format!(
            "{:#}",
            inr_to_input(&missing, &[2, 3, 1], &mut out).unwrap_err()
        );
        assert!(e.contains("expected 2 weights"), "{e}");
        let mut nan = sd(&[
            ("seq.0.weight", vec![3, 2]),
            ("seq.0.bias", vec![3]),
            ("seq.1.weight", vec![1, 3]),
            ("seq.1.bias", vec![1]),
        ]);
        nan.get_mut("seq.1.bias").unwrap().data[0] = f32::NAN;
        let e = format!(
            "{:#}",
            inr_to_input(&nan, &[2, 3, 1], &mut out).unwrap_err()
        );
        assert!(e.contains("seq.1.bias") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn resolves_relative_paths() {
        let base = Path::new("/definitely/not/here");
        let as_is = |p: &str| (PathBuf::from(p), false);
        assert_eq!(resolve(base, None, "/abs/x.pth"), as_is("/abs/x.pth"));
        assert_eq!(resolve(base, None, "x.pth"), (base.join("x.pth"), false));
        // Found relative to the current folder only.
        assert_eq!(resolve(base, None, "Cargo.toml"), as_is("Cargo.toml"));
    }

    fn splits(dir: &Path, paths: &[&str]) -> Result<Vec<Entry>> {
        let file = dir.join("splits.json");
        std::fs::write(
            &file,
            serde_json::json!({"test": {"path": paths}}).to_string(),
        )?;
        read_splits(&file, "test", None)
    }

    #[test]
    fn finds_moved_files_by_their_trailing_parts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("dws-resolve-{}", std::process::id()));
        let data = dir.join("dataset");
        std::fs::create_dir_all(data.join("inrs/test"))?;
        std::fs::write(data.join("inrs/test/0_1.pth"), b"")?;
        std::fs::write(data.join("inrs/test/1_1.pth"), b"")?;
        std::fs::write(dir.join("0_1.pth"), b"")?;
        let old = "/old/home/dataset/inrs/test/0_1.pth";
        // Under the splits file's folder, the longest trailing part wins.
        let found = (data.join("inrs/test/0_1.pth"), true);
        assert_eq!(resolve(&data, None, old), found);
        let entries = splits(&data, &[old, "/old/home/dataset/inrs/test/1_1.pth"])?;
        assert!(entries.iter().all(|e| e.relocated));
        let note = relocation_note(&entries).unwrap();
        assert!(note.contains("2 of 2") && note.contains(old), "{note}");
        // A data root comes first; a relative path is looked up there too.
        assert_eq!(
            resolve(&data, Some(&dir), old),
            (dir.join("dataset/inrs/test/0_1.pth"), true)
        );
        assert_eq!(
            resolve(Path::new("/nowhere"), Some(&data), "inrs/test/0_1.pth"),
            found
        );
        // Never by the file name alone (`dir/0_1.pth` is not `.../test/0_1.pth`); found
        // nowhere: the path as written, so that the read error names it.
        assert_eq!(
            resolve(&dir, None, "/old/x/0_1.pth"),
            (PathBuf::from("/old/x/0_1.pth"), false)
        );
        // Two paths that would be read from one file: an error, not a wrong dataset.
        std::fs::create_dir_all(data.join("checkpoints"))?;
        std::fs::write(data.join("checkpoints/model.pth"), b"")?;
        let e = splits(
            &data,
            &[
                "/old/b/checkpoints/model.pth",
                "/old/c/checkpoints/model.pth",
            ],
        );
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.contains("would both be read from") && e.contains("--data-root"),
            "{e}"
        );
        // Not relocated when read where the path says.
        let here = splits(&data, &["inrs/test/0_1.pth", "./inrs/test/1_1.pth"])?;
        assert!(here.iter().all(|e| !e.relocated) && relocation_note(&here).is_none());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
