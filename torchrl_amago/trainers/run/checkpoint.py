"""A run's checkpoints, ``<run>/ckpts/<tag>.pt``, and the replay's generation folders, committed together
(:class:`RunCheckpoints`; the contract: docs/api/trainers.md); files are read without unpickling."""
from __future__ import annotations

import inspect
import json
import math
import os
import random
import shutil
import uuid

import numpy as np
import torch

from ...data import make_sequence_replay
from ...data.replay_persist import (STORAGE_DIR, ReplayStateError, UndoLog, fsync_dir, replay_state, restore_replay,
                                    sync_storage, validate_replay_state, write_durably)
from ...data.safe_files import UnsafeFileError, load_json, load_tensors
from .guards import check_finite_state
from .resume_config import check_resume_config, current_config

FORMAT = "torchrl_amago.checkpoint.v1"
REQUIRED = ("format", "loss", "optimizer", "scheduler", "counters", "config")
BEST_EVAL = "best_eval"  # the best periodic eval's record (best_eval.py)
STEPS_OFFSET = "env_steps_offset"  # env steps counted beyond ranks x replay writes (RunCheckpoints.steps_offset)


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


def set_rng_state(state: dict, gens: tuple | None = None) -> None:
    """Set the torch, numpy and Python generators `gens` (default: the global ones) to `state`."""
    torch_gen, np_gen, py_gen = gens or (torch.default_generator, np.random, random)
    torch_gen.set_state(state["torch"])
    n, p = state["numpy"], state["python"]
    np_gen.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py_gen.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


def fault_point(name: str) -> None:
    """Named step of a checkpoint write; tests replace it to inject a crash there (see test_reliability)."""


def save_checkpoint(path: str, payload: dict) -> None:
    """Atomic, durable write; a failed one raises CheckpointError naming `path` and keeps the previous file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            fault_point("checkpoint_tmp_written")
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = next((c for c in (e, e.__context__, e.__cause__) if isinstance(c, OSError)), e)
        raise CheckpointError(f"could not write checkpoint {path} ({str(cause).splitlines()[0][:200]}); the temporary "
                              f"file was removed and the last good checkpoint is kept") from e
    fault_point("checkpoint_tmp_synced")
    os.replace(tmp, path)
    fsync_dir(folder)
    fault_point("checkpoint_renamed")


def load_checkpoint(path: str, required: tuple[str, ...] = REQUIRED) -> dict:
    """Read a checkpoint (with its `required` entries) without unpickling code, through ``load_tensors`` (its
    declared sizes are checked before anything is decompressed)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = load_tensors(path)
    except UnsafeFileError as e:
        if "refused before reading it" in str(e):  # declared sizes
            raise CheckpointError(f"checkpoint {e}") from e
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


def _kind(t: torch.Tensor) -> str:
    return "bool" if t.dtype == torch.bool else "float" if t.is_floating_point() or t.is_complex() else "int"


def check_module_state(module: torch.nn.Module, state, what: str, path: str) -> None:
    """Raise CheckpointError naming what of `state` does not fit `module`, or a weight holding NaN/inf."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: the {what} state must be a dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    both = [k for k in own if k in state and isinstance(own[k], torch.Tensor)]
    odd = [k for k in both if not isinstance(state[k], torch.Tensor)]
    if odd:
        raise CheckpointError(f"checkpoint {path}: {what} entries {odd[:8]} are not tensors")
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} {state[k].dtype} vs model {tuple(own[k].shape)} {own[k].dtype}"
              for k in both if state[k].shape != own[k].shape or _kind(state[k]) != _kind(own[k])]
    if missing or unexpected or shapes:
        msg = [f"checkpoint {path} does not match the current {what} (was it made with another config?)"]
        msg += [f"{name} keys: {keys[:8]}{' ...' if len(keys) > 8 else ''}"
                for name, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        msg += ["shape mismatches: " + "; ".join(shapes[:8])] if shapes else []
        raise CheckpointError("\n  ".join(msg))
    bad = next((k for k in both if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path}: {what} weight {bad!r} holds NaN/inf; refused (resume or evaluate "
                              f"an earlier checkpoint)")


def load_module_state(module: torch.nn.Module, state: dict, what: str, path: str) -> None:
    """`module.load_state_dict(state)` after :func:`check_module_state`."""
    check_module_state(module, state, what, path)
    module.load_state_dict(state)


COMMITS = "commits.json"  # in a generation folder: the ids of the checkpoints that describe its data


def save_text(path: str, text: str) -> None:
    """Write a small text file atomically and durably."""
    write_durably(path, lambda f: f.write(text.encode()))


class ReplayGenerations:
    """Numbered replay folders under ``root``."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def existing(self) -> list[int]:
        return sorted(int(d) for d in os.listdir(self.root) if d.isdigit())

    def path(self, gen: int) -> str:
        return os.path.join(self.root, str(gen))


