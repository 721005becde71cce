"""Learning on a device, several seeds at once: does `--device cuda` learn like the CPU records?

Runs each task x seed as its own example process (in parallel, `--jobs` at a time) with `--device`, then prints one
JSON line per run and one summary line per task:

    python benchmarks/learning_on_device.py --device cuda                    # T-Maze-10 and VOCP, seeds 0 1 2
    python benchmarks/learning_on_device.py --device cuda --tasks tmaze10 --seeds 0 1 2 3 4

Per run: the final eval return, the last training return (collected by the acting policy: it should track the evals;
a training return far below them means the data came from another policy than the one evaluated), the first update
whose eval reached `--solved` (if any) and the wall time. The curves are copied to `--out`. The CPU records to compare
with are in docs/results (`04_tmaze10_seed*.csv`, `03_campaign_VelocityOnlyCartPoleEasy_seed*.csv`).
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
from run_files import ROOT, column, read_metrics  # noqa: E402

TASKS = {  # name -> (example command, eval return that counts as solved or None)
    "tmaze10": (["examples/04_tmaze.py", "--horizon", "10", "--epochs", "30"], 1.0),
    "vocp": (["examples/03_popgym.py", "--env", "VelocityOnlyCartPoleEasy"], None),
}


def summarize_run(rows: list[dict], solved: float | None) -> dict:
    evals, train = column(rows, "eval/return"), column(rows, "train/return")
    first = next((step for step, v in evals if solved is not None and v >= solved - 1e-6), None)
    return {"final_eval_return": evals[-1][1] if evals else None,
            "last_train_return": train[-1][1] if train else None,
            "first_solved_update": first, "evals": len(evals)}


def run_one(task: str, seed: int, args, work: str) -> dict:
    cmd, solved = TASKS[task]
    name = f"{task}_seed{seed}"
    argv = [sys.executable, *cmd, "--device", args.device, "--seed", str(seed), "--num_threads", str(args.threads),
            "--buffer_dir", work, "--run_name", name, "--no-progress_bar", *args.extra]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])})
    rec = {"task": task, "seed": seed, "device": args.device, "rc": proc.returncode,
           "wall_s": round(time.perf_counter() - t0, 1)}
    curve = os.path.join(work, name, "logs", "metrics.csv")
    if proc.returncode != 0 or not os.path.exists(curve):
        return {**rec, "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    rec.update(summarize_run(read_metrics(curve), solved))
    os.makedirs(args.out, exist_ok=True)
    rec["curve"] = shutil.copy(curve, os.path.join(args.out, f"{name}_{args.device.replace(':', '')}.csv"))
    return rec


def summarize_task(task: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if r["rc"] == 0 and r.get("final_eval_return") is not None]
    out = {"task": task, "summary": True, "runs": len(runs), "finished": len(ok)}
    if ok:
        finals = [r["final_eval_return"] for r in ok]
        trains = [r["last_train_return"] for r in ok if r["last_train_return"] is not None]
        out.update(final_eval_median=statistics.median(finals), final_eval_min=min(finals),
                   last_train_median=statistics.median(trains) if trains else None,
                   solved=sum(r["first_solved_update"] is not None for r in ok) if TASKS[task][1] is not None else None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=6, help="runs at a time")
    ap.add_argument("--threads", type=int, default=2, help="--num_threads of each run")
    ap.add_argument("--out", default=os.path.join("runs", "learning_on_device"), help="where the curves are copied")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags appended to every run (last)")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="learning_on_device_")
    jobs = [(task, seed) for task in args.tasks for seed in args.seeds]
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = list(pool.map(lambda job: run_one(*job, args, work), jobs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for rec in runs:
        print(json.dumps(rec), flush=True)
    for task in args.tasks:
        print(json.dumps(summarize_task(task, [r for r in runs if r["task"] == task])), flush=True)
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
