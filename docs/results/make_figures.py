"""Draw every figure of docs/results from its CSVs (each CSV is a run's `logs/metrics.csv`).

    python docs/results/make_figures.py                  # all figures -> docs/results/figures/
    python docs/results/make_figures.py --only 04_tmaze100 --out /tmp/figs
    python docs/results/make_figures.py --summary        # also one JSON line per figure (the headline numbers)

Adding a figure is one line in FIGURES: a PNG name, a title, a glob of CSVs (relative to docs/results) and, when
the files form more than one curve, a regex whose first group names the curve (files of the same curve are seeds and
are drawn as their mean with a min-max band). Each figure has two columns: the eval metric against env steps and
against wall-clock seconds; `panel` (a regex) splits the files into one row per group (e.g. one per task).
Several seeds are drawn as their mean, a min-max band and one thin line per seed. The last row of a metrics.csv with
no `epoch` is the final (longer) evaluation; it is drawn as a star, one per seed that has one, and the legend says
how many seeds that is.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Figure:
    """One PNG: `csvs` (a glob under docs/results) drawn as curves of `y` against env steps and wall time."""

    png: str
    title: str
    csvs: str
    y: tuple[str, ...] = ("eval/return",)
    curve: str | None = None  # regex on the file name; group 1 labels the curve (else one curve, files = seeds)
    panel: str | None = None  # regex on the file name; group 1 names the row
    ylabel: str = ""  # default: "success" when every `y` is a success rate, else "return"
    baseline: str | None = None  # JSON lines {panel: {"random_return": x}}: a dashed line per panel
    reference: str | None = None  # a CSV glob (one run): its final eval of each `y` as a dotted line ("untrained")
    hline: tuple[float, str] | None = None  # (value, label): a dashed line on every panel
    final_label: str = "final eval"  # legend label of the final-eval stars


FIGURES = [
    Figure("00_meta_frozen_lake", "Meta-Frozen-Lake 4x4, 3 attempts per lake: success per attempt",
           "00_meta_frozen_lake_4x4_k3_seed*.csv",
           y=("eval/episode_0_success", "eval/episode_1_success", "eval/episode_2_success")),
    Figure("01_cartpole", "CartPole-v1 (example 01, the original's gamma list)", "01_cartpole_original_gammas_seed*.csv"),
    Figure("15_hidden_door", "Hidden door, 5 doors, 3 attempts: return per attempt (Bayes optimum .4 / .8 / 1)",
           "15_hidden_door_seed*.csv",
           y=("eval/episode_0_return", "eval/episode_1_return", "eval/episode_2_return")),
    Figure("01_bandit", "Bernoulli bandit, 5 arms x 10 pulls (example 01 defaults): return per trial",
           "01_bandit_k5n10_seed*.csv", hline=(6.660, "Bayes optimum 6.660")),
    Figure("01_halfcheetah", "HalfCheetah-v4 (example 01, TD3-like sizes, FF memory)", "01_halfcheetah_ff256_seed*.csv"),
    Figure("02_gymnax_memorychain", "gymnax MemoryChain-bsuite, memory length 10", "02_gymnax_memorychain10_seed*.csv"),
    Figure("03_popgym_campaign", "POPGym: 8 tasks x 3 seeds (example 03 defaults)", "03_campaign_*_seed*.csv",
           panel=r"03_campaign_(.+)_seed\d+", baseline="03_campaign_random_baseline.jsonl"),
    Figure("03_popgym_multidomain", "Multi-domain POPGym: RepeatPreviousEasy + RepeatFirstEasy, one agent",
           "03_popgym_multidomain_2games_seed*.csv",
           y=("eval/return/RepeatPreviousEasy", "eval/return/RepeatFirstEasy")),
    Figure("04_tmaze10", "T-Maze, horizon 10", "04_tmaze10_seed*.csv", y=("eval/success",)),
    Figure("04_tmaze100", "T-Maze, horizon 100", "04_tmaze100_seed*.csv", y=("eval/success",)),
    Figure("04_tmaze300", "T-Maze, horizon 300 (one H200, async)", "04_tmaze300_seed*.csv", y=("eval/success",)),
    Figure("04_tmaze1000", "T-Maze, horizon 1,000 (one H200, async collection)",
           "04_tmaze1000_seed*.csv", y=("eval/success",)),
    Figure("05_dark_key_door", "Dark Key-To-Door, room 4, horizon 100", "05_dark_key_door_room4_seed*.csv"),
    Figure("07_metaworld_reach", "Meta-World reach-v3, 3 attempts: test-task return", "07_metaworld_reach_k3_seed*.csv",
           y=("eval/return/reach-v3-test-k3",)),
    Figure("08_ale_roadrunner", "Atari RoadRunner: training return (full episodes) and eval return",
           "08_ale_roadrunner_seed*.csv", y=("train/return", "eval/return"),
           final_label="final eval (2,000 steps per env; periodic evals: 1,000, short trials only)"),
    Figure("09_procgen_starpilot", "Procgen starpilot, 2 attempts per level (unseen levels): return per attempt",
           "09_procgen_starpilot_seed*.csv", y=("eval/episode_0_return", "eval/episode_1_return"),
           reference="09_procgen_starpilot_untrained.csv"),
    Figure("10_babyai", "BabyAI GoToRedBallNoDists + GoToObj, 2 attempts: success per attempt",
           "10_babyai_gotoredball_gotoobj_k2_seed*.csv", y=("eval/episode_0_success", "eval/episode_1_success")),
    Figure("11_xland_minigrid", "XLand-MiniGrid hidden-rule 7x7, 3 attempts: return per attempt (at most 1 each)",
           "11_xland_hidden_rule_7x7_k3_seed*.csv",
           y=("eval/episode_0_return", "eval/episode_1_return", "eval/episode_2_return")),
    Figure("12_half_cheetah_vel", "HalfCheetah with a hidden target velocity (random targets in [0, 3] m/s)",
           "12_half_cheetah_vel_seed*.csv", hline=(-1500.0, "standing still (expected over targets)")),
    Figure("13_mazerunner_relabeling", "MazeRunner 9x9, 2 goals: relabeling some vs none",
           "13_mazerunner_9x9_relabel_*.csv", y=("eval/success",), curve=r"relabel_(\w+?)_seed\d+"),
    Figure("14_offline_cartpole", "Offline CartPole (D4RL-format dataset, no env steps): eval return vs updates",
           "14_offline_cartpole_seed*.csv"),
]

FINAL = "final"  # label of the final-eval marker


def read_csv(path: str) -> list[dict[str, str]]:
    """The rows of one metrics.csv as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def series(rows: list[dict[str, str]], y: str, x: str) -> tuple[list[float], list[float], tuple[float, float] | None]:
    """(xs, ys) of the epochs where `y` was evaluated, and the final eval (x, y) or None."""
    xs, ys, final = [], [], None
    for r in rows:
        xv, yv = _num(r.get(x)), _num(r.get(y))
        if math.isnan(xv) or math.isnan(yv):
            continue
        if r.get("epoch", "") == "" and r is rows[-1]:
            final = (xv, yv)
        else:
            xs.append(xv)
            ys.append(yv)
    return xs, ys, final