def _rank_file(rank: int, counters: dict) -> str:
    return f"replay_rank{rank}_e{counters['epoch']}_g{counters['grad_steps']}.pt"


class RunCheckpoints:
    """The checkpoints of the :class:`~.run_dir.RunDir` `run` and its replay's generation folders; a
    ``latest.pt`` found at the start is never overwritten before it is resumed."""

    def __init__(self, run, dist):
        self.run, self.run_dir, self.dist = run, run.path, dist
        self.dir = os.path.join(run.path, "ckpts")
        self.resuming = os.path.exists(self.path("latest"))
        self.latest_is_ours = not self.resuming
        if not self.resuming:
            run.keep(run.new_identity())
        elif run.identity is not None:
            run.check_settings(run.identity["settings"], "run.json")
        self.generations = ReplayGenerations(dist.rank_path(os.path.join(run.path, "buffer")))  # one per rank
        self.undo: UndoLog | None = None
        self.committed: str | None = None  # the commit id of the durable checkpoint
        # env steps the counters hold beyond (ranks x this rank's replay writes): nonzero once a run resumes on
        # another number of ranks (a rank's replay then holds a share of the counted steps, or a copy of another's)
        self.steps_offset = 0
        self.gen = 1 + max(self.generations.existing(), default=-1)

    def path(self, tag: str) -> str:
        return os.path.join(self.dir, f"{tag}.pt")

    def _attach(self, rb, gen: int) -> None:
        rb._storage.scratch_dir = os.path.join(self.generations.path(gen), STORAGE_DIR)
        self.undo = UndoLog(rb, self.generations.path(gen)).install()
        self.undo.protect(rb._writer.index.write_count)  # what a resumed checkpoint holds (0 for a fresh run)

    def new_replay(self, *args, **kwargs):
        """`make_sequence_replay(*args, **kwargs)` in this process's fresh generation folder."""
        replay = make_sequence_replay(*args, scratch_dir=os.path.join(self.generations.path(self.gen), STORAGE_DIR),
                                      **kwargs)
        self._attach(replay, self.gen)
        return replay

    def save(self, state: dict, replay, tag: str = "latest") -> str:
        """Write `state` (a trainer's ``state_dict()``, with its ``counters``) and the run's identity to
        ``ckpts/<tag>.pt``; ``latest`` also commits `replay` (fsynced first, named by the checkpoint). Returns the
        path."""
        path = self.path(tag)
        check_finite_state(state["loss"], f"checkpoint {path}")
        latest = tag == "latest"
        if latest and not self.latest_is_ours and os.path.exists(path):
            raise CheckpointError(f"{path} exists and was not resumed by this trainer; call resume() first (or use "
                                  f"another --run_name) so the run's checkpoint and replay are not overwritten")
        payload = {**state, "run": self.run.entry()}
        if latest:
            payload.update(self._commit_replay(replay, state["counters"]))
        if self.dist.is_main:
            save_checkpoint(path, payload)  # written last: the commit
        if latest:
            self.dist.barrier()  # rank 0's file names every rank's new replay before old ones go
            self.latest_is_ours, self.committed = True, payload["replay_commit"]
            self._prune_after_commit(state["counters"])
        return path

    def _commit_replay(self, replay, counters: dict) -> dict:
        """Every rank fsyncs its replay and records a new commit beside the durable one (which a failed save leaves
        in force); ranks > 0 write their table to their own file. Returns the entries of rank 0's ``latest.pt``."""
        rank, folder = self.dist.rank, self.generations.path(self.gen)
        fault_point("replay_before_sync")
        sync_storage(replay)
        fault_point("replay_synced")
        self.undo.protect(replay._writer.index.write_count)
        commit = uuid.uuid4().hex
        os.makedirs(folder, exist_ok=True)
        save_text(os.path.join(folder, COMMITS), json.dumps({"commits": [c for c in (self.committed, commit) if c]}))
        entry = {"replay_generation": self.gen, "replay": replay_state(replay), "replay_commit": commit}
        if self.steps_offset:
            entry[STEPS_OFFSET] = self.steps_offset
        if rank > 0:
            save_checkpoint(os.path.join(self.dir, _rank_file(rank, counters)), entry)
        generations = self.dist.all_gather_int(self.gen)
        if self.dist.world_size > 1:
            entry["replay_generations"] = generations
            entry["replay_rank_files"] = [None] + [_rank_file(r, counters) for r in range(1, self.dist.world_size)]
        return entry

    def _prune_after_commit(self, counters: dict) -> None:
        """After a durable ``latest.pt``: older undo files, the other generations, this rank's older replay files."""
        self.undo.discard_except(self.undo.protected)
        fault_point("undo_discarded")
        for gen in self.generations.existing():
            if gen != self.gen:
                shutil.rmtree(self.generations.path(gen), ignore_errors=True)
                fault_point("generation_removed")
        rank = self.dist.rank
        if rank > 0:
            for name in os.listdir(self.dir):
                if name.startswith(f"replay_rank{rank}_") and name != _rank_file(rank, counters):
                    os.remove(os.path.join(self.dir, name))

    def load(self, tag: str, check) -> tuple[dict, str, dict] | None:
        """``ckpts/<tag>.pt`` read safely and checked by `check(ckpt, path)` (which raises CheckpointError on anything
        that does not fit this run, and returns the identity the run goes on with): (ckpt, path, identity), or None
        if there is no such file."""
        path = self.path(tag)
        if not os.path.exists(path):
            self.dist.check_same_counters(False, 0, path)
            return None
        ckpt = load_checkpoint(path)
        return ckpt, path, check(ckpt, path)

    def resumed(self, replay, ckpt: dict, path: str, identity: dict) -> int:
        """After the trainer's state is restored from `ckpt`: re-attach the replay it names, go on as `identity`;
        returns how many open trials were closed (they end as shorter finished ones)."""
        self.restore_replay(replay, ckpt, path)
        self.steps_offset = ckpt["counters"]["env_steps"] - replay._writer.index.write_count * self.dist.world_size
        closed = replay.end_trials()
        self.run.keep(identity)
        self.dist.check_same_counters(True, ckpt["counters"]["grad_steps"], path)
        self.latest_is_ours = True
        return closed

    def restore_replay(self, rb, ckpt: dict, path: str) -> None:
        """Attach the replay a checkpoint names (rank r takes old rank ``r % old_world_size``'s, copied)."""
        files = ckpt.get("replay_rank_files") or [None]
        old = self.dist.rank % len(files)
        if old > 0:
            path = os.path.join(os.path.dirname(path), files[old])
            ckpt = load_checkpoint(path, required=("replay_generation", "replay"))
        source_root = self.dist.rank_path(os.path.join(self.run_dir, "buffer"), old)
        if "replay" in ckpt and os.path.abspath(source_root) != os.path.abspath(self.generations.root):
            source = os.path.join(source_root, str(ckpt["replay_generation"]))
            if not os.path.isdir(source):
                raise CheckpointError(f"checkpoint {path} refers to replay data {source}, which is missing")
            shutil.copytree(source, self.generations.path(self.gen), symlinks=True, dirs_exist_ok=True)
            ckpt = {**ckpt, "replay_generation": self.gen}
        self.dist.barrier()  # every copy is taken before any rank restores in place
        if "replay" not in ckpt:
            if ckpt.get("replay_generation") is not None:
                raise CheckpointError(f"checkpoint {path} stores its replay in TorchRL's pickle-based format (an older "
                                      f"torchrl_amago); it is not loaded, since loading it could run code. Start a new "
                                      f"run")
            return
        gen = int(ckpt["replay_generation"])
        folder = self.generations.path(gen)
        if not os.path.isdir(folder):
            raise CheckpointError(f"checkpoint {path} refers to replay data {folder}, which is missing")
        try:
            commits = load_json(os.path.join(folder, COMMITS)) if os.path.exists(os.path.join(folder, COMMITS)) else {}
            commits = list(commits.get("commits", [])) if isinstance(commits, dict) else []
            if "replay_commit" in ckpt and ckpt["replay_commit"] not in commits:
                raise ReplayStateError(f"it names replay commit {ckpt['replay_commit']!r}, but {COMMITS} there records "
                                       f"{commits}: the folder holds other data than the checkpoint describes (a "
                                       f"checkpoint of another state of the run)")
            restore_replay(rb, ckpt["replay"], folder)
            self.committed = ckpt.get("replay_commit")
        except (ReplayStateError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: replay in {folder} cannot be resumed: {e}") from e
        self._attach(rb, gen)
        if self.gen != gen and not any(fs for _, _, fs in os.walk(self.generations.path(self.gen))):
            shutil.rmtree(self.generations.path(self.gen), ignore_errors=True)
        self.gen = gen


def check_resume(ckpt: dict, cfg, path: str) -> dict:
    """`check_resume_config` between the checkpoint's settings (in today's flags, `current_config`) and `cfg`."""
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"checkpoint {path}: entry 'config' must be a dict of flags, got {ckpt.get('config')!r}")
    try:
        return check_resume_config(current_config(ckpt, path), cfg.to_dict(), path)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    except RecursionError:
        raise CheckpointError(f"checkpoint {path}: entry 'config' nests its values deeper than a config does; "
                              f"refused") from None


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_checkpoint(ckpt: dict, path: str, tag: str, *, run, cfg, loss, optimizer, replay, metrics) -> dict:
    """Check everything of `ckpt` a resume uses against the run folder `run`, the config, the loss and optimizer
    it is loaded into, the `replay` and the `metrics` logger (CheckpointError naming the field); returns the
    identity the run goes on with."""
    def refuse(msg):
        raise CheckpointError(f"checkpoint {path}: {msg}")

    identity = run.identity_of(ckpt.get("run"), path)
    check_resume(ckpt, cfg, path)
    c = ckpt["counters"]
    if not isinstance(c, dict) or not all(_count(c.get(k)) for k in ("epoch", "env_steps", "grad_steps")):
        refuse(f"counters must hold epoch, env_steps and grad_steps as integers >= 0, got {c!r}")
    check_module_state(loss, ckpt["loss"], "model", path)
    check_optimizer_state(optimizer, ckpt["optimizer"], dict(loss.named_parameters()), path)
    planned = ckpt.get("schedule_updates", 0)
    if not _count(planned):
        refuse(f"schedule_updates must be an integer >= 0, got {planned!r}")
    sched = ckpt["scheduler"]
    if not isinstance(sched, dict) or sched.get("last_epoch") != c["grad_steps"]:
        refuse(f"scheduler.last_epoch is {sched.get('last_epoch') if isinstance(sched, dict) else sched!r}, "
               f"counters.grad_steps {c['grad_steps']}: they must be equal")
    try:
        set_rng_state(ckpt["rng"], (torch.Generator(), np.random.RandomState(), random.Random()))
    except Exception as e:  # noqa: BLE001
        refuse(f"entry 'rng' is not a random-generator state ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    best = ckpt.get(BEST_EVAL)
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("value"), (int, float))
                                 and not math.isnan(best["value"])):
        refuse(f"best_eval must hold a score ('value', a number), got {best!r}")
    if "replay" in ckpt:
        gen = ckpt.get("replay_generation")
        if not _count(gen):
            refuse(f"replay_generation must be an integer >= 0, got {gen!r}")
        try:
            validate_replay_state(replay, ckpt["replay"], "the checkpoint's replay")
        except ReplayStateError as e:
            refuse(f"replay: {e}")
        ranks = len(ckpt.get("replay_rank_files") or [None])
        stored = ckpt["replay"]["writer"]["index"]["write_count"]
        offset = ckpt.get(STEPS_OFFSET, 0)
        if not isinstance(offset, int) or isinstance(offset, bool):
            refuse(f"{STEPS_OFFSET} must be an integer, got {offset!r}")
        if c["env_steps"] != stored * ranks + offset:
            refuse(f"counters.env_steps is {c['env_steps']}, but the replay holds {stored} written steps"
                   f"{f' on each of {ranks} ranks' if ranks > 1 else ''}"
                   f"{f' and {offset} counted before the rank count changed' if offset else ''}: the counters do not "
                   f"match the stored data")
    rows = {r["epoch"]: r for r in getattr(metrics, "records", []) if "epoch" in r}
    if tag == "latest" and getattr(metrics, "records", None) and not rows:
        refuse(f"{metrics.csv_path} has no 'epoch' column, so its rows cannot be matched with the checkpoint's "
               f"counters; move it away (or restore its header) to resume the run")
    if tag == "latest" and rows:  # metrics.csv ends with epoch E - 1 (async may store more steps before saving)
        last = rows.get(c["epoch"] - 1)
        if max(rows) > c["epoch"] or (last["grad_steps"] != c["grad_steps"] or last["env_steps"] > c["env_steps"]
                                      if last else not metrics.cut_row):
            refuse(f"counters (epoch {c['epoch']}, env_steps {c['env_steps']}, grad_steps {c['grad_steps']}) do not "
                   f"match {metrics.csv_path} (epochs up to {max(rows):g}; at the end of epoch "
                   f"{c['epoch'] - 1}: {last and {k: last[k] for k in ('env_steps', 'grad_steps')}})")
    return identity


