"""User docs (README.md and docs/**.md) stay navigable and free of development history: every relative link and
image resolves (to a file, and to a heading when it names an anchor), no page says "session", the README stays short
and every row of its examples table links a figure that exists. CHANGELOG.md is where history goes; it is not a
user doc here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 150  # issue 31: a README a newcomer reads in five minutes
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.I)


PATH_TOKEN = re.compile(r"[\w./{}*,<>\[\]-]+\.(csv|jsonl|md|png|py)")
REPO_DIRS = ("docs", "examples", "benchmarks", "tests", "torchrl_amago")
PACKAGE_DIRS = ("envs", "modules", "objectives", "data", "trainers")
#: files a run writes (named in docs as outputs, not as files of the repository)
RUNTIME = {"metrics.csv", "learning_curve.png", "my_encoders.py"}


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """The text without fenced blocks and inline code (links there are examples, not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = re.sub(r"[`*_~]", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text, flags=re.U)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def link_problems(page: Path) -> list[str]:
    """What is broken among the relative links and images of one page."""
    problems = []
    text = prose(page.read_text())
    for target in LINK.findall(text) + HTML_SRC.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: {dest.name} has no heading with anchor #{anchor}")
    return problems


def expand(pattern: str) -> list[str]:
    """Glob patterns of a documented path: `{a,b}` alternatives, `[a,b]` optional alternatives, `<name>` = any."""
    pattern = re.sub(r"<[^>]*>", "*", pattern)
    m = re.search(r"\{([^{}]*)\}|\[([^\[\]]*)\]", pattern)
    if not m:
        return [pattern]
    options = m.group(1).split(",") if m.group(1) is not None else ["", *m.group(2).split(",")]
    return [x for o in options for x in expand(pattern[:m.start()] + o + pattern[m.end():])]


def _exists(patterns: list[str], bases: list[Path], recursive: bool) -> bool:
    for base in bases:
        for pat in patterns:
            if any(base.rglob(pat) if recursive else base.glob(pat)):
                return True
    return False


def path_problems(page: Path) -> list[str]:
    """Repository files named in inline code (`docs/results/x.csv`, `tmaze.csv`, `benchmarks/x.py`) that do not
    exist. A bare CSV / JSONL / PNG name is looked up under docs/results, a bare script under the code folders."""
    problems = []
    for token in re.findall(r"`([^`\n]+)`", FENCE.sub("", page.read_text())):
        token = token.strip()
        if not PATH_TOKEN.fullmatch(token) or token.startswith(("_", "<", "logs/", "ckpts/", "runs/")) \
                or token in RUNTIME:
            continue
        pats = expand(token)
        if "/" in token:
            head = token.split("/", 1)[0]
            base = ROOT if head in REPO_DIRS else ROOT / "torchrl_amago" if head in PACKAGE_DIRS else page.parent
            ok = _exists(pats, [base], recursive=False)
        elif token.endswith(".py"):
            ok = _exists(pats, [ROOT / d for d in REPO_DIRS[1:]], recursive=True)
        elif token.endswith(".md"):
            ok = _exists(pats, [page.parent], recursive=False) or _exists(pats, [ROOT / "docs"], recursive=True)
        else:
            ok = _exists(pats, [page.parent, ROOT / "docs" / "results"], recursive=True)
        if not ok:
            problems.append(token)
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_files_named_in_code_spans_exist(page):
    assert not path_problems(page), f"{_rel(page)} names files that do not exist: {path_problems(page)}"


def test_path_check_expands_patterns_and_finds_stale_names(tmp_path):
    assert expand("a_seed{0,1}[_x,_y].csv") == ["a_seed0.csv", "a_seed0_x.csv", "a_seed0_y.csv", "a_seed1.csv",
                                               "a_seed1_x.csv", "a_seed1_y.csv"]
    assert expand("t_<task>_seed<s>.csv") == ["t_*_seed*.csv"]
    page = ROOT / "docs" / "results" / "_path_case.md"
    try:
        page.write_text("`04_tmaze100_seed{0,1}.csv` `docs/results/04_tmaze10_seed*.csv` `examples/04_tmaze.py`\n"
                        "`metrics.csv` `no_such_run.csv` `docs/results/gone.csv` `benchmarks/gone.py` `gone.md`\n")
        assert path_problems(page) == ["no_such_run.csv", "docs/results/gone.csv", "benchmarks/gone.py", "gone.md"]
    finally:
        page.unlink()


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_and_images_resolve(page):
    assert not link_problems(page), f"{_rel(page)}: {link_problems(page)}"


def test_link_check_catches_missing_files_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# A title\n## Same\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-title) [dup](other.md#same-1) ![img](missing.png) [bad](other.md#nope)\n"
                    "[web](https://example.org/x) `[in code](nowhere.md)` [self](#local)\n# Local\n"
                    "```text\n[in a block](nowhere.md)\n```\n")
    assert link_problems(page) == ["missing.png: no such file", "other.md#nope: other.md has no heading with anchor #nope"]


def test_slugs_follow_github():
    assert slug("Checkpoints and resume") == "checkpoints-and-resume"
    assert slug("Many nodes (Ray)") == "many-nodes-ray"
    assert slug("`AMAGOLoss` — a TorchRL `LossModule`") == "amagoloss--a-torchrl-lossmodule"
    assert slug("On a GPU: one H100, T = 128") == "on-a-gpu-one-h100-t--128"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_user_doc_mentions_sessions(page):
    hits = [f"{_rel(page)}:{i}: {line.strip()[:80]}" for i, line in enumerate(page.read_text().splitlines(), 1)
            if re.search("session", line, re.I)]
    assert not hits, "development history belongs in CHANGELOG.md or git, not in user docs:\n" + "\n".join(hits)


def test_no_doc_file_name_mentions_sessions():
    named = [p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*") if "session" in p.name.lower()]
    assert not named, named


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


def example_rows(readme: str) -> list[str]:
    """The body rows of the first table under the README's "## Examples" heading."""
    section = readme.split("\n## Examples", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [r for r in rows[2:]]  # header and separator first


def test_every_example_row_links_a_figure_that_exists():
    rows = example_rows((ROOT / "README.md").read_text())
    assert len(rows) >= 10, "the README's examples table lost its rows"
    for row in rows:
        pngs = re.findall(r"\]\(([^)]+\.png)\)", row)
        assert pngs, f"README examples row without a figure link: {row[:100]}"
        for png in pngs:
            assert (ROOT / png).exists(), f"{png} (README examples row) does not exist"
