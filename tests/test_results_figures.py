"""docs/results: every figure of make_figures.py's table has its CSVs and its committed PNG, the script redraws PNGs
from CSVs, the seed band is the mean / min / max over seeds, and every file under docs/results is the target of a
link from a page (README.md or docs/**.md), so a reader can reach each one."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.test_doc_links import HTML_SRC, LINK, PAGES, prose

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _load():
    spec = importlib.util.spec_from_file_location("make_figures", RESULTS / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


MF = _load()


@pytest.mark.parametrize("fig", MF.FIGURES, ids=lambda f: f.png)
def test_each_figure_has_csvs_and_a_committed_png(fig):
    groups = MF.group_files(fig)
    assert sum(len(paths) for panel in groups.values() for paths in panel.values()) >= 1
    for panel in groups.values():
        for paths in panel.values():
            for p in paths:
                header = MF.read_csv(p)[0].keys()
                missing = [y for y in fig.y if y not in header]
                assert not missing, f"{Path(p).name} has no column {missing} (figure {fig.png})"
    assert (RESULTS / "figures" / f"{fig.png}.png").exists(), \
        f"docs/results/figures/{fig.png}.png is missing: run python docs/results/make_figures.py --only {fig.png}"


def test_figure_names_are_unique():
    names = [f.png for f in MF.FIGURES]
    assert len(names) == len(set(names))


def test_make_figures_draws_pngs_from_the_csvs(tmp_path):
    from matplotlib.image import imread

    written = MF.main(["--only", "04_tmaze10", "13_mazerunner_relabeling", "03_popgym_campaign", "--out",
                       str(tmp_path)])
    assert sorted(Path(p).name for p in written) == ["03_popgym_campaign.png", "04_tmaze10.png",
                                                     "13_mazerunner_relabeling.png"]
    for p in written:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(p)
        assert img.shape[1] == 800 and img[..., :3].std() > 0.05  # 10 in at 80 dpi; not a blank canvas
    assert imread(tmp_path / "03_popgym_campaign.png").shape[0] > 4 * imread(tmp_path / "04_tmaze10.png").shape[0]


def test_unknown_figure_is_refused():
    with pytest.raises(SystemExit):
        MF.main(["--only", "no_such_figure"])


def test_band_is_mean_min_max_over_seeds():
    x, mean, lo, hi = MF.band([([0.0, 10.0], [0.0, 1.0]), ([0.0, 5.0, 10.0], [1.0, 1.0, 1.0])], points=3)
    assert list(x) == [0.0, 5.0, 10.0]
    assert list(mean) == [0.5, 0.75, 1.0] and list(lo) == [0.0, 0.5, 1.0] and list(hi) == [1.0, 1.0, 1.0]
    one = MF.band([([1.0, 2.0], [3.0, 4.0])])
    assert [list(a) for a in one] == [[1.0, 2.0], [3.0, 4.0], [3.0, 4.0], [3.0, 4.0]]


def test_series_separates_the_final_eval():
    rows = [{"epoch": "0", "env_steps": "10", "eval/return": "1"}, {"epoch": "1", "env_steps": "20", "eval/return": ""},
            {"epoch": "", "env_steps": "20", "eval/return": "3"}]
    assert MF.series(rows, "eval/return", "env_steps") == ([10.0], [1.0], (20.0, 3.0))


def test_legend_labels_count_attempts_from_one():
    assert MF._short("eval/episode_0_success") == "attempt 1 success"
    assert MF._short("eval/return/RepeatFirstEasy") == "RepeatFirstEasy" and MF._short("eval/success") == "success"


def test_summary_reports_each_seed():
    fig = next(f for f in MF.FIGURES if f.png == "04_tmaze10")
    seeds = MF.summary(fig)["curves"]["eval/success"]
    assert [s["csv"] for s in seeds] == [f"04_tmaze10_seed{i}.csv" for i in range(5)]
    assert [s["best_at_updates"] for s in seeds] == [1040.0] + [640.0] * 4  # docs/results/README.md, 04
    assert all(s["final"] == 1.0 for s in seeds)


def linked_files() -> set[Path]:
    """Every file that a relative link or image of a page points to."""
    out = set()
    for page in PAGES:
        text = prose(page.read_text())
        for target in LINK.findall(text) + HTML_SRC.findall(text):
            path = target.partition("#")[0]
            if path and not re.match(r"^[a-z][a-z0-9+.-]*:", path, re.I):
                out.add((page.parent / path).resolve())
    return out


def test_every_results_file_is_linked_from_a_page():
    linked = linked_files()
    unlinked = [p.relative_to(RESULTS).as_posix() for p in sorted(RESULTS.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.resolve() not in linked]
    assert not unlinked, f"docs/results files no page links to: {unlinked}"
