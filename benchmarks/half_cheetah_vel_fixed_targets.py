"""Evaluate a finished `examples/12_half_cheetah_vel.py` run at fixed target velocities.

The trainer's in-training evals draw random targets (3 episodes per eval by default): too noisy to compare runs.
This resumes a *copy* of the run (checkpoint + replay; the original stays untouched) with no further training and
a `make_gym` factory that fixes the target, then prints one JSON line with the final eval return per target next to
what a cheetah standing still scores (-1000 * target per 1000-step episode)::

    {"run": "runs/cheetah_vel", "eval_return_by_target": {"0.5": -488.3, ...}, "standing_still": {"0.5": -500.0, ...}}

    python benchmarks/half_cheetah_vel_fixed_targets.py runs/cheetah_vel                       # the example's defaults
    python benchmarks/half_cheetah_vel_fixed_targets.py runs/tf --traj_encoder transformer ...  # + the run's own flags

Flags after the run dir are passed to the example and must describe the same model as the run (the checkpoint is
loaded into it); `--eval_envs` (default 2) episodes are run per target. The example prints its own summary line
per target before the result line. Needs ``pip install "gymnasium[mujoco]"``.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

from torchrl_amago.envs.libs.half_cheetah_vel import make_half_cheetah_vel_gym

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import load_example  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="the run's folder: <buffer_dir>/<run_name>")
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 1.5, 2.5])
    p.add_argument("--eval_envs", type=int, default=2, help="episodes per target")
    p.add_argument("--velocity_buckets", type=int, default=3, help="as the run had it (changes the env's keys)")
    a, example_flags = p.parse_known_args(argv)
    if not os.path.exists(os.path.join(a.run_dir, "ckpts", "latest.pt")):
        raise FileNotFoundError(f"{a.run_dir} has no ckpts/latest.pt: give the folder of a finished or stopped run")
    example = load_example("12_half_cheetah_vel")
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for v in a.targets:
            name = f"fixed_{v:g}"
            shutil.copytree(a.run_dir, os.path.join(scratch, name))
            argv_v = example_flags + ["--buffer_dir", scratch, "--run_name", name, "--epochs", "1",
                                      "--eval_envs", str(a.eval_envs), "--velocity_buckets", str(a.velocity_buckets),
                                      "--no-progress_bar"]
            summary = example.main(argv_v, make_gym=lambda v=v: make_half_cheetah_vel_gym(
                v, v, velocity_buckets=a.velocity_buckets))
            out[f"{v:g}"] = round(summary["eval_return"], 1)
    print(json.dumps({"run": a.run_dir, "eval_return_by_target": out,
                      "standing_still": {k: -1000.0 * float(k) for k in out}}))


if __name__ == "__main__":
    main()
