//! `dws-cuda-bench MODEL.dws [--batch N] [--iters N] [--tf32] [--max-chunk N]
//! [--device N]`: GPU throughput at a batch size and batch-1 latency (what
//! `dws bench --device cuda` prints; usable before the CLI has the flag).

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: dws-cuda-bench MODEL.dws [--batch N] [--iters N] [--tf32] [--max-chunk N] [--device N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let (mut batch, mut iters) = (4096usize, 20usize);
    let mut options = dws_cuda::Options::default();
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Option<usize> {
            let v = args.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{what} needs a number");
            }
            v
        };
        match a.as_str() {
            "--batch" => match num("--batch") {
                Some(v) => batch = v,
                None => return usage(),
            },
            "--iters" => match num("--iters") {
                Some(v) => iters = v,
                None => return usage(),
            },
            "--max-chunk" => match num("--max-chunk") {
                Some(v) => options.max_chunk = v,
                None => return usage(),
            },
            "--device" => match num("--device") {
                Some(v) => options.device = v,
                None => return usage(),
            },
            "--tf32" => options.tf32 = true,
            "-h" | "--help" => return usage(),
            _ if model.is_none() && !a.starts_with('-') => model = Some(a),
            _ => return usage(),
        }
    }
    let Some(model) = model else {
        return usage();
    };
    let blob = match std::fs::read(&model) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading {model}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match dws_cuda::bench(&blob, batch, iters, options) {
        Ok(r) => {
            println!("{model}");
            println!("{r}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
