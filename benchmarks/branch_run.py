"""Resume one saved epoch of a run under several settings and print the curves side by side.

With ``--branch_every N`` (and no branch point) it runs the source run itself, keeping
``<run>/branches/epoch_<E>/`` (checkpoint + replay + metrics) after every N epochs (``benchmarks/branching.py``).
Given a branch point, it starts one new run per ``--variant NAME=FLAGS`` from it (the example, in a subprocess
through ``benchmarks/branching.py --branch_from <branch point>``, with ``--run_name <run>_e<E>_<NAME>`` plus the flags
after ``--`` and the variant's own flags), ``--jobs`` at a time, each ``nice``d. It then prints one JSON line per
variant (its changed flags, exit code, final summary and its curve from the branch epoch on: ``grad_steps`` and every
``--keys`` column), one for the source run's own continuation (``"variant": "source"``), and a last line with the
keys' values per variant, aligned on ``grad_steps``.

    python benchmarks/branch_run.py --branch_every 2 --example 04_tmaze -- --horizon 100 --epochs 80 --run_name tm100
    python benchmarks/branch_run.py runs/tm100/branches/epoch_60 --example 04_tmaze \\
        --variant same= --variant lr3e-5="--learning_rate 3e-5" --jobs 2 -- --horizon 100 --epochs 80

The flags after ``--`` must repeat the source run's example flags (``--horizon`` above); every setting that
differs from the branch point's is listed in each variant's ``changes``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, read_metrics, split_argv  # noqa: E402

BRANCHING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "branching.py")

DEFAULT_KEYS = ("eval/success", "eval/return", "train/return", "train-update/td_target_mean",
                "train-update/critic_loss_unweighted", "train-update/policy_entropy", "train-update/grad_norm")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS`` -> (NAME, split FLAGS); NAME becomes part of a folder name."""
    name, sep, flags = text.partition("=")
    if not sep or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"--variant {text!r}: expected NAME=FLAGS with NAME made of letters, digits, '-', '_', '.' "
                         f"(e.g. --variant lr3e-5=\"--learning_rate 3e-5\"; FLAGS may be empty)")
    return name, shlex.split(flags)


def branch_epoch(branch_point: str) -> int:
    base = os.path.basename(os.path.normpath(branch_point))
    if not base.startswith("epoch_") or not base[6:].isdigit():
        raise SystemExit(f"{branch_point}: not a branch point folder (expected <run>/branches/epoch_<E>)")
    return int(base[6:])


def curve(metrics_csv: str, from_epoch: int, keys) -> dict:
    """The rows of epochs >= from_epoch (and the final-eval row, which has no epoch) as columns."""
    if not os.path.exists(metrics_csv):
        return {}
    rows = [r for r in read_metrics(metrics_csv) if not r.get("epoch") or float(r["epoch"]) >= from_epoch]
    out = {"grad_steps": [int(float(r["grad_steps"])) for r in rows]}
    for key in keys:
        out[key] = [float(f"{float(r[key]):.5g}") if r.get(key) not in (None, "") else None for r in rows]
    return out


def changed_settings(stderr_path: str) -> str | None:
    """The trainer's "branched from ...; changed settings: ..." line, if the run printed one."""
    if not os.path.exists(stderr_path):
        return None
    with open(stderr_path, errors="replace") as f:
        lines = [ln.split("changed settings: ", 1)[1].strip() for ln in f if "changed settings: " in ln]
    return lines[0] if lines else None


