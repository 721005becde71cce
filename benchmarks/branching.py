"""Branch points: copies of a run (checkpoint + replay + metrics) from which other runs start under other settings.

A research workflow beside the trainer, through its hooks (`AMAGOTrainer.register_hook`):

- :class:`BranchPoints` (``--branch_every N``), a ``post_epoch`` hook: after every N-th epoch's checkpoint it copies
  ``ckpts/latest.pt``, the replay generation it names and ``logs/metrics.csv`` into ``<run>/branches/epoch_<E>/``
  (published by one rename, so a folder that exists is whole). The replay's memmaps are copied sparsely (their
  unwritten tail takes no disk).
- :func:`start_from_branch` (``--branch_from <run>/branches/epoch_<E>``) makes a *new* run (its own
  ``--run_name``) a copy of that branch point before its trainer is built: the weights, optimizer, PopArt
  statistics, exploration schedule, counters, RNG states, replay and the metrics rows of epochs < E come from the
  branch point; every setting comes from the new command line, loss and return settings included (a plain resume
  refuses those). A change the weights do not fit (another model size) is refused by the weight load, naming the
  mismatched keys; a target copy of the encoders the branch point lacks starts from its online encoders.

Within ``with branching(branch_every=..., branch_from=...)`` every `AMAGOTrainer` built does both. From a shell
(``benchmarks/branch_run.py`` runs its variants so):

    python benchmarks/branching.py --branch_every 2 04_tmaze -- --horizon 100 --epochs 80 --run_name tm100
    python benchmarks/branching.py --branch_from runs/tm100/branches/epoch_60 04_tmaze -- --horizon 100 \\
        --epochs 80 --run_name tm100_e60_lr --learning_rate 3e-5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, load_example, split_argv  # noqa: E402

sys.path.insert(0, ROOT)

from torchrl_amago.data.replay_persist import fsync_dir  # noqa: E402
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError  # noqa: E402
from torchrl_amago.trainers.run.checkpoint import BEST_EVAL, load_checkpoint, save_checkpoint  # noqa: E402
from torchrl_amago.trainers.run.resume_config import config_changes  # noqa: E402

BRANCHES_DIR = "branches"
CKPT_FILE = "latest.pt"
METRICS_FILE = "metrics.csv"
BRANCHED_FROM = "branched_from.json"  # in a branched run's folder: its branch point and the settings it changed
_CHUNK = 1 << 16


def branch_point_dir(run_dir: str, epoch: int) -> str:
    """``<run_dir>/branches/epoch_<epoch>``: the branch point written after ``epoch`` epochs."""
    return os.path.join(run_dir, BRANCHES_DIR, f"epoch_{epoch}")


def copy_sparse(src: str, dst: str) -> None:
    """Copy a file, leaving its all-zero 64 KiB chunks as holes (a memmap's unwritten rows take no disk)."""
    size = os.path.getsize(src)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while True:
            chunk = fi.read(_CHUNK)
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                fo.seek(len(chunk), os.SEEK_CUR)
            else:
                fo.write(chunk)
        fo.truncate(size)
        fo.flush()
        os.fsync(fo.fileno())


def copy_tree_sparse(src: str, dst: str) -> None:
    """Copy the folder ``src`` to ``dst`` (which must not exist) with :func:`copy_sparse`; symlinks are refused."""
    for root, dirs, files in os.walk(src):
        out = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise CheckpointError(f"{os.path.join(root, name)} is a symlink; a replay folder holds plain files")
        for name in files:
            copy_sparse(os.path.join(root, name), os.path.join(out, name))


def save_branch_point(run_dir: str, ckpt_path: str, replay_dir: str, metrics_csv: str, epoch: int) -> str:
    """Copy the just-written checkpoint, the replay generation folder ``replay_dir`` it names and the metrics CSV
    to :func:`branch_point_dir` (``buffer/<gen>/`` keeps its generation number). Returns the folder."""
    dst = branch_point_dir(run_dir, epoch)
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    copy_sparse(ckpt_path, os.path.join(tmp, CKPT_FILE))
    copy_tree_sparse(replay_dir, os.path.join(tmp, "buffer", os.path.basename(os.path.normpath(replay_dir))))
    if os.path.exists(metrics_csv):
        copy_sparse(metrics_csv, os.path.join(tmp, METRICS_FILE))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    fsync_dir(os.path.dirname(dst))
    return dst


class BranchPoints:
    """``post_epoch`` hook: a branch point after every ``every``-th epoch (after its ``latest.pt``)."""

    def __init__(self, every: int):
        if every < 0:
            raise ValueError(f"--branch_every must be >= 0, got {every}")
        self.every = every

    def __call__(self, trainer, record: dict) -> None:
        if self.every and trainer.epoch % self.every == 0:
            ckpts = trainer.checkpoints
            save_branch_point(trainer.run_dir, ckpts.path("latest"), ckpts.generations.path(ckpts.gen),
                              trainer.logger.csv_path, trainer.epoch)


def start_from_branch(branch_dir: str, run_dir: str, config: dict) -> dict[str, tuple] | None:
    """Make ``run_dir`` (no checkpoint yet) a copy of the branch point ``branch_dir`` whose checkpoint carries
    ``config``; returns the settings that differ from the branch point's (``{flag: (old, new)}``, also written to
    ``<run_dir>/branched_from.json``). When ``run_dir`` already has a checkpoint (the branched run was stopped and
    is resumed) nothing is copied and None is returned.

    The checkpoint is written last: a kill during the copy leaves no checkpoint, and the next start copies again."""
    latest = os.path.join(run_dir, "ckpts", CKPT_FILE)
    if os.path.exists(latest):
        return None
    src = os.path.join(branch_dir, CKPT_FILE)
    if not os.path.isdir(branch_dir) or not os.path.exists(src):
        raise CheckpointError(f"--branch_from {branch_dir}: not a branch point (expected {src}; branch points are "
                              f"written by a run with --branch_every N to <run>/{BRANCHES_DIR}/epoch_<E>)")
    ckpt = load_checkpoint(src)
    gen = ckpt.get("replay_generation")
    if gen is None or "replay" not in ckpt:
        raise CheckpointError(f"--branch_from {branch_dir}: {src} names no replay (branch points of a torchrun "
                              f"run are not supported)")
    replay_src = os.path.join(branch_dir, "buffer", str(gen))
    if not os.path.isdir(replay_src):
        raise CheckpointError(f"--branch_from {branch_dir}: replay folder {replay_src} is missing")
    replay_dst = os.path.join(run_dir, "buffer", str(gen))
    shutil.rmtree(replay_dst, ignore_errors=True)  # a copy cut short by a kill
    copy_tree_sparse(replay_src, replay_dst)
    metrics = os.path.join(branch_dir, METRICS_FILE)
    if os.path.exists(metrics):
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
        copy_sparse(metrics, os.path.join(run_dir, "logs", METRICS_FILE))
    changes = config_changes(ckpt["config"], config)
    ckpt.pop("format")
    ckpt.pop("cql_resolved", None)  # an older branch point's conservative term: the branch's own flags decide
    ckpt.pop(BEST_EVAL, None)  # the branch keeps its own best eval
    ckpt["config"] = dict(config)
    with open(os.path.join(run_dir, BRANCHED_FROM), "w") as f:
        json.dump({"branch_from": branch_dir, "counters": ckpt["counters"],
                   "changes": {k: list(v) for k, v in changes.items()}}, f, default=str)
    save_checkpoint(latest, ckpt)
    shown = ", ".join(f"--{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items())) or "none"
    print(f"branched from {branch_dir} (epoch {ckpt['counters']['epoch']}, {ckpt['counters']['grad_steps']} "
          f"updates); changed settings: {shown}", file=sys.stderr, flush=True)
    return changes


def with_new_target_copies(module, state: dict) -> dict:
    """``state`` plus, for each target copy of the encoders the module has and ``state`` lacks (a branch with
    ``--target_encoders`` from a branch point made without), the online weights it copies: entry
    ``target_backbone_params.<path>`` <- ``<path>``, as a fresh loss initialises its targets."""
    prefix = "target_backbone_params."
    missing = {k: k[len(prefix):] for k in module.state_dict() if k.startswith(prefix) and k not in state}
    if not missing or any(src not in state for src in missing.values()):
        return state
    return {**state, **{k: state[src] for k, src in missing.items()}}


def _branching_init(init, branch_every: int, branch_from: str | None):
    def __init__(self, config, *args, **kwargs):
        run_dir = os.path.join(config.buffer_dir, config.run_name)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--branch_every / --branch_from: single-process runs only (not under torchrun)")
        if branch_from and os.path.commonpath([os.path.abspath(branch_from), os.path.abspath(run_dir)]) == \
                os.path.abspath(run_dir):
            raise ValueError(f"--branch_from {branch_from} lies inside this run's folder {run_dir}: a branched run "
                             f"needs its own --run_name")
        branched = start_from_branch(branch_from, run_dir, config.to_dict()) if branch_from else None
        init(self, config, *args, **kwargs)
        if branched is not None:  # a target copy the branch point lacks starts from the online encoders
            path = self.checkpoints.path("latest")
            ckpt = load_checkpoint(path)
            state = with_new_target_copies(self.loss, ckpt["loss"])
            if state is not ckpt["loss"]:
                ckpt.pop("format")
                save_checkpoint(path, {**ckpt, "loss": state})
        if branch_every:
            self.register_hook("post_epoch", BranchPoints(branch_every))
    return __init__


@contextlib.contextmanager
def branching(branch_every: int = 0, branch_from: str | None = None):
    """Within the block every `AMAGOTrainer` built starts from the branch point `branch_from` (if given, through
    :func:`start_from_branch`; its `resume()` then loads it) and writes a branch point every `branch_every` epochs."""
    BranchPoints(branch_every)  # checks the value
    original = AMAGOTrainer.__init__
    AMAGOTrainer.__init__ = _branching_init(original, branch_every, branch_from)
    try:
        yield
    finally:
        AMAGOTrainer.__init__ = original


def run_example(example: str, argv: list[str], branch_every: int = 0, branch_from: str | None = None):
    """`examples/<example>.py`'s `main(argv)` with branching; returns its summary."""
    with branching(branch_every, branch_from):
        return load_example(example).main(argv)


def main(argv=None):
    argv, example_flags = split_argv(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("example", help="the example to run, e.g. 04_tmaze (its flags after --)")
    p.add_argument("--branch_every", type=int, default=0, help="a branch point after every N epochs (0: none)")
    p.add_argument("--branch_from", default=None, help="start a new run from <run>/branches/epoch_<E>")
    args = p.parse_args(argv)
    return run_example(args.example, example_flags, args.branch_every, args.branch_from)


if __name__ == "__main__":
    main()
