//! The per-op table: its rows, the work unit of each, and which code belongs
//! to which row, by the function names in a PC's inlined call chain.
//!
//! This is the one place to change when the int8 executor's functions are
//! renamed or restructured: run `run-qemu.sh --profile` and, if the
//! "other" row grows, add a rule for the functions it lists.

use crate::work::Unit;

/// The rows of the table: the op and the units its work is counted in
/// (summed; all of one kind, e.g. reads).
pub const OPS: &[(&str, &[Unit])] = &[
    (
        "linear dot products (MLPs, Q/K/V, fc_o)",
        &[Unit::LinearMacs],
    ),
    (
        "linear output requant (+ fc_o residual)",
        &[Unit::LinearOutputs],
    ),
    ("scatter add_requant", &[Unit::ScatterAdds]),
    ("softmax_q15: max, exp, sum", &[Unit::Scores]),
    ("softmax_q15: division", &[Unit::Scores]),
    ("attention value sums + head loop", &[Unit::ValueMacs]),
    ("attention scores QK", &[Unit::ScoreMacs]),
    ("attention output requant", &[Unit::AttentionOutputs]),
    ("gather (pool)", &[Unit::PoolReads]),
    (
        "pool_rows (invariant head, DeepSets)",
        &[Unit::HeadReads, Unit::SetPoolReads],
    ),
    ("cell-wise gather requant_i8", &[Unit::CellValues]),
    ("destination requant", &[Unit::DstValues]),
    ("batch norm", &[Unit::AffineValues]),
    ("input quantization", &[Unit::InputValues]),
    ("memcpy/memset", &[Unit::Blocks]),
    ("plan decode", &[Unit::Blocks]),
    ("executor: layer and block loops, ReLU, input checks", &[]),
    ("runner and timing marks (firmware)", &[]),
    (OTHER, &[]),
];

/// The row of code that no rule claims.
pub const OTHER: &str = "other";

/// A PC belongs to the op of the first rule whose names all occur in its
/// inlined call chain, each as whole words of one frame's name (`dot_acc`
/// matches `kernels::dsp::dot_acc`, not `dot_acc2`; a trailing `*` matches
/// any ending). A name written `=name` must occur in the innermost frame of
/// this repository's code (the first naming a `dws_` crate): code written in
/// that function itself, not in one it calls. Order matters: a dot product
/// inside `attend_head` is attention, not linear. A function that is not
/// inlined starts its own chain: its rule cannot see who called it.
pub const RULES: &[(&str, &[&str])] = &[
    ("attention scores QK", &["attend_head", "dot_acc"]),
    ("attention value sums + head loop", &["attend_head"]),
    ("softmax_q15: division", &["softmax_q15", "Q15Divisor"]),
    ("softmax_q15: max, exp, sum", &["softmax_q15"]),
    ("attention output requant", &["Int8Kernels::attention"]),
    // The requantizing closures handed to `Int8Kernels::linear`.
    (
        "linear output requant (+ fc_o residual)",
        &["Int8Kernels::fc_o_residual::{{closure}}"],
    ),
    (
        "linear output requant (+ fc_o residual)",
        &["Int8Kernels::linear8::{{closure}}"],
    ),
    (
        "linear output requant (+ fc_o residual)",
        &["set8::{{closure}}"],
    ),
    (
        "linear dot products (MLPs, Q/K/V, fc_o)",
        &["Int8Kernels::linear"],
    ),
    // Attention pooling (DeepSets): the scores against the query.
    ("attention scores QK", &["set8", "dot_acc"]),
    // The head's last layer and the input skip call `dot_acc` directly.
    ("linear dot products (MLPs, Q/K/V, fc_o)", &["dot_acc"]),
    ("scatter add_requant", &["Int8Kernels::add_requant"]),
    ("gather (pool)", &["Int8Kernels::pool"]),
    ("gather (pool)", &["gather8"]),
    ("cell-wise gather requant_i8", &["Int8Kernels::requant_i8"]),
    ("destination requant", &["Int8Kernels::requant"]),
    ("batch norm", &["Int8Kernels::affine"]),
    ("batch norm", &["affine_entries"]),
    ("input quantization", &["quantize_input"]),
    ("pool_rows (invariant head, DeepSets)", &["pool_rows"]),
    ("pool_rows (invariant head, DeepSets)", &["exec::head"]),
    ("memcpy/memset", &["compiler_builtins::mem"]),
    ("memcpy/memset", &["__aeabi_mem*"]),
    ("plan decode", &["postcard"]),
    ("plan decode", &["serde_core::de"]),
    ("plan decode", &["Ops::decode"]),
    ("plan decode", &["Ops::next_tagged"]),
    ("plan decode", &["next_block"]),
    ("plan decode", &["next_quant"]),
    ("plan decode", &["=dws_core::Ops"]),
    // Code written in the executor's own functions (not in a kernel).
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=int8::exec::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=kernels::set8"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=kernels::linear8"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=kernels::mlp8*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=Model::run*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=kernels::take_i*"],
    ),
    // Its helpers: grid sizes, block dimensions, plan types, parameter
    // slices, and the requantizations it does itself (input skip, resampling).
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::shape::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::validate::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=kernels::block::pooled"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::plan::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::int8::P8::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::int8::Layout8::*"],
    ),
    (
        "executor: layer and block loops, ReLU, input checks",
        &["=dws_core::quant::*"],
    ),
    // What the firmware runs around each inference, marks included.
    ("runner and timing marks (firmware)", &["=dws_firmware::*"]),
    ("runner and timing marks (firmware)", &["=dws_embedded::*"]),
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
        assert!(!has_word("dws_core::int8::kernels::dot_acc2", "dot_acc"));
        assert!(!has_word("Int8Kernels::linear8", "Int8Kernels::linear"));
        assert!(has_word(
            "<&mut Portable as Int8Kernels::pool>",
            "Int8Kernels::pool"
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
            "dws_core::int8::kernels::dsp::mac4",
            "dws_core::int8::kernels::dsp::dot_acc",
            "dws_core::int8::kernels::attend_head",
            "dws_core::int8::kernels::Int8Kernels::attention",
        ]);
        assert_eq!(classify(&qk), "attention scores QK");
        let requant = chain(&[
            "dws_core::quant::Requant::apply",
            "dws_core::int8::kernels::Int8Kernels::linear8::{{closure}}",
            "dws_core::int8::kernels::linear_row",
            "dws_core::int8::kernels::Int8Kernels::linear",
        ]);
        assert_eq!(
            classify(&requant),
            "linear output requant (+ fc_o residual)"
        );
        assert_eq!(classify(&chain(&["cortex_m_rt::Reset"])), OTHER);
        // `=`: the executor's own code, not a kernel inlined into it.
        let own = chain(&["core::cmp::Ord::max", "dws_core::int8::exec::run8"]);
        assert_eq!(
            classify(&own),
            "executor: layer and block loops, ReLU, input checks"
        );
        let renamed = chain(&[
            "dws_core::int8::kernels::scatter",
            "dws_core::int8::exec::dst_rows",
        ]);
        assert_eq!(classify(&renamed), OTHER);
    }
}
