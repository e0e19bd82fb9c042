//! `dws-reference`: run the reference suite over a backend, or rewrite the
//! committed `model.dws` / `case.bin` files of every fixture.
//!
//! ```text
//! dws-reference [core|host]      # run the suite (default: core); exits 1 on failures
//! dws-reference write-cases      # regenerate tests/fixtures/*/model.dws, case.bin and,
//!                                # quantized afresh, model.int8.dws + case_int8.bin and
//!                                # model.16x8.dws + case_16x8.bin (the golden outputs)
//! dws-reference quant-report     # int8 and 16x8 against f32 (upstream) error per fixture
//! ```

use anyhow::Result;
use dws_host::blob_io::AlignedBlob;
use dws_reference::{
    golden_case, golden_files, load_all, run_golden_suite, run_suite, Backend, CoreBackend,
    HostBackend, MODES,
};

fn main() -> Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "core".into());
    let fixtures = load_all()?;
    if arg == "quant-report" {
        println!(
            "{:<28} {:>5} {:>12} {:>12} {:>14}",
            "fixture", "mode", "max |err|", "mean |err|", "max |upstream|"
        );
        for f in &fixtures {
            let case = f.case();
            for mode in MODES {
                let m = f.golden(mode).blob.model()?;
                let mut scratch = vec![0f32; m.scratch_len()];
                let mut y = vec![0f32; m.output_len()];
                let (mut max, mut sum, mut n, mut scale) = (0f32, 0f64, 0usize, 0f32);
                let mut x = vec![0f32; m.input_len()];
                for k in 0..f.batch {
                    case.input(k, &mut x).map_err(|e| anyhow::anyhow!("{e}"))?;
                    m.run(&x, &mut scratch, &mut y)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    for (j, v) in y.iter().enumerate() {
                        let e = (v - case.expected_value(k, j)).abs();
                        max = max.max(e);
                        scale = scale.max(case.expected_value(k, j).abs());
                        sum += e as f64;
                        n += 1;
                    }
                }
                println!(
                    "{:<28} {:>5} {:>12.4e} {:>12.4e} {:>14.4}",
                    f.name,
                    mode.precision().name(),
                    max,
                    sum / n as f64,
                    scale
                );
            }
        }
        return Ok(());
    }
    if arg == "write-cases" {
        for f in &fixtures {
            std::fs::write(f.dir.join("model.dws"), f.blob.bytes())?;
            std::fs::write(f.dir.join("case.bin"), &f.case)?;
            for mode in MODES {
                let blob = AlignedBlob::from_bytes(&f.quantize(mode)?);
                let case = golden_case(&f.name, &blob.model()?, f.batch, &f.inputs)?;
                let (blob_file, case_file) = golden_files(mode);
                std::fs::write(f.dir.join(blob_file), blob.bytes())?;
                std::fs::write(f.dir.join(case_file), &case)?;
            }
            println!(
                "wrote {}/model.dws ({} bytes), case.bin and the int8 and 16x8 golden files",
                f.name,
                f.blob.bytes().len(),
            );
        }
        return Ok(());
    }
    let mut backend: Box<dyn Backend> = match arg.as_str() {
        "core" => Box::new(CoreBackend),
        "host" => Box::new(HostBackend {
            threads: dws_host::runner::default_threads(),
        }),
        other => anyhow::bail!("unknown backend `{other}` (core, host, write-cases, quant-report)"),
    };
    let mut failed = run_suite(backend.as_mut(), &fixtures).failed;
    for mode in MODES {
        failed += run_golden_suite(backend.as_mut(), &fixtures, mode).failed;
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
