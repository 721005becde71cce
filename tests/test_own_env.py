"""docs/own_env.md, run as a user would: a gymnasium meta-RL env of one's own, trained, extended, evaluated and
acting from its run folder. The default suite runs it with a short budget (the mechanics); the slow test runs the
page as written and checks that the agent learns what the attempts reveal (Bayes optimum .825 / .9375 / .9375, the
page's own numbers)."""
import ast
import contextlib
import csv
import io
import os
import re
import warnings
from pathlib import Path

import pytest

from tests.test_docs import blocks

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "own_env.md"


def run_page(tmp_path, **replace) -> str:
    """The page's python blocks in one namespace from `tmp_path`, each `old=new` text replaced; their stdout."""
    code = "\n".join(c for info, c in blocks(PAGE) if info == "python")
    for old, new in replace.items():
        assert old in code, old
        code = code.replace(old, new)
    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.filterwarnings("ignore", "Creating .*WeightUpdater which inherits", DeprecationWarning)
            exec(compile(code, str(PAGE), "exec"), {"__name__": "own_env"})
    finally:
        os.chdir(cwd)
    return out.getvalue()


def per_attempt(out: str) -> list[list[float]]:
    """The printed returns per attempt: the run's final eval, then the saved agent's rollout."""
    return [ast.literal_eval(m.group(1)) for m in re.finditer(r"^(\[[-0-9., ]+\])", out, re.M)]


def test_the_page_trains_extends_evaluates_and_deploys(tmp_path):
    out = run_page(tmp_path, **{"epochs=40": "epochs=2", "grads_per_epoch=60": "grads_per_epoch=4",
                                "eval_interval=5": "eval_interval=1"})
    final, deployed = per_attempt(out)
    assert len(final) == len(deployed) == 3, out
    run = tmp_path / "runs" / "hidden_goal"
    assert (run / "logs" / "attempts.png").exists() and (run / "config.json").exists()
    assert (run / "ckpts" / "best.pt").exists()
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 2 epochs, then 5 more: one row per epoch, in order, and one final-eval row (no epoch) at the end
    assert [r["epoch"] for r in rows] == [f"{e:.1f}" for e in range(7)] + [""], [r["epoch"] for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 5 minutes on an idle core
def test_the_page_as_written_learns_near_the_bayes_optimum(tmp_path):
    final, deployed = per_attempt(run_page(tmp_path))
    for returns in (final, deployed):
        assert returns[1] > returns[0] + 0.05 and returns[2] > returns[0] + 0.05, returns  # memory of attempt 1
        assert returns[1] > 0.85 and returns[2] > 0.85, returns  # the optimum is .9375