def group_files(fig: Figure, root: str = HERE) -> dict[str, dict[str, list[str]]]:
    """{panel: {curve: [csv paths]}} for one figure. Raises if the glob matches nothing."""
    paths = sorted(glob.glob(os.path.join(root, fig.csvs)))
    if not paths:
        raise FileNotFoundError(f"figure {fig.png!r}: no CSV matches {fig.csvs!r} under {root}")
    out: dict[str, dict[str, list[str]]] = {}
    for p in paths:
        name = os.path.basename(p)
        panel = _group(fig.panel, name, fig.png)
        curve = _group(fig.curve, name, fig.png)
        out.setdefault(panel, {}).setdefault(curve, []).append(p)
    return out


def _group(pattern: str | None, name: str, png: str) -> str:
    if pattern is None:
        return ""
    m = re.search(pattern, name)
    if not m:
        raise ValueError(f"figure {png!r}: {name} does not match {pattern!r}")
    return m.group(1)


def baselines(fig: Figure, root: str = HERE) -> dict[str, float]:
    """{panel: random-policy return} from the figure's baseline file (empty without one)."""
    if fig.baseline is None:
        return {}
    with open(os.path.join(root, fig.baseline)) as f:
        return {k: v["random_return"] for line in f if line.strip() for k, v in json.loads(line).items()}


