//! Prints the launch list of a blob: `cargo run -p dws-cuda --example lowering -- model.dws`.

use dws_cuda::lower::Step;
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: lowering MODEL.dws")?;
    let blob = std::fs::read(&path)?;
    let p = dws_cuda::lower_blob(&blob)?;
    println!(
        "{path}: {:?}, {} steps, {} bytes of arena per input, {} bytes of parameters",
        p.precision,
        p.launches(),
        p.arena_per_sample,
        p.params.len()
    );
    println!("steps per DWS layer: {:?}", p.layer_steps);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut sets: BTreeMap<(i32, i32, i32, i64), usize> = BTreeMap::new();
    for s in &p.steps {
        let k = match s {
            Step::Launch(l) => l.kernel.name().to_string(),
            Step::Gemm(g) if g.per_sample => "gemm (strided batched)".into(),
            Step::Gemm(_) => "gemm".into(),
        };
        *count.entry(k).or_default() += 1;
        if let Step::Launch(l) = s {
            if l.kernel == dws_cuda::kernels::Kernel::AttentionF32 {
                let a: dws_cuda::args::AttnArgs = bytemuck::pod_read_unaligned(l.args.bytes());
                *sets
                    .entry((a.n, a.dv, a.heads, a.rows_per_sample))
                    .or_default() += 1;
            }
        }
    }
    for ((n, dv, heads, rows), c) in sets {
        println!("  attention n {n} dv {dv} heads {heads} rows/sample {rows}: x{c}");
    }
    for (k, n) in count {
        println!("  {n:5}  {k}");
    }
    Ok(())
}
