//! Where the instructions of an int8 inference go on the Cortex-M4: the
//! per-op table of `run-qemu.sh --profile`.
//!
//! ```text
//! int8-profile --work MODEL.int8.dws
//!     the work of one inference, counted from the plan (MACs, scores, ...)
//! int8-profile --blob MODEL.int8.dws --elf FIRMWARE --profile PCPROF --intervals A-B
//!              [--name NAME] [--addr2line TOOL] [--explain OP]...
//!     the per-op table of intervals A..B of a `qemu-plugin/pcprof.c` profile,
//!     and the functions of the "other" row (and of each OP asked for)
//! ```
//!
//! Each PC of the profile is mapped to its inlined call chain with
//! `addr2line -f -i -C` (default `arm-none-eabi-addr2line`) and to an op by
//! the rules of `ops.rs`; the work units come from the blob's plan
//! (`work.rs`), not from the profile. The table lists every op that ran, an
//! "other" row with the functions no rule claims, and exits with an error
//! if its rows do not add up to the instructions the plugin counted.

mod ops;
mod trace;
mod work;

use dws_embedded::dws_core::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use work::{Unit, Work};

#[derive(Default)]
struct Args {
    work_only: bool,
    blob: Option<PathBuf>,
    elf: Option<PathBuf>,
    profile: Option<PathBuf>,
    intervals: Option<(u64, u64)>,
    name: Option<String>,
    addr2line: Option<String>,
    explain: Vec<String>,
}

const USAGE: &str = "usage: int8-profile --work MODEL.int8.dws\n       \
    int8-profile --blob MODEL.int8.dws --elf FIRMWARE --profile PCPROF --intervals A-B \
    [--name NAME] [--addr2line TOOL] [--explain OP]...";

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--work" => {
                a.work_only = true;
                a.blob = Some(value()?.into());
            }
            "--blob" => a.blob = Some(value()?.into()),
            "--elf" => a.elf = Some(value()?.into()),
            "--profile" => a.profile = Some(value()?.into()),
            "--intervals" => {
                let v = value()?;
                let range = v.split_once('-').and_then(|(x, y)| {
                    let (x, y) = (x.parse().ok()?, y.parse().ok()?);
                    (1 <= x && x <= y).then_some((x, y))
                });
                a.intervals = Some(range.ok_or(format!("--intervals {v}: want A-B, 1 <= A <= B"))?);
            }
            "--name" => a.name = Some(value()?),
            "--addr2line" => a.addr2line = Some(value()?),
            "--explain" => a.explain.push(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("int8-profile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let blob_path = a.blob.as_ref().ok_or(USAGE)?;
    let words = read_aligned(blob_path)?;
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words.0)[..words.1];
    let model = Model::new_checked(bytes).map_err(|e| format!("{}: {e}", blob_path.display()))?;
    let work = work::count(&model).map_err(|e| format!("{}: {e}", blob_path.display()))?;
    if a.work_only {
        println!(
            "work per inference of {} (from its plan):",
            blob_path.display()
        );
        for (unit, n) in &work.0 {
            println!("{:>14}  {}", group(*n), unit.name());
        }
        return Ok(());
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| blob_path.display().to_string());
    profile(a, &name, &work)
}

