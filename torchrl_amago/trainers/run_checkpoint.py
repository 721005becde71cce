"""The replay side of a run checkpoint: generation folders, commit payload, resume, clean-up.

Layout: ``<run>/buffer/<gen>/storage/*.memmap`` (the live replay) and ``<run>/buffer/<gen>/undo/`` (rows of the
last checkpoint saved before a write overwrote them).
``latest.pt`` carries the replay's table and layout (``data/replay_persist.py``) next to the counters, so one
rename commits both; it is written last, after the memmaps are fsynced. Resuming re-attaches the generation
the checkpoint names, in place (no copy); a fresh run gets a new generation. Generations that the newest
durable checkpoint does not name are deleted right after it is written; a failed resume deletes nothing.
"""
from __future__ import annotations

import os
import shutil

from ..data.replay_persist import STORAGE_DIR, ReplayStateError, UndoLog, replay_state, restore_replay, sync_storage
from . import checkpoint as _ckpt
from .checkpoint import CheckpointError
from .resume_config import check_resume_config


class ReplayGenerations:
    """Numbered replay folders under ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.undo: UndoLog | None = None
        os.makedirs(root, exist_ok=True)

    def existing(self) -> list[int]:
        return sorted(int(d) for d in os.listdir(self.root) if d.isdigit())

    def fresh(self) -> int:
        return 1 + max(self.existing(), default=-1)

    def path(self, gen: int) -> str:
        return os.path.join(self.root, str(gen))

    def storage_dir(self, gen: int) -> str:
        return os.path.join(self.path(gen), STORAGE_DIR)

    def attach(self, rb, gen: int) -> None:
        rb._storage.scratch_dir = self.storage_dir(gen)
        self.undo = UndoLog(rb, self.path(gen)).install()
        self.undo.protect(rb._writer.index.write_count)  # what a resumed checkpoint holds (0 for a fresh run)

    def commit_payload(self, rb, gen: int) -> dict:
        """fsync the memmaps, then return the replay entries of the checkpoint payload."""
        _ckpt.fault_point("replay_before_sync")
        sync_storage(rb)
        _ckpt.fault_point("replay_synced")
        self.undo.protect(rb._writer.index.write_count)  # from now on these rows are saved before overwriting
        return {"replay_generation": gen, "replay": replay_state(rb)}

    def remove_others(self, keep: int) -> None:
        """After a durable checkpoint: drop the undo files of older checkpoints and the other generations."""
        self.undo.discard_except(self.undo.protected)
        _ckpt.fault_point("undo_discarded")
        for gen in self.existing():
            if gen != keep:
                shutil.rmtree(self.path(gen), ignore_errors=True)
                _ckpt.fault_point("generation_removed")


def check_resume(ckpt: dict, cfg, path: str) -> dict:
    try:
        return check_resume_config(ckpt["config"], cfg.to_dict(), path)
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def restore_run_replay(gens: ReplayGenerations, rb, ckpt: dict, path: str, current_gen: int) -> int:
    """Attach the replay named by the checkpoint; return the generation now in use."""
    if "replay" not in ckpt:
        if ckpt.get("replay_generation") is not None:
            raise CheckpointError(f"checkpoint {path} stores its replay in TorchRL's pickle-based format (an older "
                                  f"torchrl_amago); it is not loaded, since loading it could run code. Start a new run")
        return current_gen
    gen = int(ckpt["replay_generation"])
    if not os.path.isdir(gens.path(gen)):
        raise CheckpointError(f"checkpoint {path} refers to replay data {gens.path(gen)}, which is missing")
    try:
        restore_replay(rb, ckpt["replay"], gens.path(gen))
    except (ReplayStateError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: replay in {gens.path(gen)} cannot be resumed: {e}") from e
    gens.attach(rb, gen)
    if current_gen != gen and not any(fs for _, _, fs in os.walk(gens.path(current_gen))):
        shutil.rmtree(gens.path(current_gen), ignore_errors=True)  # the unused, empty folder of this process
    return gen
