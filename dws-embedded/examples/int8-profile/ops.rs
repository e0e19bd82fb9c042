//! The per-op table: its rows, the work unit of each, and which code belongs
//! to which row, by the function names in a PC's inlined call chain.
//!
//! This is the one place to change when the quantized executor's functions are
//! renamed or restructured: run `run-qemu.sh --profile` and, if the
//! "other" row grows, add a rule for the functions it lists.

use crate::work::Unit;

// The ops (the rows' names).
const LINEAR: &str = "linear dot products (MLPs, Q/K/V, fc_o)";
const LINEAR_REQUANT: &str = "linear output requant (+ fc_o residual)";
const SCATTER: &str = "scatter add_requant";
const SOFTMAX: &str = "softmax_q15: max, exp, sum";
const SOFTMAX_DIV: &str = "softmax_q15: division";
const ATT_VALUES: &str = "attention value sums + head loop";
const ATT_SCORES: &str = "attention scores QK";
const ATT_REQUANT: &str = "attention output requant";
const GATHER: &str = "gather (pool)";
const POOL_ROWS: &str = "pool_rows (invariant head, DeepSets)";
const CELLWISE: &str = "cell-wise gather requant_act";
const DST_REQUANT: &str = "destination requant";
const BATCH_NORM: &str = "batch norm";
const INPUT: &str = "input quantization";
const MEMCPY: &str = "memcpy/memset";
const DECODE: &str = "plan decode";
const EXECUTOR: &str = "executor: layer and block loops, ReLU, input checks";
const RUNNER: &str = "runner and timing marks (firmware)";
/// The row of code that no rule claims.
pub const OTHER: &str = "other";

/// The rows of the table: the op and the units its work is counted in
/// (summed; all of one kind, e.g. reads).
#[rustfmt::skip]
pub const OPS: &[(&str, &[Unit])] = &[
    (LINEAR,         &[Unit::LinearMacs]),
    (LINEAR_REQUANT, &[Unit::LinearOutputs]),
    (SCATTER,        &[Unit::ScatterAdds]),
    (SOFTMAX,        &[Unit::Scores]),
    (SOFTMAX_DIV,    &[Unit::Scores]),
    (ATT_VALUES,     &[Unit::ValueMacs]),
    (ATT_SCORES,     &[Unit::ScoreMacs]),
    (ATT_REQUANT,    &[Unit::AttentionOutputs]),
    (GATHER,         &[Unit::PoolReads]),
    (POOL_ROWS,      &[Unit::HeadReads, Unit::SetPoolReads]),
    (CELLWISE,       &[Unit::CellValues]),
    (DST_REQUANT,    &[Unit::DstValues]),
    (BATCH_NORM,     &[Unit::AffineValues]),
    (INPUT,          &[Unit::InputValues]),
    (MEMCPY,         &[Unit::Blocks]),
    (DECODE,         &[Unit::Blocks]),
    (EXECUTOR,       &[]),
    (RUNNER,         &[]),
    (OTHER,          &[]),
];

/// A PC belongs to the op of the first rule whose names all occur in its
/// inlined call chain, each as whole words of one frame's name (`dot_acc`
/// matches `kernels::dsp::dot_acc`, not `dot_acc2`; a trailing `*` matches
/// any ending). A name written `=name` must occur in the innermost frame of
/// this repository's code (the first naming a `dws_` crate): code written in
/// that function itself, not in one it calls. Order matters: a dot product
/// inside `attend_head` is attention, not linear. A function that is not
/// inlined starts its own chain: its rule cannot see who called it.
#[rustfmt::skip]
pub const RULES: &[(&str, &[&str])] = &[
    (ATT_SCORES,     &["attend_head", "dot_acc"]),
    (ATT_VALUES,     &["attend_head"]),
    (SOFTMAX_DIV,    &["softmax_q15", "Q15Divisor"]),
    (SOFTMAX,        &["softmax_q15"]),
    (ATT_REQUANT,    &["Kernels::attention"]),
    // The requantizing closures handed to `Kernels::linear`.
    (LINEAR_REQUANT, &["Kernels::fc_o_residual::{{closure}}"]),
    (LINEAR_REQUANT, &["Kernels::linear_q::{{closure}}"]),
    (LINEAR_REQUANT, &["set_layer::{{closure}}"]),
    (LINEAR,         &["Kernels::linear"]),
    // Attention pooling (DeepSets): the scores against the query.
    (ATT_SCORES,     &["set_layer", "dot_acc"]),
    // The head's last layer and the input skip call `dot_acc` directly.
    (LINEAR,         &["dot_acc"]),
    (SCATTER,        &["Kernels::add_requant"]),
    (GATHER,         &["Kernels::pool"]),
    (GATHER,         &["exec::gather"]),
    (CELLWISE,       &["Kernels::requant_act"]),
    (DST_REQUANT,    &["Kernels::requant"]),
    (BATCH_NORM,     &["Kernels::affine"]),
    (BATCH_NORM,     &["affine_entries"]),
    (INPUT,          &["quantize_input"]),
    (POOL_ROWS,      &["pool_rows"]),
    (POOL_ROWS,      &["exec::head"]),
    (MEMCPY,         &["compiler_builtins::mem"]),
    (MEMCPY,         &["__aeabi_mem*"]),
    (DECODE,         &["postcard"]),
    (DECODE,         &["serde_core::de"]),
    (DECODE,         &["Ops::decode"]),
    (DECODE,         &["Ops::next_tagged"]),
    (DECODE,         &["next_block"]),
    (DECODE,         &["next_quant"]),
    (DECODE,         &["=dws_core::Ops"]),
    // Code written in the executor's own functions (not in a kernel)...
    (EXECUTOR,       &["=quantized::exec::*"]),
    (EXECUTOR,       &["=kernels::set_layer"]),
    (EXECUTOR,       &["=kernels::linear_q"]),
    (EXECUTOR,       &["=kernels::mlp*"]),
    (EXECUTOR,       &["=kernels::take"]),
    (EXECUTOR,       &["=Model::run*"]),
    // ... and in its helpers: grid sizes, block dimensions, plan types,
    // parameter slices, the requantizations it does itself (input skip,
    // resampling).
    (EXECUTOR,       &["=dws_core::shape::*"]),
    (EXECUTOR,       &["=dws_core::validate::*"]),
    (EXECUTOR,       &["=kernels::block::pooled"]),
    (EXECUTOR,       &["=dws_core::plan::*"]),
    (EXECUTOR,       &["=dws_core::quantized::QParams::*"]),
    (EXECUTOR,       &["=dws_core::quantized::QLayout::*"]),
    (EXECUTOR,       &["=dws_core::quant::*"]),
    (EXECUTOR,       &["=dws_core::quantized::act::*"]),
    // What the firmware runs around each inference, marks included.
    (RUNNER,         &["=dws_firmware::*"]),
    (RUNNER,         &["=dws_embedded::*"]),
];

