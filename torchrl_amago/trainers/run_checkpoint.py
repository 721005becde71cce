"""The replay side of a run checkpoint: generation folders, commit payload, resume, clean-up.

Layout: ``<run>/buffer/<gen>/storage/*.memmap`` (the live replay) and ``<run>/buffer/<gen>/undo/`` (rows of the
last checkpoint saved before a write overwrote them).
``latest.pt`` carries the replay's table and layout (``data/replay_persist.py``) next to the counters, so one
rename commits both; it is written last, after the memmaps are fsynced. Resuming re-attaches the generation
the checkpoint names, in place (no copy); a fresh run gets a new generation. Generations that the newest
durable checkpoint does not name are deleted right after it is written; a failed resume deletes nothing.

Under torchrun every rank keeps its own replay (``buffer`` for rank 0, ``buffer_rank<r>``): rank r > 0 writes its
table to ``ckpts/replay_rank<r>_e<epoch>_g<grad_steps>.pt`` before rank 0 writes ``latest.pt``, which names those
files and every rank's generation; a rank's older files go once the new ``latest.pt`` is durable. On resume rank
r takes old rank ``r % old_world_size``'s replay: in place when it is its own, else as a copy (more ranks than
before); on fewer ranks the dropped ranks' replays are not loaded (``docs/scaling.md``).
"""
from __future__ import annotations

import os
import shutil

from ..data.replay_persist import STORAGE_DIR, ReplayStateError, UndoLog, replay_state, restore_replay, sync_storage
from . import checkpoint as _ckpt
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .resume_config import check_resume_config, current_config


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
    """`check_resume_config` between the checkpoint's settings (in today's flags, `current_config`) and `cfg`."""
    try:
        return check_resume_config(current_config(ckpt, path), cfg.to_dict(), path)
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


REPLAY_REQUIRED = ("replay_generation", "replay")


def _rank_file(rank: int, epoch: int, grad_steps: int) -> str:
    return f"replay_rank{rank}_e{epoch}_g{grad_steps}.pt"


def commit_rank_replays(dist, gens: ReplayGenerations, rb, gen: int, ckpt_dir: str, epoch: int,
                        grad_steps: int) -> dict:
    """Every rank fsyncs its replay; ranks > 0 write their table to their own file. Returns the replay entries of
    rank 0's ``latest.pt`` (its own replay, every rank's generation and the other ranks' files)."""
    entry = gens.commit_payload(rb, gen)
    if dist.rank > 0:
        save_checkpoint(os.path.join(ckpt_dir, _rank_file(dist.rank, epoch, grad_steps)), entry)
    generations = dist.all_gather_int(gen)
    if dist.world_size > 1:
        entry["replay_generations"] = generations
        entry["replay_rank_files"] = [None] + [_rank_file(r, epoch, grad_steps) for r in range(1, dist.world_size)]
    return entry


def remove_old_rank_files(dist, ckpt_dir: str, epoch: int, grad_steps: int) -> None:
    """After a durable ``latest.pt``: this rank's replay files of older checkpoints."""
    if dist.rank == 0:
        return
    keep, prefix = _rank_file(dist.rank, epoch, grad_steps), f"replay_rank{dist.rank}_"
    for name in os.listdir(ckpt_dir):
        if name.startswith(prefix) and name != keep:
            os.remove(os.path.join(ckpt_dir, name))


def restore_rank_replay(dist, gens: ReplayGenerations, rb, ckpt: dict, path: str, current_gen: int,
                        run_buffer_root: str) -> int:
    """This rank's replay on resume (see the module docstring); returns the generation now in use."""
    files = ckpt.get("replay_rank_files") or [None]
    old = dist.rank % len(files)
    state, state_path = ckpt, path
    if old > 0:
        state_path = os.path.join(os.path.dirname(path), files[old])
        state = load_checkpoint(state_path, required=REPLAY_REQUIRED)
    source_root = dist.rank_path(run_buffer_root, old)
    if "replay" in state and os.path.abspath(source_root) != os.path.abspath(gens.root):
        source = os.path.join(source_root, str(state["replay_generation"]))  # another rank's: copy, never share
        if not os.path.isdir(source):
            raise CheckpointError(f"checkpoint {state_path} refers to replay data {source}, which is missing")
        shutil.copytree(source, gens.path(current_gen), symlinks=True, dirs_exist_ok=True)  # a link stays a link
        state = {**state, "replay_generation": current_gen}
    dist.barrier()  # every copy is taken before any rank restores its own replay in place
    return restore_run_replay(gens, rb, state, state_path, current_gen)