def band(curves: list[tuple[list[float], list[float]]], points: int = 60):
    """Mean, min and max over seeds on a common x grid (the range every seed covers); one seed is its own curve."""
    import numpy as np

    curves = [(np.asarray(x), np.asarray(y)) for x, y in curves if len(x)]
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, y, y
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.asarray([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def draw(fig: Figure, out_dir: str, root: str = HERE) -> str:
    """Write `<out_dir>/<fig.png>.png` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_files(fig, root)
    random_return = baselines(fig, root)
    rows = {p: read_csv(p) for panel in groups.values() for paths in panel.values() for p in paths}
    reference = _reference(fig, root)
    xcols = (("env_steps", "env steps"), ("wall_s", "wall-clock s"))
    if all(_num(r.get("env_steps")) == 0 for rs in rows.values() for r in rs):  # offline: no env steps
        xcols = (("grad_steps", "updates"), ("wall_s", "wall-clock s"))
    fig_h = 3.0 * len(groups) + 0.6
    plt_fig, axes = plt.subplots(len(groups), 2, figsize=(10, fig_h), squeeze=False)
    for row, (panel, curves) in enumerate(sorted(groups.items())):
        for col, (xcol, xlabel) in enumerate(xcols):
            ax = axes[row][col]
            first_final = True
            for i, (curve, paths) in enumerate(sorted(curves.items())):
                for j, y in enumerate(fig.y):
                    color = f"C{(i * len(fig.y) + j) % 10}"
                    per_seed = [series(rows[p], y, xcol) for p in paths]
                    x, mean, lo, hi = band([(s[0], s[1]) for s in per_seed])
                    label = " ".join(t for t in (curve, _short(y) if len(fig.y) > 1 else "") if t) or None
                    if label and len(paths) > 1:
                        label += f" ({len(paths)} seeds)"
                    elif len(paths) > 1:
                        label = f"mean of {len(paths)} seeds, min-max band, thin: each seed"
                    ax.plot(x, mean, color=color, label=label)
                    if len(paths) > 1:
                        ax.fill_between(x, lo, hi, color=color, alpha=0.15)
                        for xs, ys, _ in per_seed:
                            ax.plot(xs, ys, color=color, lw=0.7, alpha=0.5)
                    finals = [s[2] for s in per_seed if s[2] is not None]
                    if finals:
                        star = fig.final_label
                        if len(paths) > 1:
                            star += f" ({len(finals)} of {len(paths)} seeds)"
                        ax.scatter([f[0] for f in finals], [f[1] for f in finals], marker="*", s=60, color=color,
                                   label=star if first_final else None, zorder=3)
                        first_final = False
                    if y in reference:
                        ax.axhline(reference[y], color=color, ls=":", lw=1.2,
                                   label="untrained policy, final eval" if (i, j) == (0, 0) else None)
            if panel in random_return:
                ax.axhline(random_return[panel], color="gray", ls="--", lw=1,
                           label="random policy" if row == 0 else None)
            if fig.hline is not None:
                ax.axhline(fig.hline[0], color="gray", ls="--", lw=1, label=fig.hline[1] if row == 0 else None)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(fig.ylabel or ("success" if all("success" in y for y in fig.y) else "return"))
            if panel:
                ax.set_title(panel, fontsize=10)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    plt_fig.suptitle(fig.title)
    plt_fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig_h))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, fig.png + ".png")
    plt_fig.savefig(path, dpi=80)
    plt.close(plt_fig)
    return path


def _reference(fig: Figure, root: str = HERE) -> dict[str, float]:
    """{y: final eval} of the figure's reference run (e.g. the untrained policy); empty without one."""
    if fig.reference is None:
        return {}
    paths = sorted(glob.glob(os.path.join(root, fig.reference)))
    if len(paths) != 1:
        raise FileNotFoundError(f"figure {fig.png!r}: reference {fig.reference!r} matches {len(paths)} files, not 1")
    rows = read_csv(paths[0])
    return {y: _num(rows[-1].get(y)) for y in fig.y if not math.isnan(_num(rows[-1].get(y)))}


def _short(col: str) -> str:
    """A legend label for a column: `eval/episode_0_success` -> `attempt 1 success`, `eval/return/X` -> `X`,
    `train/return` -> `training return`."""
    if col.startswith("train/"):
        return "training " + col.removeprefix("train/")
    if col == "eval/return":
        return "eval return"
    col = col.removeprefix("eval/").replace("return/", "")
    m = re.fullmatch(r"episode_(\d+)_(\w+)", col)
    return f"attempt {int(m.group(1)) + 1} {m.group(2)}" if m else col


def summary(fig: Figure, root: str = HERE) -> dict:
    """The headline numbers of a figure: per curve and metric, each seed's final eval (or last eval) and the updates
    at which its eval first reached its best value."""
    out = {"figure": fig.png, "curves": {}}
    for panel, curves in sorted(group_files(fig, root).items()):
        for curve, paths in sorted(curves.items()):
            for y in fig.y:
                seeds = []
                for p in paths:
                    rows = read_csv(p)
                    gs, ys, final = series(rows, y, "grad_steps")
                    best = max(ys) if ys else math.nan
                    seeds.append({"csv": os.path.relpath(p, root), "final": final[1] if final else None,
                                  "last": ys[-1] if ys else None, "best": best,
                                  "best_at_updates": gs[ys.index(best)] if ys else None})
                out["curves"][" ".join(t for t in (panel, curve, y) if t)] = seeds
    return out


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="PNG names to draw (default: all)")
    p.add_argument("--out", default=os.path.join(HERE, "figures"), help="output folder")
    p.add_argument("--summary", action="store_true", help="print one JSON line of headline numbers per figure")
    a = p.parse_args(argv)
    names = {f.png for f in FIGURES}
    unknown = set(a.only or ()) - names
    if unknown:
        p.error(f"--only: unknown figure(s) {sorted(unknown)}; known: {sorted(names)}")
    written = []
    for fig in FIGURES:
        if a.only is None or fig.png in a.only:
            written.append(draw(fig, a.out))
            if a.summary:
                print(json.dumps(summary(fig)))
    return written


if __name__ == "__main__":
    main()