#: param-group entries a resume writes from the config (the learner's ``apply_optimizer_settings``); every other
#: one must equal what the run's config builds
OPTIMIZER_REWRITTEN = frozenset({"params", "param_names", "lr", "initial_lr", "weight_decay", "capturable"})


def _plain(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _state_keys(optimizer) -> set | None:
    """The state entries `optimizer`'s class keeps per parameter with its defaults (one step on a scratch copy)."""
    try:
        p = torch.zeros(1, requires_grad=True)
        p.grad = torch.zeros(1)
        accepted = inspect.signature(type(optimizer).__init__).parameters
        scratch = type(optimizer)([p], **{k: v for k, v in optimizer.defaults.items() if k in accepted})
        scratch.step()
        return set(scratch.state[p])
    except Exception:  # noqa: BLE001 - an optimizer that cannot be built this way: its entries are not compared
        return None


def check_optimizer_state(optimizer, state, named: dict, path: str) -> None:
    """A checkpoint's optimizer state against the freshly built `optimizer` and the parameters: each group's
    settings (``maximize``, ``betas``, ``eps``, ``amsgrad``, ``fused`` ...) as the config builds them, one entry per
    parameter holding the class's state keys, each tensor of its parameter's shape and finite, ``step`` an integer
    >= 0 and second moments >= 0."""
    names = {id(p): n for n, p in named.items()}
    groups, saved = optimizer.param_groups, state.get("param_groups") if isinstance(state, dict) else None
    now = [len(g["params"]) for g in groups]
    if not isinstance(saved, list) or [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in saved] != now:
        raise CheckpointError(f"checkpoint {path}: optimizer.param_groups does not hold {now} parameters per group")
    for gi, (g, s) in enumerate(zip(groups, saved)):
        for k in sorted(set(s) - OPTIMIZER_REWRITTEN):
            if k not in g or _plain(s[k]) != _plain(g[k]):
                raise CheckpointError(f"checkpoint {path}: optimizer.param_groups[{gi}][{k!r}] is {s[k]!r}, but the "
                                      f"run's config builds {g.get(k, 'no such setting')!r}; refused")
    params = {i: p for g, s in zip(groups, saved) for i, p in zip(s["params"], g["params"])}
    entries, keys = state.get("state"), _state_keys(optimizer)
    if not isinstance(entries, dict):
        raise CheckpointError(f"checkpoint {path}: optimizer.state must be a dict")
    for i, entry in entries.items():
        p = params.get(i)
        if p is None or not isinstance(entry, dict):
            raise CheckpointError(f"checkpoint {path}: optimizer.state[{i!r}] names no parameter of the model")
        if keys is not None and set(entry) != keys:
            raise CheckpointError(f"checkpoint {path}: optimizer state of {names.get(id(p), f'parameter {i}')} holds "
                                  f"{sorted(entry)}, {type(optimizer).__name__} keeps {sorted(keys)}")
        for k, v in entry.items():
            where = f"optimizer state {k!r} of {names.get(id(p), f'parameter {i}')}"
            if not isinstance(v, torch.Tensor):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step":
                    continue
                v = torch.tensor(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                if not isinstance(v, torch.Tensor):
                    raise CheckpointError(f"checkpoint {path}: {where} is {v!r}, not a tensor")
            if v.dim() and (tuple(v.shape) != tuple(p.shape) or not v.is_floating_point()):
                raise CheckpointError(f"checkpoint {path}: {where} is {v.dtype} {tuple(v.shape)}, the parameter "
                                      f"{p.dtype} {tuple(p.shape)}")
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"checkpoint {path}: {where} holds NaN/inf")
            if k == "step" and (v.numel() != 1 or v.is_complex() or v.item() < 0 or v.item() != int(v.item())):
                raise CheckpointError(f"checkpoint {path}: {where} is {v.tolist()!r}, not a count of steps >= 0")
            if k.endswith("_sq") and bool((v < 0).any()):
                raise CheckpointError(f"checkpoint {path}: {where} holds negative values (a second moment is >= 0)")
