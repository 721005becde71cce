"""Every fenced code block in README.md and docs/ is either executed or checked, so a doc that drifts fails.

The convention (each opening fence names its kind; a bare fence is an error):
- ```python           executed: a page's python blocks run in order in one namespace, from the repository root.
- ```python no-run    intentionally not runnable (an excerpt); must still parse as Python.
- ```bash / ```sh     shell commands. `python examples/<x>.py --flag ...` must name an existing script and flags
                      that script's parser accepts; `python benchmarks/<x>.py` an existing file; `make <t>` a
                      Makefile target.
- ```text             not code (layouts, output); not checked.
Pages whose python blocks a dedicated test executes with stronger checks (learning outcomes) are listed in
TESTED_ELSEWHERE; the named test must really read that page.
"""
from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
KINDS = {"python", "python no-run", "bash", "sh", "text"}
TESTED_ELSEWHERE = {"docs/torchrl_composability.md": "tests/trainers/test_composability.py",
                    "README.md": "tests/test_readme.py", "docs/own_env.md": "tests/test_own_env.py"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    """[(info string, code)] of every fenced block of a page."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(page.read_text())]


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_fence_convention_parses_known_cases():
    text = "a\n```python\nx = 1\n```\n```python no-run\nf(a, *, b)\n```\n```bash\nmake demo\n```\n```\nbare\n```\n"
    page = ROOT / "tests" / "_fence_case.md"
    try:
        page.write_text(text)
        assert blocks(page) == [("python", "x = 1\n"), ("python no-run", "f(a, *, b)\n"), ("bash", "make demo\n"),
                                ("", "bare\n")]
    finally:
        page.unlink()


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_block_declares_a_known_kind(page):
    bad = [info for info, _ in blocks(page) if info not in KINDS]
    assert not bad, f"{_rel(page)}: code blocks must open with one of {sorted(KINDS)}, found {bad}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_python_excerpts_parse(page):
    for info, code in blocks(page):
        if info.startswith("python"):
            ast.parse(code, filename=_rel(page))


def _script_flags(script: Path) -> set[str]:
    """Every option string the example's parser accepts (its `--help`, run in-process)."""
    import contextlib
    import io

    from tests.examples.test_examples_smoke import load_module

    mod = load_module(script, f"doc_example_{script.stem}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        mod.main(["--help"])
    return set(re.findall(r"--[A-Za-z0-9_-]+", buf.getvalue()))


def _shell_commands(code: str) -> list[list[str]]:
    joined = re.sub(r"\\\n", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line.replace("<", "'<").replace(">", ">'")))
    return out


_FLAGS: dict[Path, set[str]] = {}


def shell_problems(page: Path) -> list[str]:
    """What is wrong with the shell blocks of a page (unknown script, flag or make target)."""
    problems = []
    targets = set(re.findall(r"^([A-Za-z0-9_-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for info, code in blocks(page):
        if info not in ("bash", "sh"):
            continue
        for words in _shell_commands(code):
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # leading VAR=value assignments
                words = words[1:]
            if not words:
                continue
            if words[0] == "make" and words[1] not in targets:
                problems.append(f"no Makefile target {words[1]!r}")
            elif words[0] == "python" and words[1].endswith(".py"):
                script = ROOT / words[1]
                if not script.exists():
                    problems.append(f"{words[1]} does not exist")
                elif words[1].startswith("examples/"):
                    if script not in _FLAGS:
                        _FLAGS[script] = _script_flags(script)
                    unknown = {w.split("=")[0] for w in words[2:] if w.startswith("--")} - _FLAGS[script]
                    if unknown:
                        problems.append(f"{words[1]} has no flags {sorted(unknown)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_shell_blocks_name_real_scripts_flags_and_targets(page):
    assert not shell_problems(page), f"{_rel(page)}: {shell_problems(page)}"


def test_shell_check_catches_drift(tmp_path):
    page = tmp_path / "drift.md"
    page.write_text("```bash\nmake no_such_target\npython examples/04_tmaze.py --horizon 3 --no_such_flag 1 \\\n"
                    "    --epochs 2\npython examples/99_missing.py\nTORCHRL_AMAGO_PLUGINS=x python examples/04_tmaze.py "
                    "--traj_encoder running_mean\n```\n")
    assert shell_problems(page) == ["no Makefile target 'no_such_target'",
                                    "examples/04_tmaze.py has no flags ['--no_such_flag']",
                                    "examples/99_missing.py does not exist"]


def test_pages_tested_elsewhere_are_read_by_their_test():
    for page, test in TESTED_ELSEWHERE.items():
        assert (ROOT / page).exists() and Path(page).name in (ROOT / test).read_text(), (page, test)


RUN = [p for p in PAGES if _rel(p) not in TESTED_ELSEWHERE and any(i == "python" for i, _ in blocks(p))]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("page", RUN, ids=_rel)
def test_python_blocks_run(page, monkeypatch, tmp_path):
    import torch

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # a recipe may run an example through sys.argv
    torch.manual_seed(0)
    ns: dict = {"__name__": f"doc_{page.stem}"}
    for i, (info, code) in enumerate(blocks(page)):
        if info == "python":
            exec(compile(code, f"{_rel(page)} (block {i})", "exec"), ns)
