//! Build-time sizing: picks the reference cases the chip carries and sizes the
//! static arena from their blobs, so the firmware never guesses.
//!
//! Every `tests/fixtures/<name>/` offers up to three cases: f32 (`model.dws`
//! with `case.bin`, checked with the suite's tolerance), int8
//! (`model.int8.dws` with `case_int8.bin`) and 16x8 (`model.16x8.dws` with
//! `case_16x8.bin`), both checked bit for bit. Each blob is opened with
//! `dws_core::Model::new_checked` (through `dws_embedded::build`). The
//! benchmark case (`DWS_BENCH`, default `paper_default`, int8) is always
//! carried, then the smallest f32 case and the [`MIN_16X8`] smallest 16x8
//! cases; the others are taken smallest first while the chip keeps
//! [`HEADROOM_PERCENT`] of its flash and RAM free:
//!
//! * flash: code ([`CODE_RESERVE`], or `DWS_CODE_RESERVE`) + blobs + cases
//!   <= 85% of the FLASH region of memory.x;
//! * RAM: the arena + other statics ([`STATIC_RESERVE`]) + the stack
//!   (`_stack_reserve` in memory.x) <= 85% of the RAM region, and below the
//!   stack top (`_stack_start` in memory.x: 128 KiB up, the contiguous SRAM of
//!   a real STM32F405). The link checks that the statics leave the stack its
//!   reserve; the firmware measures the stack's high-water mark.
//!
//! Outputs in `OUT_DIR`: `memory.x` (a copy, for cortex-m-rt's `link.x`) and
//! `fixtures.rs` (`INPUT_LEN`, `SCRATCH_LEN`, `OUTPUT_LEN`, the embedded blobs,
//! 16-byte aligned, and cases, the benchmark index, the stack figures and the
//! cases left out).

use dws_embedded::build::blob_sizes;
use dws_embedded::Sizes;
use std::path::{Path, PathBuf};

/// Flash kept for code and constants (about 93 KiB with dws-core at
/// opt-level 3, the rest at "s"); `DWS_CODE_RESERVE` overrides it (run-qemu.sh
/// raises it if the image ends up above the flash budget).
const CODE_RESERVE: u64 = 96 * 1024;
/// RAM kept for statics other than the arena (defmt, counters).
const STATIC_RESERVE: u64 = 1024;
/// The part of the chip kept free, percent of flash and of RAM.
const HEADROOM_PERCENT: u64 = 15;
/// 16x8 cases carried before the others (after the benchmark), smallest first.
const MIN_16X8: usize = 2;

/// The precisions of a fixture's cases: name, blob and case file.
const KINDS: [(&str, &str, &str); 3] = [
    ("f32", "model.dws", "case.bin"),
    ("int8", "model.int8.dws", "case_int8.bin"),
    ("16x8", "model.16x8.dws", "case_16x8.bin"),
];

struct Candidate {
    /// `<fixture>`, `<fixture>.int8` or `<fixture>.16x8`.
    name: String,
    fixture: String,
    /// `f32`, `int8` or `16x8`.
    kind: &'static str,
    blob: PathBuf,
    case: PathBuf,
    sizes: Sizes,
    blob_len: u64,
    case_len: u64,
}

impl Candidate {
    fn flash(&self) -> u64 {
        self.blob_len.next_multiple_of(16) + self.case_len
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={name}");
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number of bytes")),
        Err(_) => default,
    }
}

/// A linker-script size at the start of `s`: `<n>`, `<n>K` or `<n>M`.
fn size(s: &str) -> u64 {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("memory.x: not a size: {s}"));
    match unit.trim().chars().next() {
        Some('K') => n * 1024,
        Some('M') => n * 1024 * 1024,
        _ => n,
    }
}

/// `LENGTH = <n>K` of the memory region `name` in memory.x, in bytes.
fn region_len(memory_x: &str, name: &str) -> u64 {
    let line = memory_x
        .lines()
        .find(|l| l.trim_start().starts_with(name) && l.contains("LENGTH"))
        .unwrap_or_else(|| panic!("memory.x has no {name} region"));
    size(
        line.split("LENGTH")
            .nth(1)
            .unwrap()
            .trim_start_matches([' ', '=']),
    )
}

