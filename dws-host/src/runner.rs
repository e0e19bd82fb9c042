//! Batch inference on the CPU, parallel over the batch.

use anyhow::{anyhow, Result};
use dws_core::Model;

/// Number of worker threads to use by default: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `batch` inputs (`[batch, input_len]`) and returns `[batch, output_len]`.
pub fn run_batch(
    model: &Model<'_>,
    inputs: &[f32],
    batch: usize,
    threads: usize,
) -> Result<Vec<f32>> {
    let (ilen, olen) = (model.input_len(), model.output_len());
    if inputs.len() != batch * ilen {
        return Err(anyhow!(
            "inputs hold {} values, expected {batch} x {ilen}",
            inputs.len()
        ));
    }
    let mut out = vec![0f32; batch * olen];
    if batch == 0 {
        return Ok(out);
    }
    let threads = threads.clamp(1, batch);
    let per_thread = batch.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .chunks(per_thread * ilen)
            .zip(out.chunks_mut(per_thread * olen))
            .map(|(xs, ys)| {
                s.spawn(move || -> Result<()> {
                    let mut scratch = vec![0f32; model.scratch_len()];
                    for (x, y) in xs.chunks(ilen).zip(ys.chunks_mut(olen)) {
                        model.run(x, &mut scratch, y)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("worker thread panicked"))?)
    })?;
    Ok(out)
}
