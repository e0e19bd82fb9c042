//! The command line as a new user meets it: one spelling per flag, `--json` output,
//! shell completions, and the messages that lead from a mistake to its fix. Runs on
//! the committed tiny INR dataset (`tests/data/inr_tiny`) and the shipped digits
//! example's files.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const DWS: &str = env!("CARGO_BIN_EXE_dws");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inr_tiny")
}

fn digits() -> PathBuf {
    root().join("examples/digits")
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
    let d = std::env::temp_dir().join(format!("dws-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn dws<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(DWS).args(args).output().expect("running dws");
    let r = Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny classifier converted into `dir`, with its statistics or without.
fn tiny_model(dir: &Path, statistics: bool) -> PathBuf {
    let t = tiny();
    let out = dir.join(if statistics { "tiny.dws" } else { "raw.dws" });
    let (model, config, stats) = (
        t.join("model.pt"),
        t.join("config.json"),
        t.join("statistics.pth"),
    );
    let mut args = vec!["convert", s(&model), "--config", s(&config), "-o", s(&out)];
    if statistics {
        args.extend(["--statistics", s(&stats)]);
    }
    let r = dws(&args);
    assert!(r.ok, "{}", r.stderr);
    out
}

/// `--batch-size` and its hidden alias `--batch` on every command that batches, with
/// the same effect.
#[test]
fn both_batch_spellings_everywhere() {
    let dir = tmp("batch");
    let model = tiny_model(&dir, true);
    let splits = tiny().join("splits.json");
    for flag in ["--batch-size", "--batch"] {
        let csv = dir.join(format!("run{flag}.csv"));
        let r = dws(&["run", s(&model), s(&splits), "-o", s(&csv), flag, "3"]);
        assert!(r.ok, "run {flag}: {}", r.stderr);
        let r = dws(&["eval", s(&model), s(&splits), flag, "3"]);
        assert!(
            r.ok && r.stdout.contains("inputs:   8 of 8"),
            "eval {flag}: {}",
            r.stderr
        );
        let r = dws(&[
            "bench",
            s(&model),
            flag,
            "5",
            "--seconds",
            "0",
            "--no-peak",
            "--no-latency",
            "--json",
        ]);
        assert!(r.ok, "bench {flag}: {}", r.stderr);
        let j: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(j["batch"], 5, "bench {flag}");
    }
    let a = std::fs::read(dir.join("run--batch-size.csv")).unwrap();
    assert_eq!(a, std::fs::read(dir.join("run--batch.csv")).unwrap());
    // The alias stays out of the help; the name is in it.
    let help = dws(&["eval", "--help"]).stdout;
    assert!(
        help.contains("--batch-size") && !help.contains("--batch ") && !help.contains("`--batch`"),
        "{help}"
    );
}

/// `dws eval MODEL SPLITS` as `dws run` takes it; `--splits` still works; both at once
/// or neither is a usage error.
#[test]
fn eval_takes_the_splits_file_positionally() {
    let dir = tmp("positional");
    let model = tiny_model(&dir, true);
    let splits = tiny().join("splits.json");
    let positional = dws(&["eval", s(&model), s(&splits), "--threads", "1"]);
    let option = dws(&["eval", s(&model), "--splits", s(&splits), "--threads", "1"]);
    assert!(
        positional.ok && option.ok,
        "{}{}",
        positional.stderr,
        option.stderr
    );
    let without_timing = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("throughput:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_timing(&positional.stdout),
        without_timing(&option.stdout)
    );
    assert!(positional.stdout.contains("accuracy: "));
    let both = dws(&["eval", s(&model), s(&splits), "--splits", s(&splits)]);
    assert!(
        !both.ok && both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
    let neither = dws(&["eval", s(&model)]);
    assert!(
        !neither.ok
            && neither
                .stderr
                .contains("required arguments were not provided"),
        "{}",
        neither.stderr
    );
}

/// `dws inspect --json`: one JSON document on stdout with the text's figures.
#[test]
fn inspect_json_parses_back() {
    let dir = tmp("inspect");
    let model = tiny_model(&dir, true);
    let r = dws(&["inspect", s(&model), "--json"]);
    assert!(r.ok, "{}", r.stderr);
    let j: Value = serde_json::from_str(&r.stdout).expect("stdout is one JSON document");
    assert_eq!(j["model"], "DWSModelForClassification");
    assert_eq!(j["classes"], 3);
    assert_eq!(j["dims"], serde_json::json!([2, 8, 8, 1]));
    assert_eq!(j["precision"], "f32");
    assert_eq!(j["normalization"], true);
    let input_len = j["input_len"].as_u64().unwrap();
    assert_eq!(j["statistics_parameters"].as_u64(), Some(2 * input_len));
    assert_eq!(j["dws_layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        j["blob_bytes"].as_u64(),
        Some(std::fs::metadata(&model).unwrap().len())
    );
    let text = dws(&["inspect", s(&model)]).stdout;
    let params = j["parameters"].as_u64().unwrap();
    let stats = 2 * input_len;
    assert!(
        text.contains(&format!(
            "parameters:       {params} ({} of the model + {stats} input statistics)",
            params - stats
        )),
        "{text}"
    );
    assert!(text.contains("normalization:    folded in"), "{text}");
}

/// `dws eval --json`: one JSON document on stdout (notes on stderr), the text
/// report's figures.
#[test]
fn eval_json_parses_back() {
    let dir = tmp("evaljson");
    let model = tiny_model(&dir, true);
    let splits = tiny().join("splits.json");
    let csv = dir.join("p.csv");
    let r = dws(&["eval", s(&model), s(&splits), "--json", "-o", s(&csv)]);
    assert!(r.ok, "{}", r.stderr);
    let j: Value = serde_json::from_str(&r.stdout).expect("stdout is one JSON document");
    assert_eq!(
        (j["inputs"].as_u64(), j["ran"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(j["split"], "test");
    assert_eq!(j["predictions"], s(&csv));
    assert!(csv.exists());
    let confusion = j["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 3);
    let counted: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 8);
    let text = dws(&["eval", s(&model), s(&splits)]).stdout;
    let correct = j["correct"].as_u64().unwrap();
    let acc = j["accuracy"].as_f64().unwrap();
    assert!(
        text.contains(&format!("accuracy: {:.2}% ({correct}/8)", 100.0 * acc)),
        "{text}"
    );
    assert_eq!(j["per_class"].as_array().unwrap().len(), 3);
    // The report cannot share stdout with the CSV.
    let r = dws(&["eval", s(&model), s(&splits), "--json", "-o", "-"]);
    assert!(!r.ok && r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains("--json writes the report to stdout"),
        "{}",
        r.stderr
    );
}

/// `dws completions SHELL` writes a script that names the commands and flags.
#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = dws(&["completions", shell]);
        assert!(r.ok, "{shell}: {}", r.stderr);
        for word in ["convert", "quantize", "completions", "batch-size", "json"] {
            assert!(r.stdout.contains(word), "{shell} script lacks {word}");
        }
    }
    let dir = tmp("completions");
    let script = dir.join("dws.bash");
    std::fs::write(&script, dws(&["completions", "bash"]).stdout).unwrap();
    if let Ok(check) = Command::new("bash").arg("-n").arg(&script).output() {
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let r = dws(&["completions", "tcsh"]);
    assert!(!r.ok && r.stderr.contains("invalid value"), "{}", r.stderr);
}

/// An INR (or statistics, or a batch of inputs) given to `convert`: one line saying
/// it is not a DWSNet checkpoint and what it is, instead of 50 missing keys.
#[test]
fn convert_names_a_file_that_is_no_dwsnet_checkpoint() {
    let dir = tmp("lookalike");
    let d = digits();
    let out = dir.join("x.dws");
    let inr = d.join("inrs/test/1532_5.pth");
    let config = d.join("config.json");
    let r = dws(&["convert", s(&inr), "--config", s(&config), "-o", s(&out)]);
    assert!(!r.ok);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "not a DWSNet checkpoint: it holds an INR: 3 weight matrices \
             (2,32),(32,32),(32,1), an input network of this config's shapes -- did you \
             mean `dws run`?"
        ),
        "{}",
        r.stderr
    );
    let stats = d.join("statistics.pth");
    let r = dws(&["convert", s(&stats), "--config", s(&config), "-o", s(&out)]);
    assert!(
        r.stderr
            .contains("not a DWSNet checkpoint: it holds dataset statistics")
            && r.stderr.contains("give them as `--statistics`"),
        "{}",
        r.stderr
    );
    let batch = d.join("calibration.safetensors");
    let r = dws(&["convert", s(&batch), "--config", s(&config), "-o", s(&out)]);
    assert!(
        r.stderr
            .contains("not a DWSNet checkpoint: it holds a batch of 256 inputs"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

/// A checkpoint that does not fit its config: the contradicted config keys come
/// first, before the (up to 50) entries.
#[test]
fn contradicted_config_keys_come_first() {
    let dir = tmp("contradiction");
    let d = digits();
    let text = std::fs::read_to_string(d.join("config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["hidden_dim"] = 16.into();
    let wrong = dir.join("config.json");
    std::fs::write(&wrong, config.to_string()).unwrap();
    let model = d.join("model.pt");
    let out = dir.join("x.dws");
    let r = dws(&["convert", s(&model), "--config", s(&wrong), "-o", s(&out)]);
    assert!(!r.ok);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(
        lines[0].ends_with("the state_dict does not fit the config:"),
        "{}",
        r.stderr
    );
    assert_eq!(
        lines[1..3],
        [
            "  the checkpoint's keys and shapes say the config is wrong in:",
            "    `hidden_dim`: the config says 16, the checkpoint 32",
        ],
        "{}",
        r.stderr
    );
    assert!(lines[3].contains("has shape"), "{}", r.stderr);
}

/// A statistics file (or any binary file) as `--config`: a JSON config was expected.
#[test]
fn a_binary_config_says_json_was_expected() {
    let dir = tmp("config");
    let d = digits();
    let out = dir.join("x.dws");
    let (model, stats) = (d.join("model.pt"), d.join("statistics.pth"));
    let r = dws(&["convert", s(&model), "--config", s(&stats), "-o", s(&out)]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!(
            "{} is not a JSON config but a PyTorch file (torch.save) holding dataset \
             statistics",
            s(&stats)
        )) && r.stderr.contains("`--config` takes a JSON file")
            && r.stderr.contains("statistics go to `--statistics`"),
        "{}",
        r.stderr
    );
    let noise = dir.join("noise.bin");
    std::fs::write(&noise, [0xffu8, 0xfe, 0, 1, 2]).unwrap();
    let r = dws(&["convert", s(&model), "--config", s(&noise), "-o", s(&out)]);
    assert!(
        r.stderr.contains("is not a JSON config but binary data"),
        "{}",
        r.stderr
    );
}

/// A `.pt` checkpoint where a blob is expected (`inspect`, `run`, `eval`, `bench`,
/// `quantize`): not a blob, convert it first.
#[test]
fn a_checkpoint_where_a_blob_is_expected_says_convert_it_first() {
    let dir = tmp("notablob");
    let pt = root().join("tests/fixtures/paper_default/model.pt");
    let inputs = root().join("tests/fixtures/paper_default/inputs.safetensors");
    let splits = tiny().join("splits.json");
    let out = dir.join("out.safetensors");
    let runs = [
        dws(&["inspect", s(&pt)]),
        dws(&["run", s(&pt), s(&inputs), "-o", s(&out)]),
        dws(&["eval", s(&pt), s(&splits)]),
        dws(&["bench", s(&pt), "--seconds", "0"]),
        dws(&[
            "quantize",
            s(&pt),
            "--calibration",
            s(&inputs),
            "-o",
            s(&out),
        ]),
    ];
    for r in runs {
        assert!(!r.ok);
        assert!(
            r.stderr.contains("not a dws model blob")
                && r.stderr.contains(&format!(
                    "convert it first with `dws convert {} --config config.json -o model.dws`",
                    s(&pt)
                )),
            "{}",
            r.stderr
        );
    }
    // An INR given as the model: it is what the model runs on.
    let inr = digits().join("inrs/test/1532_5.pth");
    let r = dws(&["inspect", s(&inr)]);
    assert!(
        r.stderr.contains("holding an INR") && r.stderr.contains("did you mean `dws run"),
        "{}",
        r.stderr
    );
}

/// Without `--statistics`: a note at conversion, `normalization: none` in inspect,
/// and a note from `eval` and `run` when the inputs do not look normalized; none
/// with the statistics folded in.
#[test]
fn missing_statistics_are_noted() {
    let dir = tmp("normalization");
    let t = tiny();
    let out = dir.join("raw.dws");
    let (model, config) = (t.join("model.pt"), t.join("config.json"));
    let r = dws(&["convert", s(&model), "--config", s(&config), "-o", s(&out)]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("note: no --statistics: no input normalization is folded in"),
        "{}",
        r.stderr
    );
    let text = dws(&["inspect", s(&out)]).stdout;
    assert!(text.contains("normalization:    none"), "{text}");
    let splits = t.join("splits.json");
    let note = "note: this model has no input normalization folded in, and its inputs are not \
                normalized";
    let r = dws(&["eval", s(&out), s(&splits)]);
    assert!(r.ok && r.stderr.contains(note), "{}", r.stderr);
    let r = dws(&["eval", s(&out), s(&splits), "--json"]);
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    let spread = j["input_spread"].as_f64().unwrap();
    assert!(spread < 0.3, "{spread}");
    let csv = dir.join("p.csv");
    let r = dws(&["run", s(&out), s(&splits), "-o", s(&csv)]);
    assert!(r.ok && r.stderr.contains(note), "{}", r.stderr);
    let normalized = tiny_model(&dir, true);
    let r = dws(&["eval", s(&normalized), s(&splits)]);
    assert!(r.ok && !r.stderr.contains("note:"), "{}", r.stderr);
}

/// `quantize` checks its output path before calibrating, takes `--threads`, and
/// says `1 input`.
#[test]
fn quantize_checks_its_output_first_and_takes_threads() {
    let dir = tmp("quantize");
    let model = tiny_model(&dir, true);
    let splits = tiny().join("splits.json");
    let nowhere = dir.join("no/such/folder/q.dws");
    let r = dws(&[
        "quantize",
        s(&model),
        "--calibration",
        s(&splits),
        "-o",
        s(&nowhere),
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("cannot create"), "{}", r.stderr);
    assert!(!r.stderr.contains("calibrating"), "{}", r.stderr);
    let q = dir.join("q.dws");
    let r = dws(&[
        "quantize",
        s(&model),
        "--calibration",
        s(&splits),
        "--threads",
        "1",
        "-o",
        s(&q),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("per-layer SQNR"), "{}", r.stdout);
    assert!(!r.stderr.contains('\r'), "no progress bar off a terminal");
}

/// Small things: `ran 1 input` (not `1 inputs`), and one `model:` line in `bench`.
#[test]
fn one_input_and_one_model_line() {
    let dir = tmp("small");
    let model = tiny_model(&dir, true);
    let inr = tiny().join("inrs/test");
    let first = std::fs::read_dir(&inr)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "pth"))
        .unwrap();
    let r = dws(&["run", s(&model), s(&first), "-o", "-"]);
    assert!(r.ok && r.stderr.contains("ran 1 input in"), "{}", r.stderr);
    let r = dws(&[
        "bench",
        s(&model),
        "--seconds",
        "0",
        "--no-peak",
        "--batch-size",
        "2",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let models = r.stdout.lines().filter(|l| l.starts_with("model:")).count();
    assert_eq!(models, 1, "{}", r.stdout);
    assert!(r.stdout.contains("work:"), "{}", r.stdout);
}
