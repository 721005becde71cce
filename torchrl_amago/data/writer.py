"""TrialWriter: writes collector batches step by step into a circular storage and tracks trial membership.

A TorchRL collector on a batched env yields ``[N, T]`` TensorDicts (``[T]`` for an unbatched env); a trial
of one env continues across batches and ends at ``("next", "done")``. Every step is written at once (FIFO,
one storage write per batch), and :class:`~torchrl_amago.data.trial_index.TrialIndex` records which steps
belong to which trial, so the in-progress part of every env's trial is already on disk: a checkpoint taken
between two batches loses nothing, and windows never mix trials of different envs.

Which stored trial a row of a new batch continues:

- **By trajectory id** (when the data carries the collector's ``("collector", "traj_ids")``, as every TorchRL
  collector writes; ids are unique across the workers of ``MultiSyncCollector`` / ``MultiAsyncCollector``).
  The open (in-progress) trials are a map *trajectory id -> unit*. A row whose first step's id has an open
  unit continues it, whatever row, worker or batch it arrives in, so batches from different workers may
  interleave in any order and every trial is still stored whole. ``done`` ends a trial; an ``is_init`` step
  always starts a new one (an open unit with the same id is then closed as it stands); a change of id inside
  a row starts a new one. Trajectory ids restart at 0 in a new collector: call :meth:`TrialWriter.end_trials`
  when the collector changes (e.g. after restoring a checkpoint), which keeps the partial trials as shorter
  finished ones (without it, an open unit is closed when its id reappears in a later batch without
  continuing it). A trial that stops without ``done`` at the end of a row, its env resetting at the start of
  its next row (e.g. ``reset_at_each_iter=True``), cannot be told apart from one in flight: it stays open
  until then.
- **By row** (data without trajectory ids): the open trial of row *i* continues in row *i* of the next batch,
  which must have the same number of rows while any trial is open.

Padded batches (``Collector(split_trajs=True)``: one trajectory per row, right-padded with zeros, valid steps
marked by ``("collector", "mask")``): only the valid steps are written, in row order, and the mask itself is not
stored. Such rows are trajectories, not envs, so they need trajectory ids.

Hooks: :meth:`TrialWriter.register_write_hook` registers ``hook(first_position, steps)``, called before every
storage write with the global write position of its first step and its number of steps (e.g. an undo log that
saves the rows about to be overwritten); it returns a handle whose ``remove()`` unregisters it.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from tensordict import LazyStackedTensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch.utils.hooks import RemovableHandle
from torchrl.data.replay_buffers.writers import Writer

from .. import keys as K
from .safe_files import load_tensors
from .trial_index import TrialIndex, check_index_state

WriteHook = Callable[[int, int], None]


def plan_pieces(
    done: torch.Tensor,
    init: torch.Tensor | None,
    open_unit: torch.Tensor,
    open_len: torch.Tensor,
    max_len: int | None,
    traj: torch.Tensor | None = None,
    open_traj: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Split ``[N, T]`` rows into pieces that each belong to one unit (vectorised, no per-env loop).

    A new unit starts after a ``done``, at an ``is_init`` step, where the collector's trajectory id changes
    (``traj`` [N, T]; ``open_traj`` [N] is the id of each env's open unit), at the start of a row whose env has
    no open unit, and (with ``max_len``) every ``max_len`` steps of a unit. Each row start is also a piece start
    (rows of different envs are adjacent in storage but belong to different trials).
    ``valid`` [N, T] (optional): each row's valid steps, a non-empty prefix of the row; the padding after them is
    left out (positions then count valid steps only).
    Returns flat positions ``pos`` (row-major), ``length``, ``row``, ``is_new`` (piece opens a new unit),
    ``ends_done``, ``cut`` (a later piece of the same row closes this unit) and ``closes_open`` ([N]: the
    env's open unit does not continue in this batch).
    """
    n_env, t_len = done.shape
    t = torch.arange(t_len)
    start = torch.zeros_like(done)
    start[:, 1:] = done[:, :-1]
    if init is not None:
        start |= init
    start[:, 0] |= open_unit < 0
    if traj is not None:
        start[:, 1:] |= traj[:, 1:] != traj[:, :-1]
        if open_traj is not None:
            start[:, 0] |= traj[:, 0] != open_traj
    if valid is not None:
        start &= valid
    if max_len is not None:
        last_start = torch.cummax(torch.where(start, t, -1), dim=1).values
        offset = torch.where(last_start >= 0, t - last_start, open_len[:, None] + t)
        snip = (offset > 0) & (offset % max_len == 0)
        start |= snip if valid is None else snip & valid
    piece = start.clone()
    piece[:, 0] = True
    if valid is not None:
        piece[:, 1:] |= valid[:, :-1] & ~valid[:, 1:]  # the padding of a row is a piece of its own, left out
    pos = piece.reshape(-1).nonzero().squeeze(-1)
    length = torch.diff(pos, append=torch.tensor([n_env * t_len]))
    end = pos + length - 1
    row_end = t_len - 1 if valid is None else valid.sum(1)[pos // t_len] - 1
    plan = {
        "pos": pos,
        "length": length,
        "row": pos // t_len,
        "is_new": start.reshape(-1)[pos],
        "ends_done": done.reshape(-1)[end],
        "cut": (end % t_len) < row_end,
        "closes_open": (open_unit >= 0) & start[:, 0],
    }
    if valid is not None:
        flat_valid = valid.reshape(-1)
        keep = flat_valid[pos]
        plan = {k: (v if k == "closes_open" else v[keep]) for k, v in plan.items()}
        plan["pos"] = (torch.cumsum(flat_valid, 0) - 1)[plan["pos"]]  # positions among the valid steps
    return plan


def _flag(data: TensorDictBase, key: NestedKey, shape: torch.Size) -> torch.Tensor:
    v = data.get(key)
    if v.numel() != shape.numel():
        raise ValueError(f"key {key!r} must hold one flag per step (shape {tuple(shape)} or "
                         f"{tuple(shape) + (1,)}), got shape {tuple(v.shape)}")
    v = v.reshape(shape)
    if v.dtype != torch.bool:
        bad = (v != 0) & (v != 1)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"key {key!r} must hold flags (bool or 0/1), got {v[where].item()!r} at step {where}")
    return v.bool()


