//! Regression tests for panics found by fuzzing (`dws-core/fuzz`) and by review.
//! Each blob here used to panic with "attempt to ... with overflow" in
//! `Model::new_checked` (debug builds; release builds wrapped and could then index
//! out of bounds); now each gives a typed error or a valid model.

use dws_core::blob::{emit, Precision};
use dws_core::plan::{
    Axis, Block, BlockKind, DwsLayer, Linear, Map, Mlp, Op, Output, ParamRef, Pool, Reduction,
    SetAxis, SetLayer, SetPooling, Spec,
};
use dws_core::quant::{BlockQ, LinearQ, MapQ, MlpQ, Quant, Requant};
use dws_core::{Error, Model};

/// Encodes `spec` and `ops` into a blob with `params`, in a 16-aligned buffer.
fn blob(spec: &Spec, ops: &[Op], params: &[f32]) -> Vec<u128> {
    blob_of(Precision::F32, spec, ops, bytemuck::cast_slice(params))
}

fn blob_of(precision: Precision, spec: &Spec, ops: &[Op], params: &[u8]) -> Vec<u128> {
    let mut plan = vec![0u8; 64 + 256 * ops.len()];
    let mut used = postcard::to_slice(spec, &mut plan).expect("spec").len();
    for op in ops {
        used += postcard::to_slice(op, &mut plan[used..]).expect("op").len();
    }
    let len = dws_core::blob::blob_len(used, params.len());
    let mut words = vec![0u128; len.div_ceil(16)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    emit(precision, &plan[..used], params, &mut bytes[..len]).expect("emit");
    words
}

fn open(words: &[u128], f: impl FnOnce(Result<Model<'_>, Error>)) {
    let bytes: &[u8] = bytemuck::cast_slice(words);
    // The blob ends where its parameters end; cut the padding of the last word.
    let plan_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let params_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    f(Model::new_checked(
        &bytes[..dws_core::blob::blob_len(plan_len, params_len)],
    ));
}

fn spec(dims: &[u32], features: u32, ops: u32) -> Spec {
    Spec {
        dims: heapless::Vec::from_slice(dims).expect("dims"),
        input_features: features,
        output: Output::WeightSpace { features: 1 },
        ops,
    }
}

/// A DWS layer with no blocks: the smallest plan that reaches the spec check.
fn empty_layer() -> Op {
    Op::Dws(DwsLayer {
        fin: 1,
        fout: 1,
        reduction: Reduction::Sum,
        blocks: 0,
        resample: None,
    })
}

#[test]
fn huge_dims_are_rejected_not_overflowed() {
    // d_i * d_{i+1} summed over the tensors overflowed usize in `Shape::total_cells`.
    let s = spec(&[u32::MAX; 3], 1, 1);
    open(&blob(&s, &[empty_layer()], &[]), |r| {
        assert_eq!(r.err(), Some(Error::InvalidPlan("tensor too large")));
    });
    // total cells * input_features overflowed u64 in `check_spec`.
    let s = spec(&[65536, 65536, 1], u32::MAX, 1);
    open(&blob(&s, &[empty_layer()], &[]), |r| {
        assert_eq!(r.err(), Some(Error::InvalidPlan("tensor too large")));
    });
    let s = spec(&[1 << 31, 1 << 31, 1], 4, 1);
    open(&blob(&s, &[empty_layer()], &[]), |r| {
        assert_eq!(r.err(), Some(Error::InvalidPlan("tensor too large")));
    });
    // Sixteen layers of the largest dims.
    let s = spec(&[u32::MAX; 17], u32::MAX, 1);
    open(&blob(&s, &[empty_layer()], &[]), |r| {
        assert_eq!(r.err(), Some(Error::InvalidPlan("tensor too large")));
    });
}

#[test]
fn multiply_add_count_saturates() {
    // 2100 set-attention blocks over 2^26 rows: each counts 2 n^2 dv = 2^53
    // multiply-adds, and the sum overflowed u64 in `validate`.
    let one = ParamRef { offset: 0, len: 1 };
    let lin = Linear {
        fin: 1,
        fout: 1,
        weight: one,
        bias: None,
    };
    let block = Op::Block(Block {
        kind: BlockKind::W2wGeneralMatrixSet,
        src: 0,
        dst: 0,
        pool: Pool {
            rows: false,
            cols: false,
        },
        set_axis: SetAxis::Cols,
        fold: Axis::None,
        map: Map::Set(SetLayer::Attention {
            heads: 1,
            fc_q: lin,
            fc_k: lin,
            fc_v: lin,
            fc_o: lin,
        }),
        place: SetAxis::Cols,
        unfold: Axis::None,
        scale: 0.5,
    });
    let n = 2100;
    let mut ops = vec![Op::Dws(DwsLayer {
        fin: 1,
        fout: 1,
        reduction: Reduction::Max,
        blocks: n,
        resample: None,
    })];
    ops.extend((0..n).map(|_| block.clone()));
    let s = spec(&[1, 1 << 26, 1], 1, ops.len() as u32);
    open(&blob(&s, &ops, &[1.0]), |r| {
        let m = r.expect("a valid (if enormous) plan");
        assert_eq!(m.layout().macs, u64::MAX);
        assert_eq!(m.layout().blocks, n as usize);
    });
}

#[test]
fn int8_accumulator_wraps() {
    // An int8 blob may hold any int32 bias: `dot_acc` overflowed with a bias near
    // i32::MAX (found by the `blob` fuzz target on quantized fixtures).
    use dws_core::quantized::dot_acc;
    assert_eq!(
        dot_acc(&[127, 127], &[127, 127], i32::MAX),
        i32::MAX.wrapping_add(2 * 127 * 127)
    );
    assert_eq!(
        dot_acc(&[-127], &[127], i32::MIN),
        i32::MIN.wrapping_sub(127 * 127)
    );
    assert_eq!(dot_acc(&[3, -2], &[5, 7], 10), 10 + 15 - 14);
}

/// Requantization by exactly 1.
const ONE: Requant = Requant {
    m: 1 << 30,
    shift: 30,
};
/// Requantization by 2^29: every non-zero value saturates the int32 range.
const HUGE: Requant = Requant {
    m: 1 << 30,
    shift: 1,
};

/// A one-layer linear map `1 -> 1` with its weight at byte `w` and bias at `b`.
fn linear(w: u32, b: u32) -> Linear {
    Linear {
        fin: 1,
        fout: 1,
        weight: ParamRef { offset: w, len: 1 },
        bias: Some(ParamRef { offset: b, len: 1 }),
    }
}

/// Runs an int8 plan of one `W_0 -> W_0` set-layer block (input network
/// `[1, 1, 1]`, one feature) on zeros: it must run, not panic.
fn run_one_int8_set_block(set: SetLayer, map: MapQ, params: &[u8]) {
    let four = |r: Requant| heapless::Vec::from_slice(&[r; 4]).expect("4 tensors");
    let scales = heapless::Vec::from_slice(&[1.0f32; 4]).expect("4 tensors");
    let ops = [
        Op::Quant(Quant::Input {
            scales: scales.clone(),
        }),
        Op::Dws(DwsLayer {
            fin: 1,
            fout: 1,
            reduction: Reduction::Sum,
            blocks: 1,
            resample: None,
        }),
        Op::Quant(Quant::Layer {
            out: four(ONE),
            resample: None,
        }),
        Op::Block(Block {
            kind: BlockKind::W2wGeneralMatrixSet,
            src: 0,
            dst: 0,
            pool: Pool {
                rows: false,
                cols: false,
            },
            set_axis: SetAxis::Rows,
            fold: Axis::Cols,
            map: Map::Set(set),
            place: SetAxis::Rows,
            unfold: Axis::Cols,
            scale: 1.0,
        }),
        Op::Quant(Quant::Block(BlockQ {
            x: ONE,
            map,
            contrib: ONE,
        })),
        Op::Quant(Quant::Output { scales }),
    ];
    let s = spec(&[1, 1, 1], 1, ops.len() as u32);
    open(&blob_of(Precision::Int8, &s, &ops, params), |r| {
        let m = r.expect("a valid int8 plan");
        let mut scratch = vec![0f32; m.scratch_len()];
        let mut out = vec![0f32; m.output_len()];
        let y = m.run(&[0.0; 4], &mut scratch, &mut out).expect("int8 run");
        assert_eq!(y.len(), 4);
    });
}

#[test]
fn int8_deepsets_difference_saturates() {
    // DeepSets computes `sat8(R_gamma(acc) - R_lambda(acc))`; both terms saturate to
    // the int32 range and their difference overflowed (i32::MAX - i32::MIN) in
    // `int8::kernels` (found by the `blob` fuzz target). Now it saturates: 127.
    let mlp = |l: Linear| Mlp {
        layers: heapless::Vec::from_slice(&[l]).expect("one layer"),
    };
    let mlpq = |r: Requant| MlpQ {
        layers: heapless::Vec::from_slice(&[LinearQ::Tensor(r)]).expect("one layer"),
    };
    let set = SetLayer::DeepSets {
        gamma: mlp(linear(0, 4)),
        lambda: mlp(linear(8, 12)),
        pooling: SetPooling::Reduce(Reduction::Sum),
    };
    let map = MapQ::DeepSets {
        gamma: mlpq(HUGE),
        pooled: ONE,
        score: ONE,
        lambda: mlpq(HUGE),
    };
    // Gamma: weight 1, bias 2^30; Lambda: weight 1, bias -2^30 (int8 weights, int32 biases).
    let mut params = vec![0u8; 16];
    params[0] = 1;
    params[4..8].copy_from_slice(&(1i32 << 30).to_le_bytes());
    params[8] = 1;
    params[12..16].copy_from_slice(&(-(1i32 << 30)).to_le_bytes());
    run_one_int8_set_block(set, map, &params);
}

#[test]
fn int8_attention_sums_saturate() {
    // Set attention computes `sat8(R_oq(Q) + R_oav(AV))` and
    // `sat8(R_yo(O) + R_yfc(relu(fc_o(O))))`; each term saturates to the int32 range
    // and their sum overflowed in `int8::kernels` (found by the `blob` fuzz target).
    let l = linear(0, 4);
    let set = SetLayer::Attention {
        heads: 1,
        fc_q: l,
        fc_k: l,
        fc_v: l,
        fc_o: l,
    };
    let map = MapQ::Attention {
        q: LinearQ::Tensor(ONE),
        k: LinearQ::Tensor(ONE),
        v: LinearQ::Tensor(ONE),
        score: ONE,
        o_q: HUGE,
        o_av: HUGE,
        y_o: HUGE,
        y_fc: LinearQ::Tensor(HUGE),
    };
    // Every projection: weight 1, bias 2^30, so Q = K = V = 127 and fc_o(O) > 0.
    let mut params = vec![0u8; 8];
    params[0] = 1;
    params[4..8].copy_from_slice(&(1i32 << 30).to_le_bytes());
    run_one_int8_set_block(set, map, &params);
}

#[test]
fn misaligned_parameters_are_an_error() {
    // Not a regression: the contract for blobs the caller did not align (the CLI
    // always aligns, so this is only reachable through the library).
    let fixture: &[u8] = include_bytes!("../../tests/fixtures/dws_ds_mean_uneven/model.dws");
    let mut words = vec![0u128; fixture.len().div_ceil(16) + 1];
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    for shift in 0..4 {
        buf[shift..shift + fixture.len()].copy_from_slice(fixture);
        let r = Model::new_checked(&buf[shift..shift + fixture.len()]);
        match shift {
            0 => assert!(r.is_ok()),
            _ => assert_eq!(r.err(), Some(Error::Misaligned)),
        }
    }
    assert_eq!(
        Error::Misaligned.to_string(),
        "blob parameters are not aligned in memory (4 bytes; 8 for a 16x8 model)"
    );
}

#[test]
fn case_sizes_do_not_overflow() {
    // A case file announcing batch = input_len = ~4e9 with empty arrays: the size
    // check `4 * batch * input_len` overflowed u64 in `CaseRepr::new_checked`
    // (found by the `case` fuzz target).
    let bytes = [
        0x01, 0x00, 0xe4, 0xd7, 0xd7, 0xbf, 0x0e, 0xe4, 0xd7, 0xd7, 0xbf, 0x0e, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    let r = dws_core::case::CaseRepr::new_checked(&bytes);
    assert_eq!(
        r.err(),
        Some(Error::InvalidPlan("case arrays do not match their sizes"))
    );
}

/// Section offsets that do not fit a `usize` (a header's `plan_len` near 4 GiB
/// on a 32-bit target) saturate instead of wrapping; the firmware suite checks
/// such a header on the 32-bit target itself.
#[test]
fn section_offsets_saturate() {
    use dws_core::blob::{blob_len, params_offset};
    assert_eq!(params_offset(0), 32);
    assert_eq!(params_offset(1), 48);
    assert_eq!(params_offset(usize::MAX - 20), usize::MAX);
    assert_eq!(blob_len(usize::MAX - 20, 16), usize::MAX);
    assert_eq!(blob_len(16, usize::MAX), usize::MAX);
}

// ---------------------------------------------------------------------------
// Format-2 records (per-channel requantization, 16x8): hostile values are
// typed errors, extreme but valid ones run.
// ---------------------------------------------------------------------------

/// A quantized plan of one `W_0 -> W_0` MLP block (input network `[1, 1, 1]`,
/// one feature) whose linear layer (weight at byte 0, bias at `bias`)
/// requantizes per channel with mantissas at `m`; or, with `head`, a
/// classifier of two classes whose head has per-class logit scales at
/// `head`.
fn per_channel_plan(bias: u32, m: u32, shift: u8, head: Option<u32>) -> (Spec, Vec<Op>) {
    let one = Requant {
        m: 1 << 30,
        shift: 30,
    };
    let four = |r: Requant| heapless::Vec::from_slice(&[r; 4]).expect("4 tensors");
    let linear = |fin: u32, fout: u32| Linear {
        fin,
        fout,
        weight: ParamRef {
            offset: 0,
            len: fin * fout,
        },
        bias: Some(ParamRef {
            offset: bias,
            len: fout,
        }),
    };
    let channel = |fout: u32| LinearQ::Channel {
        m: ParamRef {
            offset: m,
            len: fout,
        },
        shift,
    };
    let mlp = |l: Linear| Mlp {
        layers: heapless::Vec::from_slice(&[l]).expect("one layer"),
    };
    let mlpq = |q: LinearQ| MlpQ {
        layers: heapless::Vec::from_slice(&[q]).expect("one layer"),
    };
    let mut ops = vec![
        Op::Quant(Quant::Input {
            scales: heapless::Vec::from_slice(&[1.0f32; 4]).expect("4 tensors"),
        }),
        Op::Dws(DwsLayer {
            fin: 1,
            fout: 1,
            reduction: Reduction::Sum,
            blocks: 1,
            resample: None,
        }),
        Op::Quant(Quant::Layer {
            out: four(one),
            resample: None,
        }),
        Op::Block(Block {
            kind: BlockKind::W2wGeneralMatrixSet,
            src: 0,
            dst: 0,
            pool: Pool {
                rows: false,
                cols: false,
            },
            set_axis: SetAxis::Rows,
            fold: Axis::Cols,
            map: Map::Mlp(mlp(linear(1, 1))),
            place: SetAxis::Rows,
            unfold: Axis::Cols,
            scale: 1.0,
        }),
        Op::Quant(Quant::Block(BlockQ {
            x: one,
            map: MapQ::Mlp(mlpq(LinearQ::Tensor(one))),
            contrib: one,
        })),
    ];
    let mut s = spec(&[1, 1, 1], 1, 0);
    match head {
        None => {
            // The block's linear layer requantizes per channel.
            if let Some(Op::Quant(Quant::Block(q))) = ops.last_mut() {
                q.map = MapQ::Mlp(mlpq(channel(1)));
            }
            ops.push(Op::Quant(Quant::Output {
                scales: heapless::Vec::from_slice(&[1.0f32; 4]).expect("4 tensors"),
            }));
        }
        Some(scales) => {
            // Head width for [1, 1, 1] with one feature: 4.
            ops.push(Op::Head(dws_core::plan::Head {
                reduction: Reduction::Max,
                mlp: mlp(linear(4, 2)),
            }));
            ops.push(Op::Quant(Quant::Head {
                pooled: four(one),
                mlp: mlpq(channel(2)),
                logit_scale: dws_core::quant::LogitScale::Channel(ParamRef {
                    offset: scales,
                    len: 2,
                }),
            }));
            s.output = Output::Logits { classes: 2 };
        }
    }
    s.ops = ops.len() as u32;
    (s, ops)
}

/// Parameters: weights (1 byte each, up to 8) at 0, then `wide` at 8 (4 or 8
/// bytes each), then i32 `m` at 24, then f32 `logit` at 32.
fn per_channel_params(wide: &[i64], wide8: bool, m: &[i32], logit: &[f32]) -> Vec<u8> {
    let mut p = vec![1u8; 8];
    for v in wide {
        if wide8 {
            p.extend(v.to_le_bytes());
        } else {
            p.extend((*v as i32).to_le_bytes());
        }
    }
    p.resize(24, 0);
    p.extend(m.iter().flat_map(|v| v.to_le_bytes()));
    p.resize(32, 0);
    p.extend(logit.iter().flat_map(|v| v.to_le_bytes()));
    p.resize(p.len().next_multiple_of(8), 0);
    p
}

/// Opens a per-channel plan in `precision` and runs it on `input` when it opens.
fn open_per_channel(
    precision: Precision,
    plan: (Spec, Vec<Op>),
    params: &[u8],
) -> Result<Vec<f32>, Error> {
    let (s, ops) = plan;
    let words = blob_of(precision, &s, &ops, params);
    let mut result = Err(Error::Decode);
    open(&words, |r| {
        result = r.and_then(|m| {
            let mut scratch = vec![0f32; m.scratch_len()];
            let mut out = vec![0f32; m.output_len()];
            m.run(&vec![0.5; m.input_len()], &mut scratch, &mut out)?;
            Ok(out)
        });
    });
    result
}

#[test]
fn per_channel_records_open_and_run_in_both_modes() {
    for (precision, wide8, bias) in [(Precision::Int8, false, 8), (Precision::Int16x8, true, 8)] {
        let params = per_channel_params(&[3, 4], wide8, &[1 << 30, 1 << 29], &[0.5, 0.25]);
        let y = open_per_channel(precision, per_channel_plan(bias, 24, 30, None), &params);
        assert!(y.is_ok(), "{precision:?}: {y:?}");
        let y = open_per_channel(precision, per_channel_plan(bias, 24, 30, Some(32)), &params);
        assert!(y.is_ok_and(|y| y.len() == 2), "{precision:?} head");
    }
}

#[test]
fn hostile_per_channel_records_are_typed_errors() {
    let ok = per_channel_params(&[3, 4], true, &[1 << 30, 1 << 29], &[0.5, 0.25]);
    let run = |plan, params: &[u8]| open_per_channel(Precision::Int16x8, plan, params);
    // Mantissas past the parameter section.
    assert_eq!(
        run(per_channel_plan(8, 4096, 30, None), &ok),
        Err(Error::ParamOutOfBounds)
    );
    // A mantissa reference not 4-aligned.
    assert!(matches!(
        run(per_channel_plan(8, 26, 30, None), &ok),
        Err(Error::InvalidPlan(_))
    ));
    // Shifts outside 1..=62, and a negative mantissa.
    for shift in [0, 63, 255] {
        assert_eq!(
            run(per_channel_plan(8, 24, shift, None), &ok),
            Err(Error::InvalidPlan("malformed requantization multiplier")),
            "shift {shift}"
        );
    }
    let negative = per_channel_params(&[3, 4], true, &[-1, 1 << 29], &[0.5, 0.25]);
    assert_eq!(
        run(per_channel_plan(8, 24, 30, None), &negative),
        Err(Error::InvalidPlan("malformed requantization multiplier"))
    );
    // A 16x8 bias (int64) not 8-aligned.
    assert!(matches!(
        run(per_channel_plan(12, 24, 30, None), &ok),
        Err(Error::InvalidPlan(_))
    ));
    // Per-class logit scales: NaN, or past the section.
    let nan = per_channel_params(&[3, 4], true, &[1 << 30, 1 << 29], &[f32::NAN, 0.25]);
    assert_eq!(
        run(per_channel_plan(8, 24, 30, Some(32)), &nan),
        Err(Error::InvalidPlan("logit scale is not finite"))
    );
    assert_eq!(
        run(per_channel_plan(8, 24, 30, Some(4096)), &ok),
        Err(Error::ParamOutOfBounds)
    );
}

#[test]
fn extreme_16x8_biases_run_without_panic() {
    // int64 biases at the extremes: the accumulator wraps, the requantization
    // saturates; nothing panics (debug builds check overflow).
    for bias in [i64::MAX, i64::MIN, 1 << 62, -(1 << 40)] {
        let params = per_channel_params(&[bias, bias], true, &[i32::MAX, 1], &[1.0, 1.0]);
        for plan in [
            per_channel_plan(8, 24, 1, None),
            per_channel_plan(8, 24, 62, Some(32)),
        ] {
            let y = open_per_channel(Precision::Int16x8, plan, &params).expect("runs");
            assert!(y.iter().all(|v| v.is_finite()), "{bias}: {y:?}");
        }
    }
}

#[test]
fn a_16x8_blob_needs_format_2_and_8_byte_alignment() {
    let params = per_channel_params(&[3, 4], true, &[1 << 30, 1 << 29], &[0.5, 0.25]);
    let (s, ops) = per_channel_plan(8, 24, 30, None);
    let mut words = blob_of(Precision::Int16x8, &s, &ops, &params);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let plan_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let params_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let len = dws_core::blob::blob_len(plan_len, params_len);
    // Parameters 4 bytes off an 8-byte boundary.
    let mut shifted = vec![0u128; len.div_ceil(16) + 1];
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut shifted);
    buf[4..4 + len].copy_from_slice(&bytes[..len]);
    assert_eq!(
        Model::new_checked(&buf[4..4 + len]).err(),
        Some(Error::Misaligned)
    );
    // The same blob labelled format 1 (which has no 16x8 mode).
    bytes[4] = 1;
    let crc = dws_core::crc32(&bytes[32..len]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        Model::new_checked(&bytes[..len]).err(),
        Some(Error::WrongPrecision)
    );
}

#[test]
fn a_16x8_plan_refuses_tensors_whose_sums_could_wrap() {
    // 257 x 256 entries: sums of that many int16 values may pass 2^31.
    let s = spec(&[1, 257, 256, 1], 1, 1);
    let ops = [Op::Quant(Quant::Input {
        scales: heapless::Vec::from_slice(&[1.0f32; 6]).expect("6 tensors"),
    })];
    let words = blob_of(Precision::Int16x8, &s, &ops, &[0; 8]);
    open(&words, |r| {
        assert_eq!(
            r.err(),
            Some(Error::InvalidPlan(
                "a 16x8 plan's tensors have at most 65,536 entries"
            ))
        );
    });
}
