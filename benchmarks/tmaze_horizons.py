"""Long horizons: updates and wall time until T-Maze is solved, per corridor length, and whether it stays solved.

Each (horizon, seed) is `examples/04_tmaze.py --horizon H --seed S --epochs E` in its own process (`--jobs` at a
time, each `nice`d with `--threads` torch threads), run to the end. One JSON line per run, then one per horizon:

    python benchmarks/tmaze_horizons.py --horizons 100 300 --seeds 0 1 2 --jobs 2
    python benchmarks/tmaze_horizons.py --device cuda --horizons 300 1000 --jobs 6 --threads 2 -- --parallel_envs 48

On a machine held for a fixed time, `--time_limit S` stops each run after S seconds (its whole process group) and
still summarises the evals it logged; `--cores_per_run N` pins run slot i to cores [i*N, (i+1)*N) with `taskset`, so
runs with collector processes do not share cores (how the T-Maze-1,000 runs of docs/results/README.md ran):

    python benchmarks/tmaze_horizons.py --device cuda --horizons 1000 --seeds 0 1 3 --jobs 3 --cores_per_run 4 \
        --epochs 100 --threads 2 --time_limit 540 -- --cuda_graph --no-trim_windows --collect async \
        --num_collectors 4 --eval_interval 4

Per run: `solved_update` / `solved_env_steps` / `solved_wall_s` at the first eval with success >= `--solved` (0.95),
`held` (every later eval, the final 5x-length one included, >= `--solved`), the eval successes, the final success,
`max_train_return` (at most -0.9: the policy never walked the corridor; counted per horizon as `stayed_at_start`)
and the run's wall time (`stopped_at_s` when `--time_limit` stopped it). Flags after `--` go to every run (after the
script's own). Curves are copied to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, final_eval, read_metrics, split_argv  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "04_tmaze.py")
STAYED_AT_START = -0.9  # a training return at most this: the policy never walked the corridor (a step penalty ~ -1/H)


def summarize(rows: list[dict], solved: float) -> dict:
    """First solved eval (updates, env steps, wall s) and whether every eval of the run's weights after it stayed
    >= `solved`. `final_success` / `final_weights` (/ `final_best_success`) as `run_files.final_eval`."""
    evals = [r for r in rows if r.get("eval/success") not in (None, "")]
    succ = [float(r["eval/success"]) for r in evals]
    train = [float(r["train/return"]) for r in rows if r.get("train/return") not in (None, "")]
    first = next((i for i, s in enumerate(succ) if s >= solved), None)
    final = final_eval(rows, "success")
    out = {"eval_success": [round(s, 3) for s in succ], "final_success": final["final"],
           "final_weights": final["final_weights"],
           "solved_update": None, "solved_env_steps": None, "solved_wall_s": None, "held": False,
           "max_train_return": round(max(train), 3) if train else None}
    if "final_best" in final:
        out["final_best_success"] = final["final_best"]
    if first is not None:
        row = evals[first]
        out.update(solved_update=int(float(row["grad_steps"])), solved_env_steps=int(float(row["env_steps"])),
                   solved_wall_s=round(float(row["wall_s"]), 1), held=all(s >= solved for s in succ[first:]))
    return out


def run_capped(argv: list[str], time_limit: float | None) -> tuple[int, str, bool]:
    """(exit code, stderr, stopped) of `argv` in its own process group, which is SIGTERM'd (SIGKILL'd 30 s later)
    with every process it started once `time_limit` seconds have passed (None: no limit)."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=time_limit)
        return proc.returncode, err, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        return proc.returncode, err, True


def core_sets(jobs: int, per_run: int) -> "queue.Queue[str]":
    """One `taskset -c` list per run slot: slot i gets cores [i*per_run, (i+1)*per_run)."""
    free: queue.Queue[str] = queue.Queue()
    for i in range(jobs):
        free.put(f"{i * per_run}-{(i + 1) * per_run - 1}")
    return free