class TrialWriter(Writer):
    """FIFO writer that keeps the trial structure of collector data (see module docstring).

    Args:
        capacity: storage size in steps (must equal the storage's ``max_size``).
        done_key: flag that ends a trial (TorchRL ``("next", "done")``; soft resets are never ``done``).
        init_key: flag of the first step after a hard reset, used when present in the data (a collector that
            resets without ``done`` still starts a new trial); ``None`` to ignore it.
        traj_key: the collector's trajectory id, used when present: open trials are keyed by it, so a trial
            continues in whichever row, worker or batch its id arrives (see the module docstring); ``None`` to
            ignore it and continue trials by row.
        max_trial_len: store trials longer than this as consecutive, non-overlapping snippets of at most this
            many steps (each snippet is sampled as a unit; stored keys such as ``time_idx`` stay trial-global).
        trial_id_key / trial_step_key: keys written into every stored step (int64): the id of its stored unit
            (unique for the buffer's lifetime; ids grow with write order) and its offset in the unit. TorchRL's
            ``SliceSampler(traj_key=trial_id_key, step_key=trial_step_key, fragmented=True)`` reads the storage with
            them (docs/api/data.md); ``None`` writes neither.
        valid_key: TorchRL's padding mask of ``Collector(split_trajs=True)`` batches (False on padding); when present,
            only the valid steps are written and the mask is not stored (see the module docstring); ``None`` to
            store it as any other key.

    Keys in: ``done_key``, ``init_key``, ``traj_key`` and ``valid_key`` of each batch (every other key is stored);
    keys out (stored): ``trial_id_key`` and ``trial_step_key``.
    """

    def __init__(self, capacity: int, *, done_key: NestedKey = ("next", "done"),
                 init_key: NestedKey | None = "is_init", traj_key: NestedKey | None = ("collector", "traj_ids"),
                 max_trial_len: int | None = None, trial_id_key: NestedKey | None = K.TRIAL_ID,
                 trial_step_key: NestedKey | None = K.TRIAL_STEP, valid_key: NestedKey | None = K.TORCHRL_MASK):
        super().__init__()
        if max_trial_len is not None and not 0 < max_trial_len <= capacity:
            raise ValueError(f"max_trial_len must be in [1, capacity_steps={capacity}], got {max_trial_len}")
        self.index = TrialIndex(capacity)
        self.done_key = done_key
        self.init_key = init_key
        self.traj_key = traj_key
        self.valid_key = valid_key
        self.max_trial_len = max_trial_len
        self.trial_id_key, self.trial_step_key = trial_id_key, trial_step_key
        self._write_count = 0
        self._write_count_offset = 0  # _write_count - index.write_count (empty(empty_write_count=False) keeps counting)
        self._write_hooks: OrderedDict[int, WriteHook] = OrderedDict()

    def register_write_hook(self, hook: WriteHook) -> RemovableHandle:
        """Call ``hook(first_position, steps)`` before every storage write: the global write position of the write's
        first step (its slot is ``first_position % capacity``) and its number of steps. Hooks run in registration
        order; an exception in one stops the write before anything is stored. Returns a handle: ``handle.remove()``
        unregisters the hook."""
        if not callable(hook):
            raise TypeError(f"register_write_hook needs a callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._write_hooks)
        self._write_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ Writer API
    def add(self, data: TensorDictBase) -> torch.Tensor:
        """One step of an unbatched env."""
        return self.extend(data.unsqueeze(0))

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write collector output ``[T]`` or ``[..., N, T]`` (time is the last batch dim)."""
        if not isinstance(data, TensorDictBase):
            raise ValueError(f"the sequence replay stores TensorDicts, got {type(data).__name__}")
        if data.batch_dims == 0:
            raise ValueError("extend() needs a time dimension: got a TensorDict with batch_size []; "
                             "use add() for a single step")
        if self.done_key not in data.keys(include_nested=True):
            raise ValueError(f"extend() needs the trial-end flag {self.done_key!r} in the data")
        if isinstance(data, LazyStackedTensorDict):  # e.g. stacked worker outputs
            data = data.contiguous()
        rows = data.reshape(-1, data.batch_size[-1])
        valid = None
        if self.valid_key is not None and self.valid_key in rows.keys(include_nested=True):
            valid = _flag(rows, self.valid_key, rows.batch_size)
            rows = rows.exclude(self.valid_key)
            if bool(valid.all()):
                valid = None
            else:
                rows, valid = self._valid_rows(rows, valid)
        n_env, t_len = rows.batch_size
        done = _flag(rows, self.done_key, rows.batch_size)
        init = None
        if self.init_key is not None and self.init_key in rows.keys(include_nested=True):
            init = _flag(rows, self.init_key, rows.batch_size)
        traj = None
        if self.traj_key is not None and self.traj_key in rows.keys(include_nested=True):
            traj = rows.get(self.traj_key).reshape(n_env, t_len).long()
        idx = self.index
        if traj is not None:
            if idx.env_traj is None:  # switch to trials keyed by trajectory id
                if idx.env_unit is not None and bool((idx.env_unit >= 0).any()):
                    raise ValueError(
                        f"extend() got data with trajectory ids {self.traj_key!r} but trials written without "
                        f"them are in progress; call end_trials() first")
                idx.env_unit = torch.zeros(0, dtype=torch.long)
                idx.env_traj = torch.zeros(0, dtype=torch.long)
            return self._write(rows, done, init, online=True, traj=traj, valid=valid)
        if valid is not None:
            raise ValueError(
                f"extend() got a padded batch ({self.valid_key!r} False on some steps, as Collector(split_trajs=True) "
                f"writes) without trajectory ids {self.traj_key!r}: its rows are trajectories, not envs, so trials "
                f"cannot be continued by row; keep the collector's trajectory ids (traj_key=('collector', "
                f"'traj_ids'), the default) or collect with split_trajs=False")
        if idx.env_traj is not None:  # trials keyed by trajectory id are open; this data has none
            if bool((idx.env_unit >= 0).any()):
                raise ValueError(
                    f"extend() got data without trajectory ids {self.traj_key!r} but trials keyed by them are "
                    f"in progress; call end_trials() first")
            idx.env_unit = idx.env_traj = None
        if idx.env_unit is None or idx.env_unit.numel() != n_env:
            if idx.env_unit is not None and bool((idx.env_unit >= 0).any()):
                raise ValueError(
                    f"extend() got data from {n_env} envs but {idx.env_unit.numel()} envs have trials in "
                    f"progress; call end_trials() first or use one buffer per collector layout")
            idx.env_unit = torch.full((n_env,), -1, dtype=torch.long)
        return self._write(rows, done, init, online=True)

    def _valid_rows(self, rows: TensorDictBase, valid: torch.Tensor) -> tuple[TensorDictBase, torch.Tensor]:
        """The rows holding a valid step, and their mask; the valid steps of a row must come first (right padding)."""
        gap = valid[:, 1:] & ~valid[:, :-1]
        if bool(gap.any()):
            r, t = (int(i) for i in gap.nonzero()[0])
            raise ValueError(f"extend(): {self.valid_key!r} marks row {r} valid again at step {t + 1} after padding; "
                             f"only right padding (valid steps first, as Collector(split_trajs=True) writes) is read")
        keep = valid.any(1)
        if not bool(keep.all()):
            rows, valid = rows[keep], valid[keep]
        return rows, valid

    def write_trials(self, data: TensorDictBase, lengths: torch.Tensor) -> torch.Tensor:
        """Write whole trials (``data`` is their concatenation, ``lengths`` their sizes); all are finished.

        Does not touch the in-progress trials of the online stream.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        if data.batch_dims != 1 or int(lengths.sum()) != data.batch_size[0] or bool((lengths <= 0).any()):
            raise ValueError(f"write_trials() needs flat data [sum(lengths)] and positive lengths; got batch "
                             f"{tuple(data.batch_size)} and lengths summing to {int(lengths.sum())}")
        done = torch.zeros(1, data.batch_size[0], dtype=torch.bool)
        done[0, lengths.cumsum(0) - 1] = True
        return self._write(data.unsqueeze(0), done, None, online=False)

    def num_open_trials(self) -> int:
        """Number of in-progress (unfinished) trials of the online stream, e.g. in flight in collector workers."""
        return self.index.num_open()

    def end_trials(self) -> int:
        """Mark every in-progress trial of the online stream as finished (e.g. before changing collectors).

        Trials keyed by trajectory id are closed too; their partial steps stay stored as shorter finished trials.
        Returns the number of trials closed.
        """
        idx = self.index
        closed = idx.num_open()
        if idx.env_unit is not None:
            idx.finish(idx.env_unit[idx.env_unit >= 0])
            idx.env_unit = None
            idx.env_traj = None
        return closed

    # ------------------------------------------------------------------ core
    def _write(self, rows: TensorDictBase, done: torch.Tensor, init: torch.Tensor | None,
               online: bool, traj: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.index
        n_env, t_len = done.shape
        n = n_env * t_len if valid is None else int(valid.sum())
        if n > idx.capacity:
            raise ValueError(f"one write of {n} steps exceeds capacity_steps={idx.capacity}")
        gpos0 = idx.write_count
        idx.prune(gpos0 + n - idx.capacity)  # units that this write overwrites are dropped whole
        last_traj = None
        if traj is not None:
            last_traj = traj[:, -1] if valid is None else traj[torch.arange(n_env), valid.sum(1) - 1]
        if online:
            open_unit = idx.env_unit if traj is None else self._lookup_open(traj[:, 0], last_traj)
            open_len = torch.zeros(n_env, dtype=torch.long)
            has = open_unit >= 0
            open_len[has] = idx.length_of(open_unit[has])
        else:
            open_unit = torch.full((n_env,), -1, dtype=torch.long)
            open_len = torch.zeros(n_env, dtype=torch.long)
        plan = plan_pieces(done, init, open_unit, open_len, self.max_trial_len, traj, valid=valid)
        # unit of every piece (new ones get the next ids, as new_units allocates them) and its offset in the unit
        is_new = plan["is_new"]
        unit = torch.empty_like(plan["pos"])
        unit[is_new] = idx.unit_base + idx.num_units + torch.arange(int(is_new.sum()))
        unit[~is_new] = open_unit[plan["row"][~is_new]]

        slots = (gpos0 + torch.arange(n)) % idx.capacity
        for hook in tuple(self._write_hooks.values()):
            hook(gpos0, n)
        flat = rows.reshape(-1)
        if valid is not None:
            flat = flat[valid.reshape(-1)]
        if flat.device is not None and flat.device.type != "cpu":
            flat = flat.cpu()
        if self._stores_trial_keys():
            first = torch.where(is_new, 0, open_len[plan["row"]])  # offset of each piece's first step
            flat = flat.copy()  # new entries on a shallow copy: the caller's TensorDict is left as it was
            flat.set(self.trial_id_key, torch.repeat_interleave(unit, plan["length"]))
            flat.set(self.trial_step_key, torch.arange(n) + torch.repeat_interleave(first - plan["pos"],
                                                                                    plan["length"]))
        self._storage.set(slots, flat)
        idx.write_count += n
        self._write_count += n
        for reader in self._storage._attached_entities_iter():  # e.g. a SliceSampler's buffer sharing the storage
            reader.mark_update(slots)

        idx.finish(open_unit[plan["closes_open"]])
        idx.new_units(gpos0 + plan["pos"][is_new])  # the ids `unit` already holds
        idx.add_segments(unit, gpos0 + plan["pos"], plan["length"])
        finished = plan["ends_done"] | plan["cut"] | (not online)
        if self.max_trial_len is not None:
            finished = finished | (idx.length_of(unit) >= self.max_trial_len)
        idx.finish(unit[finished])
        if online:
            last = torch.searchsorted(plan["row"], torch.arange(n_env), right=True) - 1
            row_open = torch.where(finished[last], -1, unit[last])
            if traj is None:
                idx.env_unit = row_open
            else:
                self._update_open(traj if valid is None else traj[valid], last_traj, open_unit, row_open)
        return slots

    def _stores_trial_keys(self) -> bool:
        """Write ``trial_id_key`` / ``trial_step_key`` with the steps: unless disabled (None) or the storage was
        first written without them (a replay saved before they existed keeps its layout)."""
        if self.trial_id_key is None or self.trial_step_key is None:
            return False
        storage = self._storage
        if not storage.initialized:
            return True
        stored = storage._storage.keys(include_nested=True)
        return self.trial_id_key in stored and self.trial_step_key in stored

    def _lookup_open(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[N] open unit continued by each row (the unit keyed by the row's first trajectory id), -1 = none.
        ``first`` / ``last``: each row's first and last (valid) trajectory id."""
        n_env = first.shape[0]
        first, last = first.contiguous(), last.contiguous()
        if torch.unique(first).numel() != n_env or torch.unique(last).numel() != n_env:
            raise ValueError(f"two rows of one batch share a trajectory id {self.traj_key!r}: ids must be unique "
                             f"per row (got first ids {first.tolist()}, last ids {last.tolist()}). Padded batches "
                             f"(Collector(split_trajs=True)) need their mask {self.valid_key!r}; if the ids are not "
                             f"the collector's trajectory ids, build the buffer with traj_key=None to continue "
                             f"trials by row")
        keys, units = self.index.env_traj, self.index.env_unit
        if keys.numel() == 0:
            return torch.full((n_env,), -1, dtype=torch.long)
        p = torch.searchsorted(keys, first).clamp(max=keys.numel() - 1)  # keys are sorted and unique
        return torch.where(keys[p] == first, units[p], -1)

    def _update_open(self, traj: torch.Tensor, last: torch.Tensor, looked_up: torch.Tensor,
                     row_open: torch.Tensor) -> None:
        """Replace the open entries this batch touched (``traj``: every id written) by each row's open unit, keyed by
        its last id (``last`` [N])."""
        idx = self.index
        keys, units = idx.env_traj, idx.env_unit
        touched = torch.isin(keys, traj.reshape(-1))
        # an open unit whose id reappears in this batch without being continued is stale (id reused): close it
        stale = touched & ~torch.isin(units, looked_up)
        idx.finish(units[stale & (units >= 0)])
        keep = ~touched & (units >= 0)
        new = row_open >= 0
        keys = torch.cat([keys[keep], last[new]])
        units = torch.cat([units[keep], row_open[new]])
        order = torch.argsort(keys)
        idx.env_traj, idx.env_unit = keys[order], units[order]

    # ------------------------------------------------------------------ state
    def _empty(self, empty_write_count: bool = True) -> None:
        self.index.reset()
        if empty_write_count:
            self._write_count = 0
        self._write_count_offset = self._write_count

    @property
    def before_write(self):
        raise AttributeError("TrialWriter has no before_write: register hooks with writer.register_write_hook(fn)")

    @before_write.setter
    def before_write(self, fn):
        raise AttributeError("TrialWriter has no before_write: register hooks with writer.register_write_hook(fn)")

    def state_dict(self) -> dict:
        return {"index": self.index.state_dict(), "_write_count": self._write_count,
                "_write_count_offset": self._write_count_offset, "max_trial_len": self.max_trial_len}

    def check_compatible(self, state_dict: dict) -> None:
        """Raise ValueError if a checkpoint was written with another capacity or max_trial_len."""
        cap = state_dict["index"].get("capacity")
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise ValueError(f"index.capacity: expected an integer, got {cap!r}")
        if cap != self.index.capacity:
            raise ValueError(f"index.capacity: checkpoint was written by a buffer with capacity_steps={cap}, "
                             f"this buffer has capacity_steps={self.index.capacity}")
        if state_dict.get("max_trial_len") != self.max_trial_len:
            raise ValueError(f"max_trial_len: checkpoint has max_trial_len={state_dict.get('max_trial_len')}, "
                             f"this buffer has max_trial_len={self.max_trial_len}")

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a table written by :meth:`state_dict`; it is checked first (:meth:`check_state`: a ValueError names
        the field, and nothing is changed)."""
        count, offset = self.check_state(state_dict)
        self.index.load_state_dict(state_dict["index"])
        self._write_count, self._write_count_offset = count, offset

    def check_state(self, state_dict: dict) -> tuple[int, int]:
        """Raise ValueError naming the field if ``state_dict`` does not fit this writer (capacity, max_trial_len) or
        is inconsistent (the trial table, see :func:`~torchrl_amago.data.trial_index.check_index_state`; the write
        count against the table's). Returns the write count and its offset."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("index"), dict):
            raise ValueError("expected a dict with the trial table under 'index'")
        self.check_compatible(state_dict)
        index = check_index_state(state_dict["index"], self.index.capacity)
        count, offset = state_dict.get("_write_count"), state_dict.get("_write_count_offset", 0)
        for name, v in (("_write_count", count), ("_write_count_offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
        if count != index["write_count"] + offset:
            emptied = f" (+ {offset} written before the buffer was emptied)" if offset else ""
            raise ValueError(f"_write_count: {count} steps written, but the trial table has "
                             f"index.write_count={index['write_count']}{emptied}")
        return count, offset

    def dumps(self, path) -> None:
        path = Path(path).absolute()
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "trial_writer.pt.tmp"
        torch.save(self.state_dict(), tmp)
        tmp.replace(path / "trial_writer.pt")
        with open(path / "metadata.json", "w") as f:
            json.dump({"write_count": self._write_count, "num_units": self.index.num_units}, f)

    @staticmethod
    def read(path) -> dict:
        """The trial table written by :meth:`dumps` into the folder ``path`` (tensors and plain values only,
        read with :func:`~torchrl_amago.data.safe_files.load_tensors`)."""
        return load_tensors(Path(path).absolute() / "trial_writer.pt")

    def loads(self, path) -> None:
        """Load the trial table written by :meth:`dumps` (read as tensors and plain values; checked before anything
        changes: an error names the file and the field)."""
        file = Path(path).absolute() / "trial_writer.pt"
        state = self.read(path)
        try:
            self.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{file}: {e}") from e

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(capacity={self.index.capacity}, max_trial_len={self.max_trial_len}, "
                f"units={self.index.num_units})")
