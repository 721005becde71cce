"""A run's checkpoints: ``<run>/ckpts/<tag>.pt`` (model, optimizer, schedule, exploration, counters, RNG, config,
best eval) and the replay's generation folders, committed together (:class:`RunCheckpoints`: the trainer's ``save``
and ``resume``; docs/api/trainers.md).

Files are read without unpickling code (:func:`torchrl_amago.data.safe_files.load_tensors`): a crafted ``.pt``
raises ``CheckpointError`` naming the file. The live replay is ``<run>/buffer/<gen>/storage/*.memmap`` (+ ``undo/``:
rows of the last checkpoint saved before a write overwrote them); ``latest.pt`` carries its table
(``data/replay_persist.py``) and is written last, after the memmaps are fsynced, so one rename commits both. A resume
re-attaches the generation it names, in place; other generations are deleted once a newer checkpoint is durable,
never by a failed resume. Under torchrun every rank keeps its own replay (``buffer_rank<r>``; rank r > 0 writes its
table to ``ckpts/replay_rank<r>_e<epoch>_g<grad_steps>.pt``, which rank 0's ``latest.pt`` names); on resume rank r
takes old rank ``r % old_world_size``'s replay, copied when it is another rank's (docs/scaling.md).
"""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import torch

from ...data import make_sequence_replay
from ...data.replay_persist import (STORAGE_DIR, ReplayStateError, UndoLog, fsync_dir, replay_state, restore_replay,
                                    sync_storage)
from ...data.safe_files import UnsafeFileError, load_tensors
from .guards import check_finite_state
from .resume_config import apply_optimizer_settings, check_resume_config, current_config

FORMAT = "torchrl_amago.checkpoint.v1"
REQUIRED = ("format", "loss", "optimizer", "scheduler", "counters", "config")
BEST_EVAL = "best_eval"  # the best periodic eval's record in latest.pt and best.pt (best_eval.py)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the current run."""


def rng_state() -> dict:
    """RNG states as plain tensors / ints / tuples (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                       "gauss": gauss}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


def fault_point(name: str) -> None:
    """Named step of a checkpoint write; tests replace it to inject a crash there (see test_reliability)."""


def save_checkpoint(path: str, payload: dict) -> None:
    """Atomic, durable write (tmp file + fsync + rename + directory fsync): a crash at any point leaves
    either the old file or the new one, never a truncated one."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        fault_point("checkpoint_tmp_written")
        f.flush()
        os.fsync(f.fileno())
    fault_point("checkpoint_tmp_synced")
    os.replace(tmp, path)
    fsync_dir(folder)
    fault_point("checkpoint_renamed")


