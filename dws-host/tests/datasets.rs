//! End-to-end tests of `dws eval` and the dataset modes of `dws run`, on the committed
//! tiny INR dataset in `tests/data/inr_tiny` (made once by `tests/data/make_inr_tiny.py`
//! with upstream DWSNets; see that script). `expected_logits*.csv` are upstream's logits
//! for the test split with `INRDataset(normalize=True)` / `normalize=False`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DWS: &str = env!("CARGO_BIN_EXE_dws");

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inr_tiny")
}

/// A fresh, empty folder for one test, removed when dropped.
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("dws-datasets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn dws_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut c = Command::new(DWS);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("running dws");
    let r = Run {
        ok: status.success(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    // Progress must never garble captured (non-terminal) output.
    assert!(
        !r.stderr.contains('\r'),
        "carriage return in stderr: {:?}",
        r.stderr
    );
    r
}

fn dws(args: &[&str]) -> Run {
    dws_in(None, args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Converts the tiny classifier, with or without the statistics, into `dir/name`.
fn convert(dir: &Path, name: &str, statistics: bool) -> PathBuf {
    let d = data();
    let out = dir.join(name);
    let (model, config, stats) = (
        d.join("model.pt"),
        d.join("config.json"),
        d.join("statistics.pth"),
    );
    let mut args = vec!["convert", s(&model), "--config", s(&config), "-o", s(&out)];
    if statistics {
        args.extend(["--statistics", s(&stats)]);
    }
    let r = dws(&args);
    assert!(r.ok, "convert failed: {}", r.stderr);
    out
}

/// A predictions CSV row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    path: String,
    label: String,
    predicted: Option<usize>,
    logits: Vec<f32>,
}

/// Parses a CSV with the given header prefix (paths in these tests need no quoting
/// unless `quoted` paths are expected, which `split_csv` handles).
fn parse_csv(text: &str, with_predicted: bool) -> (Vec<String>, Vec<Row>) {
    let mut lines = text.lines();
    let header: Vec<String> = split_csv(lines.next().expect("header"));
    let rows = lines
        .map(|l| {
            let f = split_csv(l);
            let k = if with_predicted { 3 } else { 2 };
            Row {
                path: f[0].clone(),
                label: f[1].clone(),
                predicted: with_predicted.then(|| f[2].parse().unwrap()),
                logits: f[k..].iter().map(|v| v.parse().unwrap()).collect(),
            }
        })
        .collect();
    (header, rows)
}

/// Splits one CSV line (RFC 4180 quoting).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fn expected(name: &str) -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(data().join(name)).unwrap();
    let (header, rows) = parse_csv(&text, false);
    assert_eq!(header, ["path", "label", "logit_0", "logit_1", "logit_2"]);
    rows.into_iter().map(|r| (r.path.clone(), r)).collect()
}

fn argmax(x: &[f32]) -> usize {
    (1..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{what}: got {got:?}, upstream {want:?}"
        );
    }
}

/// Checks `rows` against upstream's logits (same paths, labels and logits).
fn check_against(rows: &[Row], want: &BTreeMap<String, Row>) {
    for r in rows {
        let w = want
            .get(&r.path)
            .unwrap_or_else(|| panic!("unexpected row {r:?}"));
        assert_eq!(r.label, w.label, "{}", r.path);
        assert_close(&r.logits, &w.logits, &r.path);
        assert_eq!(r.predicted, Some(argmax(&r.logits)), "{}", r.path);
    }
}

const HEADER: [&str; 6] = [
    "path",
    "label",
    "predicted",
    "logit_0",
    "logit_1",
    "logit_2",
];

#[test]
fn normalization_with_statistics_matches_upstream() {
    let dir = tmp("normalize");
    let norm = convert(&dir, "norm.dws", true);
    let raw = convert(&dir, "raw.dws", false);
    let splits = data().join("splits.json");
    let (norm_csv, raw_csv) = (dir.join("norm.csv"), dir.join("raw.csv"));

    // `dws run` on a splits JSON: the test split by default.
    let r = dws(&["run", s(&norm), s(&splits), "-o", s(&norm_csv)]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("ran 8 inputs"), "{}", r.stderr);
    let (header, norm_rows) = parse_csv(&std::fs::read_to_string(&norm_csv).unwrap(), true);
    assert_eq!(header, HEADER);
    let want = expected("expected_logits.csv");
    assert_eq!(
        norm_rows.iter().map(|r| &r.path).collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "rows in splits order, paths as written"
    );
    check_against(&norm_rows, &want);

    // Without statistics the model sees the raw weights, like normalize=False upstream.
    let r = dws(&[
        "run",
        s(&raw),
        s(&splits),
        "--split",
        "test",
        "-o",
        s(&raw_csv),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let (_, raw_rows) = parse_csv(&std::fs::read_to_string(&raw_csv).unwrap(), true);
    check_against(&raw_rows, &expected("expected_logits_raw.csv"));

    // ... and normalization visibly matters for this data.
    let biggest = norm_rows
        .iter()
        .zip(&raw_rows)
        .flat_map(|(a, b)| a.logits.iter().zip(&b.logits).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(
        biggest > 0.1,
        "normalized and raw logits differ by only {biggest}"
    );
}

#[test]
fn eval_reports_accuracy_confusion_and_csv() {
    let dir = tmp("eval");
    let model = convert(&dir, "m.dws", true);
    let splits = data().join("splits.json");
    let csv = dir.join("pred.csv");
    let r = dws(&[
        "eval",
        s(&model),
        "--splits",
        s(&splits),
        "--split",
        "test",
        "--threads",
        "2",
        "--output",
        s(&csv),
    ]);
    assert!(r.ok, "{}", r.stderr);

    let want = expected("expected_logits.csv");
    let n = want.len();
    let mut confusion = [[0usize; 3]; 3];
    for w in want.values() {
        confusion[w.label.parse::<usize>().unwrap()][argmax(&w.logits)] += 1;
    }
    let correct: usize = (0..3).map(|c| confusion[c][c]).sum();
    let out = &r.stdout;
    assert!(
        out.contains(&format!("inputs:   {n} of {n} (0 skipped)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "accuracy: {:.2}% ({correct}/{n})",
            100.0 * correct as f64 / n as f64
        )),
        "{out}"
    );
    for (c, counts) in confusion.iter().enumerate() {
        let support: usize = counts.iter().sum();
        assert!(out.contains(&format!("class {c}:")), "{out}");
        assert!(out.contains(&format!("({}/{support})", counts[c])), "{out}");
        let row = format!(
            "  {c}  {}",
            counts
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            out.contains(&row),
            "confusion row {row:?} missing from\n{out}"
        );
    }
    assert!(
        out.contains("confusion matrix (rows: label, columns: predicted)"),
        "{out}"
    );
    assert!(out.contains("inputs/s"), "{out}");
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);

    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.ends_with('\n'));
    let (header, rows) = parse_csv(&text, true);
    assert_eq!(header, HEADER);
    assert_eq!(rows.len(), n);
    check_against(&rows, &want);

    // The same rows on stdout with `-o -`; the report then goes to stderr.
    let r = dws(&["eval", s(&model), "--splits", s(&splits), "-o", "-"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, text);
    assert!(r.stderr.contains("accuracy:"), "{}", r.stderr);

    // Small batches and one thread give the same predictions.
    let csv1 = dir.join("pred1.csv");
    let r = dws(&[
        "eval",
        s(&model),
        "--splits",
        s(&splits),
        "--threads",
        "1",
        "--batch-size",
        "3",
        "-o",
        s(&csv1),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&csv1).unwrap(), text);
}

#[test]
fn bad_files_are_skipped_and_reported() {
    let dir = tmp("bad");
    let model = convert(&dir, "m.dws", true);
    let d = data();
    let good: Vec<String> = expected("expected_logits.csv").keys().cloned().collect();
    let abs = |p: &str| s(&d.join(p)).to_string();
    let truncated = abs("bad/truncated.pth");
    let wrong = abs("bad/wrong_shape.pth");
    let missing = abs("inrs/test/missing.pth");
    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    // Bad files spread over several batches (batch size 2 below).
    let paths = [
        truncated.clone(),
        abs(&good[0]),
        abs(&good[1]),
        wrong.clone(),
        missing.clone(),
        abs(&good[2]),
        s(&garbage).to_string(),
        abs(&good[3]),
    ];
    let labels: Vec<String> = paths
        .iter()
        .map(|p| {
            let name = Path::new(p).file_stem().unwrap().to_str().unwrap();
            name.rsplit('_')
                .next()
                .unwrap()
                .parse::<u32>()
                .map_or(0, |l| l.min(2))
                .to_string()
        })
        .collect();
    let splits = dir.join("splits.json");
    let json = format!(
        "{{\"test\": {{\"path\": [{}], \"label\": [{}]}}}}",
        paths
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        labels.join(", ")
    );
    std::fs::write(&splits, json).unwrap();

    let csv = dir.join("pred.csv");
    let r = dws(&[
        "eval",
        s(&model),
        "--splits",
        s(&splits),
        "--batch-size",
        "2",
        "-o",
        s(&csv),
    ]);
    assert!(r.ok, "one bad file must not fail the run: {}", r.stderr);
    for p in [&truncated, &wrong, &missing, &s(&garbage).to_string()] {
        assert!(
            r.stderr.contains(&format!("warning: skipping {p}: ")),
            "no warning for {p}:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("truncated or corrupt zip"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("`seq.0.weight` has shape [6, 2], expected [8, 2]"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("inputs:   4 of 8 (4 skipped)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("skipped:  4 of 8 files"), "{}", r.stdout);

    let (_, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap(), true);
    assert_eq!(
        rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        [abs(&good[0]), abs(&good[1]), abs(&good[2]), abs(&good[3])]
    );
    let want = expected("expected_logits.csv");
    for (row, g) in rows.iter().zip(&good) {
        assert_close(&row.logits, &want[g].logits, g);
    }

    // `dws run` on the same split says how many it skipped.
    let r = dws(&["run", s(&model), s(&splits), "-o", s(&dir.join("run.csv"))]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("ran 4 inputs") && r.stderr.contains("skipped 4"),
        "{}",
        r.stderr
    );

    // Nothing readable at all is an error.
    std::fs::write(
        &splits,
        format!("{{\"test\": {{\"path\": [{truncated:?}], \"label\": [0]}}}}"),
    )
    .unwrap();
    let r = dws(&["eval", s(&model), "--splits", s(&splits)]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("no input could be read from the 1 file listed in split `test`"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "only the error, no table of n/a rows");
}

#[test]
fn relative_and_absolute_paths() {
    let dir = tmp("paths");
    let model = convert(&dir, "m.dws", true);
    let d = data();
    let want = expected("expected_logits.csv");
    let first = want.keys().next().unwrap().clone(); // e.g. inrs/test/000_0.pth
    let w = &want[&first];

    // 1. Relative to the splits file's folder, run from an unrelated folder.
    let csv = dir.join("a.csv");
    let r = dws_in(
        Some(&dir),
        &["run", s(&model), s(&d.join("splits.json")), "-o", s(&csv)],
    );
    assert!(r.ok, "{}", r.stderr);
    let (_, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap(), true);
    assert_eq!(rows.len(), want.len());
    check_against(&rows, &want);

    // 2. Relative to the current folder (upstream's convention), the splits file elsewhere;
    //    3. absolute; 4. a copy whose name needs CSV quoting, relative to the splits folder.
    let odd = "odd, \"name\".pth";
    std::fs::copy(d.join(&first), dir.join(odd)).unwrap();
    let absolute = s(&d.join(&first)).to_string();
    let splits = dir.join("splits.json");
    std::fs::write(
        &splits,
        format!(
            "{{\"val\": {{\"path\": [{first:?}, {absolute:?}, {odd:?}], \"label\": [\"{l}\", {l}, {l}.0]}}}}",
            l = w.label
        ),
    )
    .unwrap();
    let csv = dir.join("b.csv");
    let r = dws_in(
        Some(&d),
        &[
            "eval",
            s(&model),
            "--splits",
            s(&splits),
            "--split",
            "val",
            "-o",
            s(&csv),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("inputs:   3 of 3 (0 skipped)"),
        "{}",
        r.stdout
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains("\"odd, \"\"name\"\".pth\""), "{text}");
    let (_, rows) = parse_csv(&text, true);
    assert_eq!(
        rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [first.as_str(), absolute.as_str(), odd],
        "paths exactly as written"
    );
    for r in &rows {
        assert_eq!(r.label, w.label);
        assert_close(&r.logits, &w.logits, &r.path);
    }
}

/// Upstream writes absolute paths into its splits files; a dataset copied elsewhere is
/// found by the paths' trailing parts, under the splits file's folder or `--data-root`.
#[test]
fn moved_dataset_is_found_by_trailing_path_parts() {
    let dir = tmp("moved");
    let model = convert(&dir, "m.dws", true);
    let want = expected("expected_logits.csv");
    let copy = dir.join("copy/dataset");
    std::fs::create_dir_all(copy.join("inrs/test")).unwrap();
    let old: Vec<String> = want
        .keys()
        .map(|rel| {
            std::fs::copy(data().join(rel), copy.join(rel)).unwrap();
            format!("/home/alice/DWSNets/dataset/{rel}")
        })
        .collect();
    let labels: Vec<&str> = want.values().map(|r| r.label.as_str()).collect();
    let splits_json = format!(
        "{{\"test\": {{\"path\": {old:?}, \"label\": [{}]}}}}",
        labels.join(",")
    );

    // Next to the data: found under the splits file's folder.
    let splits = copy.join("splits.json");
    std::fs::write(&splits, &splits_json).unwrap();
    let csv = dir.join("a.csv");
    let r = dws(&["eval", s(&model), "--splits", s(&splits), "-o", s(&csv)]);
    assert!(r.ok, "{}", r.stderr);
    let n = want.len();
    assert!(
        r.stderr
            .contains(&format!("note: {n} of {n} listed files are not where")),
        "{}",
        r.stderr
    );
    let (_, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap(), true);
    assert_eq!(
        rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        old,
        "paths as written"
    );
    for (row, w) in rows.iter().zip(want.values()) {
        assert_close(&row.logits, &w.logits, &row.path);
    }

    // The splits file elsewhere: not found without --data-root (the first files are
    // listed, the rest counted), found with it, by `run`, `eval` and `quantize`.
    let splits = dir.join("splits.json");
    std::fs::write(&splits, &splits_json).unwrap();
    let r = dws(&["eval", s(&model), "--splits", s(&splits)]);
    assert!(
        !r.ok && r.stderr.contains("no input could be read"),
        "{}",
        r.stderr
    );
    assert!(r
        .stderr
        .contains("cannot open /home/alice/DWSNets/dataset/inrs/test/"));
    let root = dir.join("copy");
    let csv = dir.join("b.csv");
    let r = dws(&[
        "run",
        s(&model),
        s(&splits),
        "--data-root",
        s(&root),
        "-o",
        s(&csv),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let (_, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap(), true);
    assert_eq!(rows.len(), n);
    let r = dws(&[
        "quantize",
        s(&model),
        "--calibration",
        s(&splits),
        "--split",
        "test",
        "--data-root",
        s(&root),
        "-o",
        s(&dir.join("q.dws")),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let r = dws(&[
        "quantize",
        s(&model),
        "--calibration",
        s(&splits),
        "--split",
        "test",
        "-o",
        s(&dir.join("q2.dws")),
    ]);
    assert!(
        !r.ok
            && r.stderr
                .contains(&format!("none of the {n} calibration files")),
        "{}",
        r.stderr
    );
}

#[test]
fn directory_input() {
    let dir = tmp("dir");
    let model = convert(&dir, "m.dws", true);
    let test_dir = data().join("inrs/test");
    let csv = dir.join("dir.csv");
    let r = dws(&[
        "run",
        s(&model),
        s(&test_dir),
        "-o",
        s(&csv),
        "--threads",
        "1",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let (header, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap(), true);
    assert_eq!(header, HEADER);
    let want = expected("expected_logits.csv");
    assert_eq!(rows.len(), want.len());
    for (row, (path, w)) in rows.iter().zip(&want) {
        assert_eq!(row.path, s(&data().join(path)), "sorted, as found");
        assert_eq!(row.label, "", "labels unknown");
        assert_close(&row.logits, &w.logits, path);
    }

    // A directory with non-INR files: they are reported and skipped.
    let r = dws(&["run", s(&model), s(&data()), "-o", s(&dir.join("all.csv"))]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("ran 18 inputs"), "{}", r.stderr);
    assert!(r.stderr.contains("skipped 4"), "{}", r.stderr);

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = dws(&["run", s(&model), s(&empty), "-o", s(&dir.join("e.csv"))]);
    assert!(!r.ok);
    assert!(r.stderr.contains("no INR files"), "{}", r.stderr);
}

#[test]
fn clear_errors() {
    let dir = tmp("errors");
    let model = convert(&dir, "m.dws", true);
    let splits = data().join("splits.json");

    let r = dws(&["eval", s(&model), "--splits", s(&splits), "--split", "nope"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("no split `nope`") && r.stderr.contains("test, train"),
        "{}",
        r.stderr
    );

    let r = dws(&[
        "run",
        s(&model),
        s(&data().join("inrs")),
        "--split",
        "test",
        "-o",
        s(&dir.join("x.csv")),
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("--split"), "{}", r.stderr);

    let r = dws(&[
        "run",
        s(&model),
        s(&splits),
        "-o",
        s(&dir.join("x.safetensors")),
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("CSV"), "{}", r.stderr);

    // Labels outside the model's classes.
    let bad = dir.join("labels.json");
    std::fs::write(
        &bad,
        format!(
            "{{\"test\": {{\"path\": [{:?}], \"label\": [7]}}}}",
            s(&data().join("inrs/test/000_0.pth"))
        ),
    )
    .unwrap();
    let r = dws(&["eval", s(&model), "--splits", s(&bad)]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("label 7") && r.stderr.contains("0..2"),
        "{}",
        r.stderr
    );

    // No labels: fine for `dws run`, an error for `dws eval`.
    std::fs::write(
        &bad,
        format!(
            "{{\"test\": {{\"path\": [{:?}]}}}}",
            s(&data().join("inrs/test/000_0.pth"))
        ),
    )
    .unwrap();
    let r = dws(&["eval", s(&model), "--splits", s(&bad)]);
    assert!(!r.ok);
    assert!(r.stderr.contains("needs labels"), "{}", r.stderr);
    let r = dws(&["run", s(&model), s(&bad), "-o", "-"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.lines().nth(1).unwrap().contains(".pth,,"),
        "{}",
        r.stdout
    );

    // One INR file runs as a dataset of one, with upstream's logits.
    let want = expected("expected_logits.csv");
    let (first, w) = want.iter().next().unwrap();
    let r = dws(&["run", s(&model), s(&data().join(first)), "-o", "-"]);
    assert!(r.ok, "{}", r.stderr);
    let (_, rows) = parse_csv(&r.stdout, true);
    assert_eq!(rows.len(), 1);
    assert_close(&rows[0].logits, &w.logits, first);

    // A closed or full stderr loses the message but neither panics nor changes the
    // exit status.
    let full = std::fs::File::options().write(true).open("/dev/full");
    if let Ok(full) = full {
        let status = Command::new(DWS)
            .args(["eval", s(&model), "--splits", s(&splits), "--split", "nope"])
            .stderr(full)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
    }
}

/// A DWSModel (weight space in, weight space out) has no classes: a clear error.
#[test]
fn dwsmodel_blob_is_rejected() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let case = cases
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("dws_"))
        .find(|p| p.join("model.pt").exists() && p.join("config.json").exists())
        .expect("a DWSModel fixture in tests/fixtures");
    let dir = tmp("dwsmodel");
    let blob = dir.join("dws.dws");
    let (pt, config) = (case.join("model.pt"), case.join("config.json"));
    let r = dws(&["convert", s(&pt), "--config", s(&config), "-o", s(&blob)]);
    assert!(r.ok, "{}", r.stderr);
    let splits = data().join("splits.json");
    for args in [
        vec!["eval", s(&blob), "--splits", s(&splits)],
        vec!["run", s(&blob), s(&splits), "-o", "-"],
    ] {
        let r = dws(&args);
        assert!(!r.ok);
        assert!(
            r.stderr.contains("DWSModel") && r.stderr.contains("DWSModelForClassification"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}
