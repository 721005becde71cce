"""Bookkeeping for trials stored step-by-step in a circular storage.

Steps are written to the storage as soon as they are collected (so nothing lives only in RAM and a
checkpoint of the storage holds every collected step). A trial of one env is therefore spread over several
*segments* (one per collector batch) that are not adjacent in storage. This table maps
``(trial, offset within the trial)`` to a storage slot with one vectorised ``searchsorted``, so a [B, T]
window index is built without Python loops.

Units: a stored "unit" is what the sampler draws. It is a whole trial, or a snippet of at most
``max_trial_len`` steps of one (consecutive snippets do not overlap; stored keys such as ``time_idx`` keep
their trial-global values). Unit ids grow with the global write position of the unit's first step, so FIFO
eviction always removes a prefix of ids.

Open units: the in-progress units of the online stream are kept either per env row (``env_unit`` [N],
``env_traj`` None: data without trajectory ids) or as a map keyed by the collector's trajectory id
(``env_traj`` [K] sorted unique ids, ``env_unit`` [K] their units: a trial continues wherever its id
arrives). Both are tensors in :meth:`TrialIndex.state_dict`, so a checkpoint restores them exactly.
"""
from __future__ import annotations

import torch

_KEY_SHIFT = 2**32  # unit id * 2**32 + offset: sortable key of (unit, offset); offsets < capacity < 2**32


def _empty_long() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long)


class TrialIndex:
    """Unit and segment tables, plus the per-env in-progress unit of the online stream.

    All positions are *global* write positions (``gpos``, the number of steps written before a step); the
    storage slot is ``gpos % capacity``. A step is still stored iff ``gpos >= write_count - capacity``.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity_steps must be positive, got {capacity}")
        if capacity >= _KEY_SHIFT:
            raise ValueError(f"capacity_steps must be < 2**32, got {capacity}")
        self.capacity = int(capacity)
        self.reset()

    def reset(self) -> None:
        self.write_count = 0
        self.unit_base = 0  # id of the oldest unit still in the tables
        self.u_len = _empty_long()
        self.u_first = _empty_long()  # gpos of the unit's first step
        self.u_finished = torch.zeros(0, dtype=torch.bool)
        self.s_unit = _empty_long()
        self.s_off = _empty_long()
        self.s_gpos = _empty_long()
        self._sorted = True
        # open units of the online stream: per row ([N], -1 = none; env_traj None), or keyed by trajectory id
        # (env_traj [K] sorted unique ids, env_unit [K] their units; -1 = evicted)
        self.env_unit: torch.Tensor | None = None
        self.env_traj: torch.Tensor | None = None

    # ------------------------------------------------------------------ queries
    @property
    def num_units(self) -> int:
        return int(self.u_len.numel())

    def num_open(self) -> int:
        """Number of in-progress units of the online stream."""
        return 0 if self.env_unit is None else int((self.env_unit >= 0).sum())

    def sampleable(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and lengths of finished units whose steps are all still stored."""
        alive = self.u_first >= self.write_count - self.capacity
        ok = self.u_finished & alive & (self.u_len > 0)
        local = ok.nonzero().squeeze(-1)
        return local + self.unit_base, self.u_len[local]

    def physical(self, unit: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Storage slots of ``offset`` (any shape, broadcast against ``unit``) inside ``unit``."""
        self._sort()
        keys = self.s_unit * _KEY_SHIFT + self.s_off
        query = unit * _KEY_SHIFT + offset
        seg = torch.searchsorted(keys, query, right=True) - 1
        return (self.s_gpos[seg] + (offset - self.s_off[seg])) % self.capacity

    def _sort(self) -> None:
        if self._sorted:
            return
        order = torch.argsort(self.s_unit * _KEY_SHIFT + self.s_off)
        self.s_unit, self.s_off, self.s_gpos = self.s_unit[order], self.s_off[order], self.s_gpos[order]
        self._sorted = True

    # ------------------------------------------------------------------ updates
    def prune(self, threshold: int) -> None:
        """Forget every unit with a step at ``gpos < threshold`` (it is, or is about to be, overwritten)."""
        k = int(torch.searchsorted(self.u_first, torch.tensor(threshold, dtype=torch.long)).item())
        if k == 0:
            return
        self.unit_base += k
        self.u_len, self.u_first, self.u_finished = self.u_len[k:], self.u_first[k:], self.u_finished[k:]
        keep = self.s_unit >= self.unit_base
        self.s_unit, self.s_off, self.s_gpos = self.s_unit[keep], self.s_off[keep], self.s_gpos[keep]
        if self.env_unit is not None:
            self.env_unit = torch.where(self.env_unit < self.unit_base, -1, self.env_unit)

    def new_units(self, first_gpos: torch.Tensor) -> torch.Tensor:
        """Allocate one unit per entry of ``first_gpos`` (must not decrease); returns their ids."""
        n = first_gpos.numel()
        ids = torch.arange(n, dtype=torch.long) + self.unit_base + self.num_units
        self.u_len = torch.cat([self.u_len, torch.zeros(n, dtype=torch.long)])
        self.u_first = torch.cat([self.u_first, first_gpos.long()])
        self.u_finished = torch.cat([self.u_finished, torch.zeros(n, dtype=torch.bool)])
        return ids

    def add_segments(self, unit: torch.Tensor, gpos: torch.Tensor, length: torch.Tensor) -> None:
        """Append segments (each at most one per unit per call) at the current end of their units."""
        local = unit - self.unit_base
        off = self.u_len[local]
        self.u_len = self.u_len.index_add(0, local, length)
        self.s_unit = torch.cat([self.s_unit, unit])
        self.s_off = torch.cat([self.s_off, off])
        self.s_gpos = torch.cat([self.s_gpos, gpos])
        self._sorted = False

    def length_of(self, unit: torch.Tensor) -> torch.Tensor:
        return self.u_len[unit - self.unit_base]

    def finish(self, unit: torch.Tensor) -> None:
        if unit.numel():
            self.u_finished[unit - self.unit_base] = True

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        self._sort()
        return {
            "capacity": self.capacity,
            "write_count": self.write_count,
            "unit_base": self.unit_base,
            "u_len": self.u_len.clone(),
            "u_first": self.u_first.clone(),
            "u_finished": self.u_finished.clone(),
            "s_unit": self.s_unit.clone(),
            "s_off": self.s_off.clone(),
            "s_gpos": self.s_gpos.clone(),
            "env_unit": None if self.env_unit is None else self.env_unit.clone(),
            "env_traj": None if self.env_traj is None else self.env_traj.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"checkpoint was written by a buffer with capacity_steps={state['capacity']}, "
                f"this buffer has capacity_steps={self.capacity}"
            )
        self.write_count = int(state["write_count"])
        self.unit_base = int(state["unit_base"])
        for k in ("u_len", "u_first", "u_finished", "s_unit", "s_off", "s_gpos"):
            setattr(self, k, state[k].clone())
        self.env_unit = None if state["env_unit"] is None else state["env_unit"].clone()
        env_traj = state.get("env_traj")
        if env_traj is not None and env_traj.numel() and bool((env_traj < 0).all()):
            env_traj = None  # written before trials were keyed by trajectory id, by data without ids: per row
        self.env_traj = None if env_traj is None else env_traj.clone()
        if self.env_traj is not None:  # keyed map (older checkpoints held one id per row: the same map)
            keep = self.env_unit >= 0
            order = torch.argsort(self.env_traj[keep])
            self.env_traj, self.env_unit = self.env_traj[keep][order], self.env_unit[keep][order]
        self._sorted = True
