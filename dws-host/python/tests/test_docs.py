"""The Python examples of README.md and docs/python.md, run as written from a folder
laid out like the repository root (its `examples/` linked in, so what they write stays
out of the checkout). README's Ray example runs in test_ray.py, on its cluster."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def python_blocks(markdown):
    """The ```python blocks of a Markdown file, in order."""
    text = (ROOT / markdown).read_text()
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def run_in_root_layout(code, folder, monkeypatch, capsys):
    """Runs `code` in `folder` (with `examples/` linked in); returns what it printed."""
    (folder / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(folder)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
    return capsys.readouterr().out


@pytest.mark.parametrize("markdown", ["README.md", "docs/python.md"])
def test_first_python_example_runs_as_written(markdown, tmp_path, monkeypatch, capsys):
    code = python_blocks(markdown)[0]
    assert "examples/digits/" in code
    out = run_in_root_layout(code, tmp_path, monkeypatch, capsys)
    # The shipped digits model's test accuracy: 241 of 360.
    assert float(out) == pytest.approx(241 / 360)
    assert (tmp_path / "digits.dws").exists()
