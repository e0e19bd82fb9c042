//! `dws-reference`: run the reference suite over a backend, or rewrite the
//! committed `model.dws` / `case.bin` files of every fixture.
//!
//! ```text
//! dws-reference [core|host]      # run the suite (default: core); exits 1 on failures
//! dws-reference write-cases      # regenerate tests/fixtures/*/model.dws and case.bin
//! ```

use anyhow::Result;
use dws_reference::{load_all, run_suite, Backend, CoreBackend, HostBackend};

fn main() -> Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "core".into());
    let fixtures = load_all()?;
    if arg == "write-cases" {
        for f in &fixtures {
            std::fs::write(f.dir.join("model.dws"), f.blob.bytes())?;
            std::fs::write(f.dir.join("case.bin"), &f.case)?;
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
    if report.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
