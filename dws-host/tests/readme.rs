//! The README's `dws` commands run as written: every line of its `sh` blocks that
//! starts with `dws `, in order, from a folder laid out like the repository root (its
//! `examples/` linked in, so the outputs stay out of the checkout), with this
//! build's `dws` first on PATH. (The Python examples of the README and
//! docs/python.md run in the Python package's tests, `tests/test_docs.py`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The lines of `markdown`'s ```` ```sh ```` blocks that start with `dws `.
fn dws_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in markdown.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
        } else if in_sh && t.starts_with("dws ") {
            lines.push(t.to_string());
        }
    }
    lines
}

#[test]
fn readme_dws_commands_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = dws_lines(&readme);
    for cmd in ["convert", "inspect", "eval", "run", "quantize", "bench"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("dws {cmd} "))),
            "the README shows no runnable `dws {cmd}`"
        );
    }
    let dir = std::env::temp_dir().join(format!("dws-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        root.join("examples").canonicalize().unwrap(),
        dir.join("examples"),
    )
    .unwrap();
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_dws"))
        .parent()
        .unwrap()
        .into();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    for line in &lines {
        let start = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(line)
            .current_dir(&dir)
            .env("PATH", &path)
            .env("HOME", &dir)
            .output()
            .unwrap();
        println!("{:6.1} s  {line}", start.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "{line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("--json") {
            let _: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{line}: stdout is not one JSON document: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sh_blocks_are_found() {
    let md =
        "text\n```sh\ndws a b  # c\nbash x\n```\n```text\ndws not\n```\n  ```sh\n  dws d\n  ```\n";
    assert_eq!(dws_lines(md), ["dws a b  # c", "dws d"]);
}
