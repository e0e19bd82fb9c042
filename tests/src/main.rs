//! `dws-reference`: run the reference suite over a backend, or rewrite the
//! committed `model.dws` / `case.bin` files of every fixture.
//!
//! ```text
//! dws-reference [core|host]      # run the suite (default: core); exits 1 on failures
//! dws-reference write-cases      # regenerate tests/fixtures/*/model.dws, case.bin,
//!                                # model.int8.dws and case_int8.bin (the int8 golden outputs)
//! dws-reference int8-report      # int8 against f32 (upstream) error per fixture
//! ```

use anyhow::Result;
use dws_reference::{load_all, run_int8_suite, run_suite, Backend, CoreBackend, HostBackend};

fn main() -> Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "core".into());
    let fixtures = load_all()?;
    if arg == "int8-report" {
        println!(
            "{:<28} {:>12} {:>12} {:>14}",
            "fixture", "max |err|", "mean |err|", "max |upstream|"
        );
        for f in &fixtures {
            let case = f.case();
            let m = f.int8_blob.model()?;
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
                "{:<28} {:>12.4e} {:>12.4e} {:>14.4}",
                f.name,
                max,
                sum / n as f64,
                scale
            );
        }
        return Ok(());
    }
    if arg == "write-cases" {
        for f in &fixtures {
            std::fs::write(f.dir.join("model.dws"), f.blob.bytes())?;
            std::fs::write(f.dir.join("case.bin"), &f.case)?;
            std::fs::write(f.dir.join("model.int8.dws"), f.int8_blob.bytes())?;
            std::fs::write(f.dir.join("case_int8.bin"), &f.int8_case)?;
            println!(
                "wrote {}/model.dws ({} bytes) and case.bin ({} bytes)",
                f.name,
                f.blob.bytes().len(),
                f.case.len()
            );
        }
        return Ok(());
    }
    let mut backend: Box<dyn Backend> = match arg.as_str() {
        "core" => Box::new(CoreBackend),
        "host" => Box::new(HostBackend {
            threads: dws_host::runner::default_threads(),
        }),
        other => anyhow::bail!("unknown backend `{other}` (core, host, write-cases)"),
    };
    let report = run_suite(backend.as_mut(), &fixtures);
    let int8 = run_int8_suite(backend.as_mut(), &fixtures);
    if report.failed + int8.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
