//! Fuzzes the fast f32 engine of `dws run` (`dws_host::fast`, `unsafe` SIMD
//! kernels) on arbitrary blobs: `[flags] ++ blob` as in `dws-core/fuzz`'s `blob`
//! target (bit 0: fix the CRC, bit 1: fix the parameter length), then, for blobs
//! the core accepts, `FastModel::with_options` (AVX2 when the CPU has it, or the
//! portable kernels: flags bit 2; chunk size 1 + flags bits 3-5) and `run_batch` on
//! batches of 1-4 inputs (flags bits 6-7) with 1 thread. Build it with AddressSanitizer
//! (cargo-fuzz's default) so that out-of-bounds accesses of the `unsafe` code are caught.
//!
//! Properties: nothing panics; the fast engine accepts every f32 blob the core
//! accepts and runs every finite input; its outputs agree with the core's (within
//! 1e-3 of the output's scale, when parameters and inputs are moderate).
#![no_main]

use dws_core::blob::{params_offset, Precision, HEADER_LEN};
use dws_core::plan::Op;
use dws_core::{crc32, Model};
use dws_host::fast::{FastModel, FastOptions, Isa};
use libfuzzer_sys::fuzz_target;

/// Largest input + scratch + output (f32 elements) of a model to run.
const MAX_BUFFERS: usize = 1 << 18;
/// Largest estimated work per input of a model to run.
const MAX_WORK: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, blob)) = data.split_first() else {
        return;
    };
    let mut words = vec![0u128; blob.len().div_ceil(16)];
    let bytes: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut words)[..blob.len()];
    bytes.copy_from_slice(blob);
    if bytes.len() >= HEADER_LEN {
        if flags & 2 != 0 {
            let plan_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let start = params_offset(plan_len as usize);
            if let Some(len) = bytes.len().checked_sub(start) {
                bytes[12..16].copy_from_slice(&(len as u32).to_le_bytes());
            }
        }
        if flags & 1 != 0 {
            let crc = crc32(&bytes[HEADER_LEN..]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let Ok(model) = Model::new_checked(bytes) else {
        return;
    };
    if model.precision() != Precision::F32 {
        return;
    }
    let (ilen, olen) = (model.input_len(), model.output_len());
    let work = model.layout().macs.saturating_add(
        (u64::from(model.spec().ops) + 1)
            .saturating_mul((ilen + model.scratch_len() + olen) as u64),
    );
    if ilen + model.scratch_len() + olen > MAX_BUFFERS || work > MAX_WORK {
        return;
    }
    let opts = FastOptions {
        chunk: 1 + usize::from((flags >> 3) & 7),
        isa: if flags & 4 != 0 {
            Isa::Portable
        } else {
            Isa::detect()
        },
    };
    let fast = FastModel::with_options(&model, opts)
        .unwrap_or_else(|e| panic!("the fast engine rejects a valid blob: {e:#}"));
    assert_eq!((fast.input_len(), fast.output_len()), (ilen, olen));

    let batch = 1 + usize::from(flags >> 6);
    let byte = |i: usize| blob.get(i % blob.len().max(1)).copied().unwrap_or(0);
    let inputs: Vec<f32> = (0..batch * ilen)
        .map(|i| f32::from(byte(i) as i8) * 0.0625)
        .collect();
    let out = fast
        .run_batch(&inputs, batch, 1)
        .unwrap_or_else(|e| panic!("the fast engine fails on finite inputs: {e:#}"));
    assert_eq!(out.len(), batch * olen);

    // Compare with the core when nothing is near overflow: moderate parameters and
    // block scales, and no normalization by a (near) zero standard deviation, whose
    // infinities the two engines may propagate differently.
    if !model.params().iter().all(|p| p.abs() <= 8.0) {
        return;
    }
    let extreme = model.ops().any(|op| match op {
        Ok(Op::Normalize { std, .. }) => model.params()
            [std.offset as usize..(std.offset + std.len) as usize]
            .iter()
            .any(|s| s.abs() < 0.125),
        Ok(Op::Block(b)) => b.scale.abs() > 8.0,
        _ => false,
    });
    if extreme {
        return;
    }
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut y = vec![0f32; olen];
    for (x, o) in inputs.chunks(ilen).zip(out.chunks(olen)) {
        let y = model.run(x, &mut scratch, &mut y).expect("core run");
        if !y.iter().all(|v| v.is_finite() && v.abs() < 1e6) {
            continue;
        }
        let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in y.iter().zip(o).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * scale,
                "output {i}: core {a}, fast {b} (scale {scale})"
            );
        }
    }
});
