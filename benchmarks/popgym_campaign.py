"""The POPGym campaign: `examples/03_popgym.py` on 8 tasks x 3 seeds at the example's defaults, the gate for a default.

Each (task, seed) runs in its own process (`--jobs` at a time, longest tasks first, each `nice`d with `--threads`
torch threads). One JSON line per run (final eval, best eval, wall time), then one per task with the mean and
standard deviation of the finals, the random policy's return and, with `--reference DIR [DIR ...]`, the same task's
finals in the first DIR that has its curves (`03_campaign_<task>_seed<s>.csv`, e.g. docs/results) and whether the
new mean is within one reference standard deviation of the reference mean or above it (`not_worse`):

    python benchmarks/popgym_campaign.py --jobs 2 --reference docs/results --out runs/campaign
    python benchmarks/popgym_campaign.py --tasks BattleshipEasy --seeds 0 1 2 --jobs 2 -- --n_step 3

Flags after `--` go to every run. Curves are copied to `--out` as `03_campaign_<task>_seed<s>.csv`;
`--summarize` runs nothing and prints the same lines from the curves already in `--out` (runs made in parts);
`--skip_done` runs only the (task, seed) pairs whose curve is not in `--out` yet and summarizes all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, column, final_eval, read_metrics, split_argv  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "03_popgym.py")
RANDOM_BASELINE = os.path.join(ROOT, "docs", "results", "03_campaign_random_baseline.jsonl")
# the campaign's tasks, longest first (wall time per run on the 2-core box, so that no long run starts last)
TASKS = ["PositionOnlyPendulumEasy", "ConcentrationEasy", "MultiarmedBanditEasy", "BattleshipEasy",
         "VelocityOnlyCartPoleEasy", "RepeatPreviousMedium", "HigherLowerEasy", "MineSweeperEasy"]


def curve_name(task: str, seed: int) -> str:
    return f"03_campaign_{task}_seed{seed}.csv"


def summarize(rows: list[dict]) -> dict:
    """Final eval (`run_files.final_eval`: `final_return`, `final_weights`, with `--final_eval both`
    `final_best_return`), the best eval, updates and env steps."""
    evals = column(rows, "eval/return")
    final = final_eval(rows, "return")
    out = {"final_return": final["final"], "final_weights": final["final_weights"],
           "best_return": max(v for _, v in evals) if evals else None,
           "eval_return": [round(v, 3) for _, v in evals],
           "grad_steps": int(float(rows[-1]["grad_steps"])) if rows else 0,
           "env_steps": int(float(rows[-1]["env_steps"])) if rows else 0}
    if "final_best" in final:
        out["final_best_return"] = final["final_best"]
    return out


def summarize_curve(task: str, seed: int, path: str) -> dict:
    rows = read_metrics(path)
    return {"task": task, "seed": seed, "wall_s": round(float(rows[-1]["wall_s"]), 1) if rows else None,
            **summarize(rows), "curve": path}


def run_one(task: str, seed: int, args, work: str) -> dict:
    name = f"{task}_seed{seed}"
    argv = ["nice", "-n", "5", sys.executable, EXAMPLE, "--env", task, "--seed", str(seed),
            "--num_threads", str(args.threads), "--buffer_dir", work, "--run_name", name, "--no-progress_bar",
            *args.extra]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    rec = {"task": task, "seed": seed, "rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
           "flags": args.extra}
    curve = os.path.join(work, name, "logs", "metrics.csv")
    if proc.returncode != 0 or not os.path.exists(curve):
        rec["stderr_tail"] = proc.stderr.strip().splitlines()[-3:]
    if os.path.exists(curve):
        rec.update(summarize(read_metrics(curve)))
        os.makedirs(args.out, exist_ok=True)
        rec["curve"] = shutil.copy(curve, os.path.join(args.out, curve_name(task, seed)))
    shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    print(json.dumps(rec), flush=True)
    return rec


def random_returns(path: str = RANDOM_BASELINE) -> dict[str, float]:
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                for task, rec in json.loads(line).items():
                    out[task] = rec["random_return"]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def reference_curves(task: str, seeds: list[int], folders: list[str]) -> list[str]:
    """The task's curves in the first of `folders` that has any of them."""
    for folder in folders:
        if paths := [p for s in seeds if os.path.exists(p := os.path.join(folder, curve_name(task, s)))]:
            return paths
    return []


def summarize_task(task: str, runs: list[dict], seeds: list[int], reference: list[str] | None,
                   random: dict[str, float]) -> dict:
    finals = [r["final_return"] for r in runs if r.get("final_return") is not None]
    out = {"task": task, "summary": True, "runs": len(runs), "finals": [round(v, 3) for v in finals],
           "random_return": random.get(task)}
    if finals:
        mean, std = mean_std(finals)
        out.update(mean=round(mean, 3), std=round(std, 3))
        if task in random:
            out["above_random"] = sum(v > random[task] for v in finals)
    if reference:
        ref = [summarize(read_metrics(p))["final_return"] for p in reference_curves(task, seeds, reference)]
        ref = [v for v in ref if v is not None]
        if ref and finals:
            ref_mean, ref_std = mean_std(ref)
            out.update(reference_finals=[round(v, 3) for v in ref], reference_mean=round(ref_mean, 3),
                       reference_std=round(ref_std, 3), not_worse=out["mean"] >= ref_mean - ref_std)
    return out


def main(argv=None) -> list[dict]:
    argv, extra = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=TASKS, help="popgym class names (default: the campaign's 8)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="--num_threads of each run")
    ap.add_argument("--reference", nargs="+", default=None,
                    help="folders of 03_campaign_<task>_seed<s>.csv to compare with (per task, the first that has it)")
    ap.add_argument("--out", default=os.path.join("runs", "popgym_campaign"), help="where the curves are copied")
    ap.add_argument("--summarize", action="store_true", help="run nothing: summarize the curves in --out")
    ap.add_argument("--skip_done", action="store_true", help="run only the pairs without a curve in --out yet")
    args = ap.parse_args(argv)
    args.extra = extra
    for folder in args.reference or []:
        if not os.path.isdir(folder):
            ap.error(f"--reference {folder}: no such folder")
    jobs = [(t, s) for t in args.tasks for s in args.seeds]
    done = [(t, s) for t, s in jobs if os.path.exists(os.path.join(args.out, curve_name(t, s)))]
    runs = []
    if args.summarize or args.skip_done:
        runs = [summarize_curve(t, s, os.path.join(args.out, curve_name(t, s))) for t, s in done]
        for rec in runs:
            print(json.dumps(rec), flush=True)
    if not args.summarize:
        todo = [job for job in jobs if job not in done] if args.skip_done else jobs
        work = tempfile.mkdtemp(prefix="popgym_campaign_")
        try:
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                runs += list(pool.map(lambda job: run_one(*job, args, work), todo))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    random = random_returns()
    for task in args.tasks:
        print(json.dumps(summarize_task(task, [r for r in runs if r["task"] == task], args.seeds, args.reference,
                                        random)), flush=True)
    return runs


if __name__ == "__main__":
    main()