/// The op of a PC with this inlined call chain (innermost frame first).
pub fn classify(chain: &[String]) -> &'static str {
    let own = chain.iter().find(|f| f.contains("dws_"));
    let found = |name: &&str| match name.strip_prefix('=') {
        Some(name) => own.is_some_and(|f| has_word(f, name)),
        None => chain.iter().any(|f| has_word(f, name)),
    };
    RULES
        .iter()
        .find(|(_, names)| names.iter().all(found))
        .map_or(OTHER, |(op, _)| op)
}

/// Whether `word` occurs in `name` between characters that cannot continue
/// an identifier (`word*`: after such a character, with any ending).
fn has_word(name: &str, word: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let (word, any_end) = match word.strip_suffix('*') {
        Some(w) => (w, true),
        None => (word, false),
    };
    name.match_indices(word).any(|(i, _)| {
        !ident(name[..i].chars().next_back())
            && (any_end || !ident(name[i + word.len()..].chars().next()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_rule_names_a_row() {
        for (op, names) in RULES {
            assert!(OPS.iter().any(|(o, _)| o == op), "rule for unknown op {op}");
            assert!(!names.is_empty());
        }
        assert!(OPS.iter().any(|(o, _)| *o == OTHER));
    }

    #[test]
    fn names_match_whole_words_and_the_first_rule_wins() {
        assert!(has_word("dws_core::int8::kernels::dsp::dot_acc", "dot_acc"));
        assert!(!has_word("dws_core::quantized::act::dot_acc2", "dot_acc"));
        assert!(!has_word("Kernels::linear_q", "Kernels::linear"));
        assert!(has_word(
            "<&mut Portable as Kernels::pool>",
            "Kernels::pool"
        ));
        assert!(has_word(
            "compiler_builtins::arm::__aeabi_memcpy4",
            "__aeabi_mem*"
        ));
        assert!(!has_word(
            "compiler_builtins::arm::x__aeabi_memcpy4",
            "__aeabi_mem*"
        ));
        let qk = chain(&[
            "dws_core::quantized::act::dsp::mac4",
            "dws_core::quantized::act::dsp::dot_acc",
            "dws_core::quantized::kernels::attend_head",
            "dws_core::quantized::kernels::Kernels::attention",
        ]);
        assert_eq!(classify(&qk), ATT_SCORES);
        let requant = chain(&[
            "dws_core::quant::Requant::apply",
            "dws_core::quantized::kernels::Kernels::linear_q::{{closure}}",
            "dws_core::quantized::kernels::linear_row",
            "dws_core::quantized::kernels::Kernels::linear",
        ]);
        assert_eq!(classify(&requant), LINEAR_REQUANT);
        assert_eq!(classify(&chain(&["cortex_m_rt::Reset"])), OTHER);
        // `=`: the executor's own code, not a kernel inlined into it.
        let own = chain(&["core::cmp::Ord::max", "dws_core::quantized::exec::run_q"]);
        assert_eq!(classify(&own), EXECUTOR);
        let renamed = chain(&[
            "dws_core::quantized::kernels::scatter",
            "dws_core::quantized::exec::dst_rows",
        ]);
        assert_eq!(classify(&renamed), OTHER);
    }
}
