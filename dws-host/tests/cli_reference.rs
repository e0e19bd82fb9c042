//! The reference suite through the command line, as a user runs it:
//! `dws convert model.pt --config config.json`, then `dws run`, for every fixture.

use dws_host::tensors::read_safetensors;
use std::path::Path;
use std::process::{Command, Output};

/// `dws run MODEL INPUT -o OUT [extra...]`.
fn dws_run(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dws"))
        .arg("run")
        .arg(model)
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn every_fixture_through_dws_convert_and_dws_run() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let out = std::env::temp_dir().join(format!("dws-cli-ref-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let dws = env!("CARGO_BIN_EXE_dws");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    let (mut passed, mut failed) = (0, 0);
    for dir in &names {
        let name = dir.file_name().unwrap().to_string_lossy();
        let blob = out.join(format!("{name}.dws"));
        let result = out.join(format!("{name}.safetensors"));
        let ok = Command::new(dws)
            .arg("convert")
            .arg(dir.join("model.pt"))
            .arg("--config")
            .arg(dir.join("config.json"))
            .arg("-o")
            .arg(&blob)
            .status()
            .unwrap()
            .success()
            && Command::new(dws)
                .arg("run")
                .arg(&blob)
                .arg(dir.join("inputs.safetensors"))
                .arg("-o")
                .arg(&result)
                .status()
                .unwrap()
                .success();
        assert!(ok, "{name}: dws convert / dws run failed");
        let got = read_safetensors(&result).unwrap();
        let want = read_safetensors(&dir.join("expected.safetensors")).unwrap();
        let mut worst = 0f32;
        for (k, w) in &want {
            let g = &got[k];
            assert_eq!(g.shape, w.shape, "{name}/{k}: shape");
            let scale = w.data.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = g
                .data
                .iter()
                .zip(&w.data)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            worst = worst.max(err / (1e-4 * scale));
        }
        if worst <= 1.0 {
            passed += 1;
        } else {
            failed += 1;
        }
        println!("{name}: worst error {worst:.4} of the tolerance");
    }
    println!("{passed} passed, {failed} failed");
    assert_eq!(failed, 0);
    let _ = std::fs::remove_dir_all(&out);
}

/// `--engine cuda` on a machine (or a build) without a usable GPU: a clear error,
/// exit status 1, no output file.
#[test]
fn cuda_engine_without_a_gpu_is_a_clear_error() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paper_default");
    let out = std::env::temp_dir().join(format!("dws-cli-cuda-{}.safetensors", std::process::id()));
    let run = dws_run(
        &fixture.join("model.dws"),
        &fixture.join("inputs.safetensors"),
        &out,
        &["--engine", "cuda"],
    );
    if run.status.success() {
        // A GPU build on a machine with a GPU: the suite's GPU tests cover it.
        let _ = std::fs::remove_file(&out);
        return;
    }
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("built without GPU support") || err.contains("no usable CUDA GPU"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

/// A safetensors input writes safetensors: a `.csv` output name is refused before
/// anything is written (predictions CSVs come from dataset inputs).
#[test]
fn csv_output_for_a_safetensors_input_is_refused() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paper_default");
    let out = std::env::temp_dir().join(format!("dws-cli-csv-{}.csv", std::process::id()));
    let run = dws_run(
        &fixture.join("model.dws"),
        &fixture.join("inputs.safetensors"),
        &out,
        &[],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a predictions CSV comes from a dataset input"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A batch saved by `torch.save` as a dict of the same tensors runs like the safetensors
/// batch, with the same outputs. `tests/data/torch_batch/inputs.pt` is
/// `clf_sab_sum_5mats/inputs.safetensors` saved that way, in float64:
/// `torch.save({k: v.double() for k, v in safetensors.torch.load_file(F).items()}, ...)`.
#[test]
fn a_torch_saved_batch_runs_like_the_safetensors_one() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clf_sab_sum_5mats");
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_batch/inputs.pt");
    let tmp = std::env::temp_dir();
    let outs = [
        ("safetensors", fixture.join("inputs.safetensors")),
        ("torch", torch),
    ]
    .map(|(name, input)| {
        let out = tmp.join(format!("dws-cli-{name}-{}.safetensors", std::process::id()));
        let run = dws_run(&fixture.join("model.dws"), &input, &out, &[]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        bytes
    });
    assert_eq!(outs[0], outs[1]);
}