/// The right-hand side of `symbol = ...;` in memory.x.
fn assignment<'m>(memory_x: &'m str, symbol: &str) -> &'m str {
    memory_x
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix(symbol)?
                .trim_start()
                .strip_prefix('=')
        })
        .and_then(|rhs| rhs.split(';').next())
        .unwrap_or_else(|| panic!("memory.x does not set {symbol}"))
}

/// `ORIGIN = 0x..` of the memory region `name` in memory.x.
fn region_origin(memory_x: &str, name: &str) -> u64 {
    let line = memory_x
        .lines()
        .find(|l| l.trim_start().starts_with(name) && l.contains("ORIGIN"))
        .unwrap_or_else(|| panic!("memory.x has no {name} region"));
    let hex = line.split("0x").nth(1).expect("memory.x: ORIGIN in hex");
    let hex: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    // The budgets memory.x sets.
    let memory_x = std::fs::read_to_string(manifest.join("memory.x")).unwrap();
    println!("cargo:rerun-if-changed=memory.x");
    let (flash_len, ram_len) = (region_len(&memory_x, "FLASH"), region_len(&memory_x, "RAM"));
    let ram_origin = region_origin(&memory_x, "RAM");
    // `_stack_start = ORIGIN(RAM) + <n>;`
    let stack_top = size(
        assignment(&memory_x, "_stack_start")
            .split('+')
            .nth(1)
            .expect("memory.x: _stack_start = ORIGIN(RAM) + <size>;"),
    );
    let stack_reserve = size(assignment(&memory_x, "_stack_reserve"));
    assert!(stack_top <= ram_len, "memory.x: _stack_start beyond RAM");
    let flash_limit = flash_len * (100 - HEADROOM_PERCENT) / 100;
    let ram_limit = (ram_len * (100 - HEADROOM_PERCENT) / 100).min(stack_top);

    // memory.x for cortex-m-rt's link.x (the linker finds it in this folder
    // too, as the current directory; the copy keeps the two identical).
    std::fs::write(out.join("memory.x"), &memory_x).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    println!("cargo:rerun-if-env-changed=DWS_FIXTURES");
    let fixtures = std::env::var_os("DWS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../tests/fixtures"));
    println!("cargo:rerun-if-changed={}", fixtures.display());
    println!("cargo:rerun-if-env-changed=DWS_BENCH");
    let bench_fixture = std::env::var("DWS_BENCH").unwrap_or_else(|_| "paper_default".into());
    let bench_name = format!("{bench_fixture}.int8");

    let mut candidates = Vec::new();
    let entries = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("listing fixtures {}: {e}", fixtures.display()));
    for entry in entries {
        let dir = entry.unwrap().path();
        let fixture = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (kind, blob, case) in KINDS {
            let (blob, case) = (dir.join(blob), dir.join(case));
            if !blob.is_file() || !case.is_file() {
                continue;
            }
            println!("cargo:rerun-if-changed={}", blob.display());
            println!("cargo:rerun-if-changed={}", case.display());
            let sizes = blob_sizes(&blob).unwrap_or_else(|e| panic!("invalid fixture blob: {e}"));
            candidates.push(Candidate {
                name: match kind {
                    "f32" => fixture.clone(),
                    _ => format!("{fixture}.{kind}"),
                },
                fixture: fixture.clone(),
                kind,
                sizes,
                blob_len: len(&blob),
                case_len: len(&case),
                blob,
                case,
            });
        }
    }

    // The benchmark first, then the smallest f32 case and the smallest 16x8
    // cases, then smallest first: as many cases as the budgets allow.
    candidates.sort_by(|a, b| (a.flash(), &a.name).cmp(&(b.flash(), &b.name)));
    let smallest = |kind: &str, n: usize| -> Vec<String> {
        candidates
            .iter()
            .filter(|c| c.kind == kind && c.name != bench_name)
            .take(n)
            .map(|c| c.name.clone())
            .collect()
    };
    let first: Vec<String> = [smallest("f32", 1), smallest("16x8", MIN_16X8)].concat();
    candidates.sort_by_key(|c| {
        (
            c.name != bench_name,
            !first.contains(&c.name),
            c.flash(),
        )
    });
    assert!(
        candidates.first().is_some_and(|c| c.name == bench_name),
        "the benchmark case {bench_name} (DWS_BENCH) is not in {}",
        fixtures.display()
    );
    let code_reserve = env_u64("DWS_CODE_RESERVE", CODE_RESERVE);
    let flash_budget = flash_limit.saturating_sub(code_reserve);
    let ram_budget = ram_limit.saturating_sub(stack_reserve + STATIC_RESERVE);
    let (mut carried, mut skipped) = (Vec::new(), Vec::new());
    let (mut flash, mut arena) = (0u64, Sizes::default());
    for c in candidates {
        let with = arena.max(c.sizes);
        if flash + c.flash() <= flash_budget && with.ram_bytes() as u64 <= ram_budget {
            flash += c.flash();
            arena = with;
            carried.push(c);
        } else {
            assert!(
                c.name != bench_name,
                "the benchmark case {bench_name} does not fit: {} bytes of flash (budget {flash_budget} \
                 after DWS_CODE_RESERVE={code_reserve}), {} bytes of RAM (budget {ram_budget})",
                c.flash(),
                c.sizes.ram_bytes()
            );
            skipped.push(c.name);
        }
    }
    let order = |k: &str| KINDS.iter().position(|(n, _, _)| *n == k);
    carried.sort_by(|a, b| (&a.fixture, order(a.kind)).cmp(&(&b.fixture, order(b.kind))));
    skipped.sort();
    let bench = carried.iter().position(|c| c.name == bench_name).unwrap();

    let mut src = String::new();
    let w = &mut src;
    let sizes = |s: &Sizes| {
        format!(
            "Sizes {{ input_len: {}, scratch_len: {}, output_len: {} }}",
            s.input_len, s.scratch_len, s.output_len
        )
    };
    let mut line = |l: String| {
        w.push_str(&l);
        w.push('\n');
    };
    line(format!(
        "// Generated by build.rs from {}.",
        fixtures.display()
    ));
    line("/// Arena sizes: the largest need of the carried models.".into());
    let mut consts = String::new();
    arena.write_consts(&mut consts, "").unwrap();
    line(consts.trim_end().into());
    line("/// Flash taken by the embedded blobs and cases, bytes.".into());
    line(format!("pub const FIXTURE_FLASH: usize = {flash};"));
    line("/// Index in `FIXTURES` of the benchmarked case.".into());
    line(format!("pub const BENCH: usize = {bench};"));
    line("/// Address just above the stack (`_stack_start`).".into());
    line(format!(
        "pub const STACK_TOP: usize = {:#x};",
        ram_origin + stack_top
    ));
    line("/// Bytes of stack the link guarantees.".into());
    line(format!("pub const STACK_RESERVE: usize = {stack_reserve};"));
    line("/// Cases that do not fit the chip.".into());
    line(format!("pub const SKIPPED: &[&str] = &{skipped:?};"));
    for (i, c) in carried.iter().enumerate() {
        line(format!(
            "static BLOB_{i}: Aligned<[u8; {}]> = Aligned(*include_bytes!({}));",
            c.blob_len,
            path_literal(&c.blob)
        ));
    }
    line("/// The carried cases, by fixture name (f32, int8, 16x8).".into());
    line(format!(
        "pub static FIXTURES: [Fixture; {}] = [",
        carried.len()
    ));
    for (i, c) in carried.iter().enumerate() {
        line(format!(
            "    Fixture {{ name: {:?}, kind: {:?}, blob: &BLOB_{i}.0, case: include_bytes!({}), sizes: {} }},",
            c.fixture,
            c.kind,
            path_literal(&c.case),
            sizes(&c.sizes)
        ));
    }
    line("];".into());
    std::fs::write(out.join("fixtures.rs"), src).unwrap();
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// A string literal naming `p` (absolute, escaped).
fn path_literal(p: &Path) -> String {
    let abs = std::fs::canonicalize(p).unwrap();
    format!("{:?}", abs.to_str().expect("fixture paths must be UTF-8"))
}
