"""Wall-clock from launch to the first eval success 1.0 of `examples/04_tmaze.py`, per collection mode and seed.

Each run is the example itself in a subprocess (`--collect <mode> --seed <s>` plus any flags after `--`), with its
own defaults (eval every 5 epochs on 32 envs). The script watches the run's `logs/metrics.csv`, stops the run at
the first eval with `eval/success` = 1.0 (or after `--max_s`), and prints one JSON line per run (`wall_s` since
launch, start-up included; the updates and env steps at that eval) and one summary line per mode (median over
seeds; a run that did not succeed counts as `inf`, and its line says how it ended: `returncode` (None = stopped at
`--max_s`, 0 = finished its epochs), the updates it made, its evals' success values, and the end of its stderr if
it failed). Runs go one at a time, so they do not share the cores.

    python benchmarks/time_to_success.py --modes sync async --seeds 0 1 2 -- --horizon 50
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, read_metrics  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "04_tmaze.py")


def first_success(metrics: str) -> dict | None:
    if not os.path.exists(metrics):
        return None
    for row in read_metrics(metrics):
        ok = row.get("eval/success") or ""
        if ok and float(ok) >= 1.0:
            return {"grad_steps": int(float(row["grad_steps"])), "env_steps": int(float(row["env_steps"])),
                    "epoch": row.get("epoch")}
    return None


def how_it_ended(metrics: str, returncode: int | None, stderr_path: str) -> dict:
    """For a run without success: its exit code (None = stopped at --max_s), the updates it made, its evals'
    success values and, when it failed, the last lines of its stderr."""
    out: dict = {"returncode": returncode, "grad_steps": 0, "eval_success": []}
    if os.path.exists(metrics):
        for row in read_metrics(metrics):
            out["grad_steps"] = int(float(row["grad_steps"]))
            if row.get("eval/success"):
                out["eval_success"].append(round(float(row["eval/success"]), 3))
    if returncode:
        with open(stderr_path, errors="replace") as f:
            out["stderr_tail"] = [ln.rstrip() for ln in f.readlines()[-8:]]
    return out


def one_run(mode: str, seed: int, extra: list[str], max_s: float) -> dict:
    root = tempfile.mkdtemp(prefix="tts_")
    cmd = [sys.executable, EXAMPLE, "--collect", mode, "--seed", str(seed), "--buffer_dir", root, "--run_name", "r",
           "--no-progress_bar", *extra]
    t0 = time.perf_counter()
    stderr_path = os.path.join(root, "stderr.txt")
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    metrics = os.path.join(root, "r", "logs", "metrics.csv")
    found = None
    try:
        while time.perf_counter() - t0 < max_s and proc.poll() is None:
            time.sleep(1.0)
            found = first_success(metrics)
            if found:
                break
        found = found or first_success(metrics)
        wall = time.perf_counter() - t0 if found else math.inf
        ended = None if found else how_it_ended(metrics, proc.poll(), stderr_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return {"mode": mode, "seed": seed, "wall_s": round(wall, 1), **(found or ended)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["sync", "async"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max_s", type=float, default=900.0, help="stop a run that has not succeeded after this long")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="flags for the example after --")
    args = ap.parse_args()
    extra = [a for a in args.extra if a != "--"]
    results: dict[str, list[float]] = {m: [] for m in args.modes}
    for seed in args.seeds:  # modes alternate, so a change in the machine's load affects both
        for mode in args.modes:
            r = one_run(mode, seed, extra, args.max_s)
            results[mode].append(r["wall_s"])
            print(json.dumps(r), flush=True)
    for mode, walls in results.items():
        print(json.dumps({"mode": mode, "median_wall_s_to_success": statistics.median(walls), "wall_s": walls,
                          "flags": extra}), flush=True)


if __name__ == "__main__":
    main()