def load_checkpoint(path: str, required: tuple[str, ...] = REQUIRED) -> dict:
    """Read a checkpoint (or another rank's replay file, with its own `required` entries) without unpickling code."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = load_tensors(path)
    except UnsafeFileError as e:  # a crafted, foreign or damaged file: refused before anything was unpickled
        raise CheckpointError(f"checkpoint {path} is corrupt or holds objects other than tensors and plain values; "
                              f"it was not loaded ({str(e).removeprefix(f'{path} ')})") from e
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchrl_amago checkpoint (expected format {FORMAT!r})")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks entries {missing}")
    return ckpt


def load_module_state(module: torch.nn.Module, state: dict, what: str, path: str) -> None:
    """load_state_dict with an error that names mismatched keys/shapes instead of a raw traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        msg = [f"checkpoint {path} does not match the current {what} (was it made with another config?)"]
        if missing:
            msg.append(f"missing keys: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            msg.append(f"unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            msg.append("shape mismatches: " + "; ".join(shapes[:8]))
        raise CheckpointError("\n  ".join(msg))
    module.load_state_dict(state)


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
        fault_point("replay_before_sync")
        sync_storage(rb)
        fault_point("replay_synced")
        self.undo.protect(rb._writer.index.write_count)  # from now on these rows are saved before overwriting
        return {"replay_generation": gen, "replay": replay_state(rb)}

    def remove_others(self, keep: int) -> None:
        """After a durable checkpoint: drop the undo files of older checkpoints and the other generations."""
        self.undo.discard_except(self.undo.protected)
        fault_point("undo_discarded")
        for gen in self.existing():
            if gen != keep:
                shutil.rmtree(self.path(gen), ignore_errors=True)
                fault_point("generation_removed")


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


class RunCheckpoints:
    """The checkpoints of the run in ``run_dir``: what ``AMAGOTrainer.save`` and ``AMAGOTrainer.resume`` do.

    A run that finds ``ckpts/latest.pt`` at its start never overwrites it before it has resumed it."""

    def __init__(self, run_dir: str, dist):
        self.run_dir, self.dist = run_dir, dist
        self.dir = os.path.join(run_dir, "ckpts")
        self.resuming = os.path.exists(self.path("latest"))
        self.latest_is_ours = not self.resuming
        self.generations = ReplayGenerations(dist.rank_path(os.path.join(run_dir, "buffer")))  # one replay per rank
        self.gen = self.generations.fresh()

    def path(self, tag: str) -> str:
        return os.path.join(self.dir, f"{tag}.pt")

    def new_replay(self, *args, **kwargs):
        """`make_sequence_replay(*args, **kwargs)` keeping its memmaps in this process's fresh generation folder."""
        replay = make_sequence_replay(*args, scratch_dir=self.generations.storage_dir(self.gen), **kwargs)
        self.generations.attach(replay, self.gen)
        return replay

    def save(self, trainer, tag: str = "latest") -> str:
        path = self.path(tag)
        check_finite_state(trainer.loss.state_dict(), f"checkpoint {path}")
        latest = tag == "latest"
        if latest and not self.latest_is_ours and os.path.exists(path):
            raise CheckpointError(f"{path} exists and was not resumed by this trainer; call resume() first (or use "
                                  f"another --run_name) so the run's checkpoint and replay are not overwritten")
        if latest:
            trainer.collection.before_checkpoint(trainer)  # async: every batch delivered is in the checkpoint
        payload = {
            "loss": trainer.loss.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "exploration": trainer.exploration.state_dict() if trainer.exploration is not None else None,
            "counters": {"epoch": trainer.epoch, "env_steps": trainer.env_steps, "grad_steps": trainer.grad_steps},
            "rng": rng_state(),
            "config": trainer.cfg.to_dict(),
            BEST_EVAL: trainer.best_eval.state(),
        }
        if latest:
            payload.update(commit_rank_replays(self.dist, self.generations, trainer.replay, self.gen, self.dir,
                                               trainer.epoch, trainer.grad_steps))  # memmaps fsynced
        if self.dist.is_main:
            save_checkpoint(path, payload)  # the file is the manifest: written last, by one rename
        if latest:
            self.dist.barrier()  # rank 0's file names every rank's new replay before old ones go
            self.latest_is_ours = True
            self.generations.remove_others(self.gen)
            remove_old_rank_files(self.dist, self.dir, trainer.epoch, trainer.grad_steps)
        return path

    def resume(self, trainer, tag: str = "latest") -> bool:
        path = self.path(tag)
        if not os.path.exists(path):
            self.dist.check_same_counters(False, 0, path)
            return False
        ckpt = load_checkpoint(path)
        check_resume(ckpt, trainer.cfg, path)  # refuses unsafe config changes, listing them
        load_module_state(trainer.loss, ckpt["loss"], "model", path)
        try:
            trainer.optimizer.load_state_dict(ckpt["optimizer"])
            trainer.scheduler.load_state_dict(ckpt["scheduler"])
            if trainer.exploration is not None and ckpt.get("exploration") is not None:
                trainer.exploration.load_state_dict(ckpt["exploration"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer/schedule/exploration state does not match ({e})") from e
        apply_optimizer_settings(trainer.optimizer, trainer.scheduler, trainer.cfg.learning_rate, trainer.cfg.l2_coeff)
        c = ckpt["counters"]
        trainer.epoch, trainer.env_steps, trainer.grad_steps = c["epoch"], c["env_steps"], c["grad_steps"]
        # the envs restart fresh trials, so partial returns of the cut trials are dropped (their steps are kept)
        trainer.collection.on_resume()
        self.gen = restore_rank_replay(self.dist, self.generations, trainer.replay, ckpt, path, self.gen,
                                       os.path.join(self.run_dir, "buffer"))
        # trials in progress at the checkpoint (their stored steps are kept) are closed as shorter finished trials:
        # the restarted collectors begin new trials and number their trajectories from 0 again
        trainer.partial_trials_closed = trainer.replay.end_trials()
        trainer.logger.drop_records_after(trainer.epoch)  # rows logged after this checkpoint (a kill before save)
        trainer.best_eval.load_state(ckpt.get(BEST_EVAL))
        set_rng_state(ckpt["rng"])
        self.dist.reseed(trainer.cfg.seed, step=trainer.grad_steps)
        self.dist.check_same_counters(True, trainer.grad_steps, path)
        self.latest_is_ours = True
        return True


def check_resume(ckpt: dict, cfg, path: str) -> dict:
    """`check_resume_config` between the checkpoint's settings (in today's flags, `current_config`) and `cfg`."""
    try:
        return check_resume_config(current_config(ckpt, path), cfg.to_dict(), path)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