def last_json(stdout_path: str) -> dict | None:
    with open(stdout_path, errors="replace") as f:
        for line in reversed(f.read().splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def launch(cmd: list[str], log_prefix: str) -> subprocess.Popen:
    """Start ``cmd`` niced, its stdout / stderr in ``<log_prefix>.out`` / ``.err`` (the child keeps the files)."""
    with open(log_prefix + ".out", "w") as out, open(log_prefix + ".err", "w") as err:
        return subprocess.Popen(["nice", "-n", "5", *cmd], stdout=out, stderr=err, cwd=ROOT)


def main(argv=None) -> list[dict]:
    argv, common = split_argv(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("branch_point", nargs="?", help="<run>/branches/epoch_<E> (written by a run with --branch_every)")
    p.add_argument("--example", required=True, help="the example the source run used, e.g. 04_tmaze")
    p.add_argument("--variant", action="append", default=[], help="NAME=FLAGS (repeatable); default: same=")
    p.add_argument("--jobs", type=int, default=1, help="variants run at a time")
    p.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="metrics.csv columns to print")
    p.add_argument("--out_dir", default=None, help="buffer_dir of the new runs (default: next to the source run)")
    p.add_argument("--branch_every", type=int, default=0,
                   help="without a branch point: run the source run, a branch point after every N epochs")
    args = p.parse_args(argv)
    if args.branch_point is None:
        if not args.branch_every:
            raise SystemExit("give a branch point, or --branch_every N to run the source run")
        from branching import run_example

        return [run_example(args.example, common, branch_every=args.branch_every)]
    bp = os.path.abspath(args.branch_point)
    epoch = branch_epoch(bp)
    if not os.path.exists(os.path.join(bp, "latest.pt")):
        raise SystemExit(f"{args.branch_point}: no latest.pt (is it a branch point of a run with --branch_every?)")
    source_run = os.path.dirname(os.path.dirname(bp))
    out_dir = os.path.abspath(args.out_dir or os.path.dirname(source_run))
    example = os.path.join(ROOT, "examples", f"{args.example}.py")
    if not os.path.exists(example):
        raise SystemExit(f"--example {args.example}: {example} does not exist")
    variants = [parse_variant(v) for v in (args.variant or ["same="])]
    if len({name for name, _ in variants}) != len(variants):
        raise SystemExit("--variant names must differ")
    jobs = []
    for name, flags in variants:
        run_name = f"{os.path.basename(source_run)}_e{epoch}_{name}"
        os.makedirs(os.path.join(out_dir, run_name), exist_ok=True)
        cmd = [sys.executable, BRANCHING, "--branch_from", bp, args.example, "--", *common, *flags,
               "--run_name", run_name, "--buffer_dir", out_dir, "--no-progress_bar"]
        jobs.append({"variant": name, "flags": flags, "run": os.path.join(out_dir, run_name), "cmd": cmd})
    running: list[tuple[dict, subprocess.Popen]] = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            job = pending.pop(0)
            running.append((job, launch(job["cmd"], os.path.join(job["run"], "branch_run"))))
        job, proc = running.pop(0)
        job["returncode"] = proc.wait()
    results = [{"variant": "source", "run": source_run,
                "curve": curve(os.path.join(source_run, "logs", "metrics.csv"), epoch, args.keys)}]
    for job in jobs:
        log = os.path.join(job["run"], "branch_run")
        results.append({"variant": job["variant"], "flags": " ".join(job["flags"]), "run": job["run"],
                        "changes": changed_settings(log + ".err"), "returncode": job["returncode"],
                        "summary": last_json(log + ".out"),
                        "curve": curve(os.path.join(job["run"], "logs", "metrics.csv"), epoch, args.keys)})
    for res in results:
        print(json.dumps({"branch_point": bp, "from_epoch": epoch, **res}), flush=True)
    print(json.dumps(side_by_side(results, args.keys)), flush=True)
    return results


def side_by_side(results: list[dict], keys) -> dict:
    """``{"grad_steps": [...], key: {variant: [value at each grad_steps or None]}}`` over every variant's rows
    (the final-eval row of a run shares its last grad_steps with its last epoch: the later value is kept)."""
    steps = sorted({g for res in results for g in res["curve"].get("grad_steps", [])})
    table: dict = {"side_by_side": True, "grad_steps": steps}
    for key in keys:
        table[key] = {}
        for res in results:
            c = res["curve"]
            by_step: dict = {}
            for g, v in zip(c.get("grad_steps", []), c.get(key, [])):
                if v is not None:
                    by_step[g] = v
            table[key][res["variant"]] = [by_step.get(g) for g in steps]
    return table


if __name__ == "__main__":
    main()
