//! The profile of `qemu-plugin/pcprof.c`, per PC, and each PC's inlined call
//! chain from the firmware's debug information (`addr2line -f -i -C`).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Command, Stdio};

/// Instructions executed per guest PC over some intervals.
#[derive(Debug, Default)]
pub struct Profile {
    /// How often each PC ran.
    pub counts: BTreeMap<u64, u64>,
    /// The instructions the plugin counted in those intervals (the sum of
    /// their `interval K N` lines), to check `counts` against.
    pub interval_total: u64,
    /// How many intervals.
    pub intervals: u64,
}

impl Profile {
    /// Sum of [`Profile::counts`].
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether the counts per PC add up to the instructions of the intervals.
    pub fn check(&self) -> Result<(), String> {
        if self.total() == self.interval_total {
            Ok(())
        } else {
            Err(format!(
                "the profile's blocks add up to {} instructions, its intervals to {}",
                self.total(),
                self.interval_total
            ))
        }
    }
}

/// Reads the plugin's file, keeping the intervals in `keep` (numbered from 1).
pub fn read_profile(text: &str, keep: &RangeInclusive<u64>) -> Result<Profile, String> {
    let mut runs: BTreeMap<u64, u64> = BTreeMap::new(); // block -> runs in `keep`
    let mut blocks: BTreeMap<u64, Vec<u64>> = BTreeMap::new(); // block -> its PCs
    let mut p = Profile::default();
    let mut kept = false;
    let mut seen = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || format!("profile line {}: cannot read `{line}`", i + 1);
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("interval") => {
                let k: u64 = num(f.next()).ok_or_else(bad)?;
                let n: u64 = num(f.next()).ok_or_else(bad)?;
                seen.push(k);
                kept = keep.contains(&k);
                if kept {
                    p.interval_total += n;
                    p.intervals += 1;
                }
            }
            Some("block") => {
                let id = num(f.next()).ok_or_else(bad)?;
                let pcs = f
                    .map(|a| hex(a).ok_or_else(bad))
                    .collect::<Result<_, _>>()?;
                blocks.insert(id, pcs);
            }
            Some(id) => {
                let id = num(Some(id)).ok_or_else(bad)?;
                let n: u64 = num(f.next()).ok_or_else(bad)?;
                if kept {
                    *runs.entry(id).or_default() += n;
                }
            }
            None => {}
        }
    }
    let want = keep.end() - keep.start() + 1;
    if p.intervals != want {
        return Err(format!(
            "the profile has intervals {seen:?}; intervals {}-{} were asked for",
            keep.start(),
            keep.end()
        ));
    }
    for (id, n) in runs {
        let pcs = blocks
            .get(&id)
            .ok_or_else(|| format!("the profile lists no instructions for block {id}"))?;
        for pc in pcs {
            *p.counts.entry(*pc).or_default() += n;
        }
    }
    Ok(p)
}

fn num(s: Option<&str>) -> Option<u64> {
    s?.parse().ok()
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// The inlined call chain of each PC, innermost function first (the last is
/// the function the code lies in), demangled.
pub fn call_chains(
    addr2line: &str,
    elf: &Path,
    pcs: impl Iterator<Item = u64>,
) -> Result<BTreeMap<u64, Vec<String>>, String> {
    let mut child = Command::new(addr2line)
        .args(["-f", "-i", "-C", "-a", "-e"])
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {addr2line}: {e}"))?;
    let input: String = pcs.map(|pc| format!("{pc:#x}\n")).collect();
    // Written from another thread: addr2line answers while it reads.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {addr2line}: {e}"))?;
    writer
        .join()
        .expect("writer thread")
        .map_err(|e| format!("writing to {addr2line}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{addr2line} failed ({})", out.status));
    }
    parse_chains(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `addr2line -f -i -a` output: an address line, then a function line
/// and a location line per frame.
fn parse_chains(text: &str) -> Result<BTreeMap<u64, Vec<String>>, String> {
    let mut chains = BTreeMap::new();
    let mut lines = text.lines();
    let mut cur: Option<(u64, Vec<String>)> = None;
    while let Some(line) = lines.next() {
        if let Some(pc) = hex(line) {
            chains.extend(cur.take());
            cur = Some((pc, Vec::new()));
            continue;
        }
        let (_, frames) = cur
            .as_mut()
            .ok_or_else(|| format!("addr2line output starts with `{line}`"))?;
        frames.push(line.to_string());
        lines.next(); // file:line
    }
    chains.extend(cur);
    Ok(chains)
}

/// A function name without the hash suffix of a symbol (`::h0123..`).
pub fn short_name(name: &str) -> &str {
    let name = name.trim();
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_sums_the_kept_intervals_per_pc() {
        let text = "interval 1 5\n0 1\n1 1\ninterval 2 7\n0 2\n1 1\n\
                    interval 3 100\n1 50\nblock 0 0x10 0x12\nblock 1 0x12 0x14 0x16\n";
        let p = read_profile(text, &(1..=2)).unwrap();
        assert_eq!(p.interval_total, 12);
        assert_eq!(p.intervals, 2);
        assert_eq!(p.total(), 12);
        assert_eq!(p.counts[&0x10], 3);
        assert_eq!(p.counts[&0x12], 3 + 2);
        assert_eq!(p.counts[&0x16], 2);
        p.check().unwrap();
        // A block missing from an interval (or a wrong length) shows.
        let short = text.replace("0 2\n1 1\n", "0 2\n");
        assert!(read_profile(&short, &(1..=2)).unwrap().check().is_err());
        assert!(read_profile(text, &(2..=4))
            .unwrap_err()
            .contains("[1, 2, 3]"));
        assert!(read_profile("interval 1 x\n", &(1..=1)).is_err());
        assert!(read_profile("interval 1 3\n5 1\n", &(1..=1))
            .unwrap_err()
            .contains("block 5"));
    }

    #[test]
    fn chains_are_read_innermost_first() {
        let text = "0x08000010\ninner\na.rs:1\nouter\nb.rs:2\n0x08000012\nouter\nb.rs:3\n";
        let c = parse_chains(text).unwrap();
        assert_eq!(c[&0x0800_0010], ["inner", "outer"]);
        assert_eq!(c[&0x0800_0012], ["outer"]);
    }

    #[test]
    fn short_names_drop_the_symbol_hash() {
        assert_eq!(
            short_name("core::fmt::write::h0123456789abcdef"),
            "core::fmt::write"
        );
        assert_eq!(
            short_name("dws_core::int8::exec::head"),
            "dws_core::int8::exec::head"
        );
    }
}