/// Instructions per op, and per function for the ops in `listed`.
type Attribution<'o> = (BTreeMap<&'o str, u64>, BTreeMap<(&'o str, String), u64>);

/// The per-op table of a profile, the functions of "other" and of the ops
/// to explain, and the check that the table holds every instruction.
fn profile(a: &Args, name: &str, work: &Work) -> Result<(), String> {
    let (elf, path, (first, last)) = match (&a.elf, &a.profile, a.intervals) {
        (Some(e), Some(p), Some(i)) => (e, p, i),
        _ => return Err(USAGE.into()),
    };
    let mut listed = vec![ops::OTHER];
    for op in &a.explain {
        let known = ops::OPS.iter().find(|(o, _)| o == op);
        listed.push(
            known
                .ok_or(format!("--explain {op}: not an op of the table"))?
                .0,
        );
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let prof = trace::read_profile(&text, &(first..=last))?;
    prof.check()?;
    let tool = a.addr2line.as_deref().unwrap_or("arm-none-eabi-addr2line");
    let chains = trace::call_chains(tool, elf, prof.counts.keys().copied())?;
    let (per_op, functions) = attribute(&prof, &chains, &listed);

    print_table(name, &prof, &per_op, work, (first, last));
    for op in listed {
        print_functions(op, &functions, prof.intervals);
    }
    let counted: u64 = per_op.values().sum();
    let unclaimed = per_op.get(ops::OTHER).copied().unwrap_or(0);
    if unclaimed * 20 > counted {
        eprintln!(
            "int8-profile: warning: {:.1}% of the instructions are in no op: add rules to ops.rs",
            100.0 * unclaimed as f64 / counted as f64
        );
    }
    println!(
        "\naccounted for: {} of the {} instructions of intervals {first}-{last}",
        group(counted),
        group(prof.interval_total)
    );
    if counted != prof.interval_total {
        return Err(format!(
            "the table's rows add up to {counted} instructions, the intervals to {}",
            prof.interval_total
        ));
    }
    Ok(())
}

/// Each PC's instructions to its op, and to its function when the op is in `listed`.
fn attribute<'o>(
    prof: &trace::Profile,
    chains: &BTreeMap<u64, Vec<String>>,
    listed: &[&'o str],
) -> Attribution<'o> {
    let (mut per_op, mut functions): Attribution<'o> = Default::default();
    for (pc, n) in &prof.counts {
        let chain = chains.get(pc).map_or(&[][..], |c| &c[..]);
        let op = ops::classify(chain);
        *per_op.entry(op).or_default() += n;
        if let Some(op) = listed.iter().find(|l| **l == op) {
            *functions.entry((op, where_in(chain, *pc))).or_default() += n;
        }
    }
    (per_op, functions)
}

/// The functions of `op` with the most instructions.
fn print_functions(op: &str, functions: &BTreeMap<(&str, String), u64>, intervals: u64) {
    let mut top: Vec<_> = functions.iter().filter(|((o, _), _)| *o == op).collect();
    if top.is_empty() {
        return;
    }
    top.sort_by(|x, y| y.1.cmp(x.1).then_with(|| x.0.cmp(y.0)));
    if op == ops::OTHER {
        println!("\n\"{op}\": the functions no rule of ops.rs claims (most instructions first):");
    } else {
        println!("\n\"{op}\": its functions (most instructions first):");
    }
    for ((_, f), n) in top.iter().take(12) {
        let per = (**n as f64 / intervals as f64).round() as u64;
        println!("  {:>12} instructions per inference  {f}", group(per));
    }
}

/// A blob file in 4-byte aligned memory (the core reads its parameters in
/// place), and its length in bytes.
fn read_aligned(path: &Path) -> Result<(Vec<u32>, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    Ok((words, bytes.len()))
}

/// The innermost function of a chain and the function it is inlined into.
fn where_in(chain: &[String], pc: u64) -> String {
    match (chain.first(), chain.last()) {
        (Some(inner), Some(outer)) if chain.len() > 1 => format!(
            "{} (in {})",
            trace::short_name(inner),
            trace::short_name(outer)
        ),
        (Some(f), _) => trace::short_name(f).to_string(),
        _ => format!("{pc:#x} (no debug information)"),
    }
}

fn print_table(
    name: &str,
    prof: &trace::Profile,
    per_op: &BTreeMap<&str, u64>,
    work: &Work,
    (first, last): (u64, u64),
) {
    let n = prof.intervals as f64;
    let total = prof.total();
    println!(
        "per-op profile of {name}: {} instructions per inference (mean of {} inferences, intervals {first}-{last})",
        group((total as f64 / n).round() as u64),
        prof.intervals
    );
    println!();
    println!("| op | M instructions | share | work per inference | instructions per unit |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<(&str, &[Unit], u64)> = ops::OPS
        .iter()
        .map(|(op, units)| (*op, *units, per_op.get(op).copied().unwrap_or(0)))
        .filter(|r| r.2 > 0)
        .collect();
    // Most instructions first; "other" last.
    rows.sort_by_key(|r| (r.0 == ops::OTHER, std::cmp::Reverse(r.2)));
    for (op, units, instr) in rows {
        let per = instr as f64 / n;
        let w: u64 = units.iter().map(|u| work.get(*u)).sum();
        let (units, ratio) = match units.first() {
            Some(u) if w > 0 => (format!("{} {}", group(w), u.label()), ratio(per / w as f64)),
            _ => (String::new(), String::new()),
        };
        println!(
            "| {op} | {:.2} | {:.1}% | {units} | {ratio} |",
            per / 1e6,
            100.0 * instr as f64 / total.max(1) as f64
        );
    }
    println!("| total | {:.2} | 100% | | |", total as f64 / n / 1e6);
}

/// Instructions per unit: a tenth below 100, whole ones above.
fn ratio(r: f64) -> String {
    if r < 100.0 {
        format!("{r:.1}")
    } else {
        group(r.round() as u64)
    }
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
