//! Build-time sizing: picks the reference fixtures that fit the chip and sizes
//! the static arena from their blobs, so the firmware never guesses.
//!
//! Every `tests/fixtures/<name>/` with a `model.dws` and a `case.bin` is opened
//! with `dws_core::Model::new_checked` (through `dws_embedded::build`); the
//! fixtures are taken smallest first while they fit the flash and RAM budgets
//! below. `OUT_DIR/fixtures.rs` then holds `INPUT_LEN`, `SCRATCH_LEN` and
//! `OUTPUT_LEN` (the largest need over the carried models, which the `Arena`
//! type uses), the embedded blobs (16-byte aligned) and cases, and the names of
//! the fixtures left out.

use dws_embedded::build::blob_sizes;
use dws_embedded::Sizes;
use std::path::{Path, PathBuf};

/// Flash kept for code and constants (code and constants take about 74 KiB
/// today, with opt-level "s", and the fixtures leave some slack);
/// `DWS_CODE_RESERVE` overrides it (run-qemu.sh raises it if the link overflows).
const CODE_RESERVE: u64 = 72 * 1024;
/// RAM kept for the stack and other statics.
const RAM_RESERVE: u64 = 32 * 1024;

struct Candidate {
    name: String,
    dir: PathBuf,
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

/// `LENGTH = <n>K` of the memory region `name` in memory.x, in bytes.
fn region_len(memory_x: &str, name: &str) -> u64 {
    let line = memory_x
        .lines()
        .find(|l| l.trim_start().starts_with(name) && l.contains("LENGTH"))
        .unwrap_or_else(|| panic!("memory.x has no {name} region"));
    let len = line.split("LENGTH").nth(1).unwrap();
    let len = len.trim_start_matches([' ', '=']).trim();
    let (digits, unit) = len.split_at(len.find(|c: char| !c.is_ascii_digit()).unwrap_or(len.len()));
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("memory.x: {line}"));
    match unit.trim().chars().next() {
        Some('K') => n * 1024,
        Some('M') => n * 1024 * 1024,
        _ => n,
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    // memory.x for cortex-m-rt's link.x, and the budgets it sets.
    let memory_x = std::fs::read_to_string(manifest.join("memory.x")).unwrap();
    std::fs::write(out.join("memory.x"), &memory_x).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    let (flash_len, ram_len) = (region_len(&memory_x, "FLASH"), region_len(&memory_x, "RAM"));

    println!("cargo:rerun-if-env-changed=DWS_FIXTURES");
    let fixtures = std::env::var_os("DWS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../tests/fixtures"));
    println!("cargo:rerun-if-changed={}", fixtures.display());

    let mut candidates = Vec::new();
    let entries = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("listing fixtures {}: {e}", fixtures.display()));
    for entry in entries {
        let dir = entry.unwrap().path();
        let (blob, case) = (dir.join("model.dws"), dir.join("case.bin"));
        if !blob.is_file() || !case.is_file() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", blob.display());
        println!("cargo:rerun-if-changed={}", case.display());
        let sizes = blob_sizes(&blob).unwrap_or_else(|e| panic!("invalid fixture blob: {e}"));
        candidates.push(Candidate {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            sizes,
            blob_len: len(&blob),
            case_len: len(&case),
            dir,
        });
    }

    // Smallest first: as many cases as the budgets allow.
    candidates.sort_by(|a, b| (a.flash(), &a.name).cmp(&(b.flash(), &b.name)));
    let flash_budget = flash_len.saturating_sub(env_u64("DWS_CODE_RESERVE", CODE_RESERVE));
    let ram_budget = ram_len.saturating_sub(RAM_RESERVE);
    let (mut carried, mut skipped) = (Vec::new(), Vec::new());
    let (mut flash, mut arena) = (0u64, Sizes::default());
    for c in candidates {
        let with = arena.max(c.sizes);
        if flash + c.flash() <= flash_budget && with.ram_bytes() as u64 <= ram_budget {
            flash += c.flash();
            arena = with;
            carried.push(c);
        } else {
            skipped.push(c.name);
        }
    }
    assert!(!carried.is_empty(), "no fixture fits the chip");
    carried.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort();
    // The largest carried model (by blob size) is the one the benchmark marks.
    let bench = (0..carried.len())
        .max_by_key(|&i| carried[i].blob_len)
        .unwrap();

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
    line("/// Index in `FIXTURES` of the largest carried model.".into());
    line(format!("pub const BENCH: usize = {bench};"));
    line("/// Fixtures that do not fit the chip.".into());
    line(format!("pub const SKIPPED: &[&str] = &{skipped:?};"));
    for (i, c) in carried.iter().enumerate() {
        line(format!(
            "static BLOB_{i}: Aligned<[u8; {}]> = Aligned(*include_bytes!({}));",
            c.blob_len,
            path_literal(&c.dir.join("model.dws"))
        ));
    }
    line("/// The carried fixtures, by name.".into());
    line(format!(
        "pub static FIXTURES: [Fixture; {}] = [",
        carried.len()
    ));
    for (i, c) in carried.iter().enumerate() {
        line(format!(
            "    Fixture {{ name: {:?}, blob: &BLOB_{i}.0, case: include_bytes!({}), sizes: {} }},",
            c.name,
            path_literal(&c.dir.join("case.bin")),
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