def run_one(horizon: int, seed: int, args, work: str) -> dict:
    name = f"tmaze{horizon}_seed{seed}"
    argv = ["nice", "-n", "5", sys.executable, EXAMPLE, "--horizon", str(horizon), "--seed", str(seed),
            "--device", args.device, "--num_threads", str(args.threads), "--buffer_dir", work, "--run_name", name,
            "--no-progress_bar", *(["--epochs", str(args.epochs)] if args.epochs else []), *args.extra]
    cores = args.cores.get() if args.cores is not None else None
    t0 = time.perf_counter()
    try:
        rc, err, stopped = run_capped(["taskset", "-c", cores, *argv] if cores else argv, args.time_limit)
    finally:
        if cores:
            args.cores.put(cores)
    rec = {"horizon": horizon, "seed": seed, "device": args.device, "rc": rc,
           "wall_s": round(time.perf_counter() - t0, 1)}
    if cores:
        rec["cores"] = cores
    if stopped:
        rec["stopped_at_s"] = args.time_limit
    curve = os.path.join(work, name, "logs", "metrics.csv")
    if not os.path.exists(curve):
        return {**rec, "stderr_tail": err.strip().splitlines()[-3:]}
    rec.update(summarize(read_metrics(curve), args.solved))
    if rc != 0 and not stopped:
        rec["stderr_tail"] = err.strip().splitlines()[-3:]
    os.makedirs(args.out, exist_ok=True)
    rec["curve"] = shutil.copy(curve, os.path.join(args.out, f"{name}_{args.device.replace(':', '')}.csv"))
    return rec


def summarize_horizon(horizon: int, runs: list[dict]) -> dict:
    solved = [r for r in runs if r.get("solved_update") is not None]
    out = {"horizon": horizon, "summary": True, "runs": len(runs), "solved": len(solved),
           "held": sum(bool(r.get("held")) for r in runs),
           "stayed_at_start": sum(r.get("max_train_return") is not None and r["max_train_return"] <= STAYED_AT_START
                                  for r in runs)}
    if solved:
        out.update(median_solved_update=statistics.median(r["solved_update"] for r in solved),
                   median_solved_wall_s=statistics.median(r["solved_wall_s"] for r in solved))
    return out


def main(argv=None) -> list[dict]:
    argv, extra = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizons", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=80, help="epochs per run (0: the example's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="--num_threads of each run")
    ap.add_argument("--solved", type=float, default=0.95, help="eval success that counts as solved")
    ap.add_argument("--out", default=os.path.join("runs", "tmaze_horizons"), help="where the curves are copied")
    ap.add_argument("--time_limit", type=float, default=None,
                    help="seconds after which a run is stopped; its logged evals are still summarised")
    ap.add_argument("--cores_per_run", type=int, default=0,
                    help="pin run slot i to cores [i*N, (i+1)*N) with taskset (0: no pinning)")
    args = ap.parse_args(argv)
    args.extra = extra
    args.cores = None
    if args.cores_per_run > 0:
        if shutil.which("taskset") is None:
            ap.error("--cores_per_run pins runs with taskset, which is not installed here")
        if args.jobs * args.cores_per_run > (os.cpu_count() or 1):
            ap.error(f"--jobs {args.jobs} x --cores_per_run {args.cores_per_run} needs "
                     f"{args.jobs * args.cores_per_run} cores; this machine has {os.cpu_count()}")
        args.cores = core_sets(args.jobs, args.cores_per_run)
    work = tempfile.mkdtemp(prefix="tmaze_horizons_")
    jobs = [(h, s) for h in args.horizons for s in args.seeds]
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = list(pool.map(lambda job: run_one(*job, args, work), jobs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for rec in runs:
        print(json.dumps(rec), flush=True)
    for h in args.horizons:
        print(json.dumps(summarize_horizon(h, [r for r in runs if r["horizon"] == h])), flush=True)
    return runs


if __name__ == "__main__":
    main()
