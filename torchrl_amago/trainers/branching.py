"""Branch points: copies of a run (checkpoint + replay + metrics) from which other runs start under other settings.

``--branch_every N`` copies, after every N-th epoch's checkpoint, ``ckpts/latest.pt``, the replay generation it
names and ``logs/metrics.csv`` into ``<run>/branches/epoch_<E>/`` (published by one rename, so a folder that exists
is whole). The replay's memmaps are copied sparsely (their unwritten tail takes no disk).

``--branch_from <run>/branches/epoch_<E>`` makes a *new* run (its own ``--run_name``) start from that copy: the
weights, optimizer, PopArt statistics, exploration schedule, counters, RNG states, replay and the metrics rows of
epochs < E come from the branch point; every setting comes from the new command line, loss and return settings
included (a plain resume refuses those). A change the weights do not fit (another model size) is refused by the
weight load, naming the mismatched keys. ``benchmarks/branch_run.py`` runs several such variants from one branch
point and prints their curves side by side.
"""
from __future__ import annotations

import os
import shutil
import sys

from ..data.replay_persist import fsync_dir
from .best_eval import BEST_EVAL
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .resume_config import CQL_RESOLVED, config_changes

BRANCHES_DIR = "branches"
CKPT_FILE = "latest.pt"
METRICS_FILE = "metrics.csv"
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


def start_from_branch(branch_dir: str, run_dir: str, config: dict) -> dict[str, tuple] | None:
    """Make ``run_dir`` (no checkpoint yet) a copy of the branch point ``branch_dir`` whose checkpoint carries
    ``config``; returns the settings that differ from the branch point's (``{flag: (old, new)}``). When ``run_dir``
    already has a checkpoint (the branched run was stopped and is resumed) nothing is copied and None is returned.

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
    changes.pop("branch_from", None)
    ckpt.pop("format")
    ckpt.pop(CQL_RESOLVED, None)  # the branch's own flags resolve its conservative term on resume
    ckpt.pop(BEST_EVAL, None)  # the branch keeps its own best eval (best_eval.py)
    ckpt["config"] = dict(config)
    save_checkpoint(latest, ckpt)
    shown = ", ".join(f"--{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items())) or "none"
    print(f"branched from {branch_dir} (epoch {ckpt['counters']['epoch']}, {ckpt['counters']['grad_steps']} "
          f"updates); changed settings: {shown}", file=sys.stderr, flush=True)
    return changes


__all__ = ["BRANCHES_DIR", "branch_point_dir", "copy_sparse", "copy_tree_sparse", "save_branch_point",
           "start_from_branch"]
