"""Bookkeeping for trials stored step by step in a circular storage: a trial is stored as several *segments* (one
per collector batch), and this table maps ``(unit, offset)`` to a storage slot with one vectorised ``searchsorted``.
A *unit* is what the sampler draws (a whole trial, or a snippet of at most ``max_trial_len`` steps of one); unit ids
grow with the write position of their first step, so FIFO eviction removes a prefix of ids."""
from __future__ import annotations

import torch

_KEY_SHIFT = 2**32  # unit id * 2**32 + offset: sortable key of (unit, offset); offsets < capacity < 2**32


def _empty_long() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long)


class TrialIndex:
    """Unit and segment tables, plus the open units of the online stream. Positions are global write positions
    (``gpos``); a step's slot is ``gpos % capacity``, and it is still stored iff ``gpos >= write_count - capacity``."""

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
        self.u_len, self.u_first = _empty_long(), _empty_long()  # u_first: gpos of the unit's first step
        self.u_finished = torch.zeros(0, dtype=torch.bool)
        self.s_unit, self.s_off, self.s_gpos = _empty_long(), _empty_long(), _empty_long()
        self._sorted = True
        self.env_unit: torch.Tensor | None = None  # open units (-1: none or evicted), per row or per env_traj id
        self.env_traj: torch.Tensor | None = None

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
        seg = torch.searchsorted(keys, unit * _KEY_SHIFT + offset, right=True) - 1
        return (self.s_gpos[seg] + (offset - self.s_off[seg])) % self.capacity

    def _sort(self) -> None:
        if self._sorted:
            return
        order = torch.argsort(self.s_unit * _KEY_SHIFT + self.s_off)
        self.s_unit, self.s_off, self.s_gpos = self.s_unit[order], self.s_off[order], self.s_gpos[order]
        self._sorted = True

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
        self.s_off = torch.cat([self.s_off, self.u_len[local]])  # the units' current ends
        self.u_len = self.u_len.index_add(0, local, length)
        self.s_unit = torch.cat([self.s_unit, unit])
        self.s_gpos = torch.cat([self.s_gpos, gpos])
        self._sorted = False

    def length_of(self, unit: torch.Tensor) -> torch.Tensor:
        return self.u_len[unit - self.unit_base]

    def finish(self, unit: torch.Tensor) -> None:
        if unit.numel():
            self.u_finished[unit - self.unit_base] = True

    def state_dict(self) -> dict:
        self._sort()
        tables = ("u_len", "u_first", "u_finished", "s_unit", "s_off", "s_gpos", "env_unit", "env_traj")
        return {"capacity": self.capacity, "write_count": self.write_count, "unit_base": self.unit_base,
                **{k: None if getattr(self, k) is None else getattr(self, k).clone() for k in tables}}

    def load_state_dict(self, state: dict) -> None:
        """Load a table written by :meth:`state_dict`, after :func:`check_index_state`."""
        new = check_index_state(state, self.capacity)
        for k, v in new.items():
            setattr(self, k, v)
        self._sorted = True


def _int_field(state: dict, name: str, low: int = 0, high: int = 2**62) -> int:
    v = state.get(name)
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ValueError(f"index.{name}: expected an integer in [{low}, {high}], got {v!r}")
    return v


def _vector(state: dict, name: str, dtype: torch.dtype, optional: bool = False) -> torch.Tensor | None:
    v = state.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.dtype != dtype:
        what = f"{v.dtype} tensor of shape {list(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"index.{name}: expected a 1-D {dtype} tensor, got {what}")
    return v.clone()


def _bad(name: str, ok: torch.Tensor, what: str) -> None:
    """Raise naming the field and the first entry where ``ok`` is False."""
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        raise ValueError(f"index.{name}: entry {i} {what}")


def check_index_state(state: dict, capacity: int) -> dict:
    """The tables of a :meth:`TrialIndex.state_dict` as attributes to set, once consistent: every unit non-empty, in
    write order and still stored; its segments inside the written range, covering it exactly, overlapping no other;
    the open trials naming existing units. A ValueError names the field and the first bad entry."""
    if not isinstance(state, dict):
        raise ValueError(f"index: expected a dict, got {type(state).__name__}")
    cap = _int_field(state, "capacity", 1)
    if cap != capacity:
        raise ValueError(f"checkpoint was written by a buffer with capacity_steps={cap}, "
                         f"this buffer has capacity_steps={capacity}")
    write_count = _int_field(state, "write_count")
    base = _int_field(state, "unit_base")
    u_len, u_first = _vector(state, "u_len", torch.long), _vector(state, "u_first", torch.long)
    u_finished = _vector(state, "u_finished", torch.bool)
    s_unit, s_off, s_gpos = (_vector(state, k, torch.long) for k in ("s_unit", "s_off", "s_gpos"))
    k = u_len.numel()
    if u_first.numel() != k or u_finished.numel() != k:
        raise ValueError(f"index.u_first/u_finished: {u_first.numel()}/{u_finished.numel()} entries for {k} units")
    if s_off.numel() != s_unit.numel() or s_gpos.numel() != s_unit.numel():
        raise ValueError(f"index.s_off/s_gpos: {s_off.numel()}/{s_gpos.numel()} entries for {s_unit.numel()} "
                         f"segments")
    oldest = write_count - cap
    _bad("u_len", u_len >= 1, "is not a positive length")
    _bad("u_first", (u_first >= oldest) & (u_first < write_count),
         f"lies outside the stored positions [{max(oldest, 0)}, {write_count})")
    _bad("u_len", u_first + u_len <= write_count, f"runs past the {write_count} steps written (index.write_count)")
    _bad("u_first", u_first[1:] >= u_first[:-1], "is smaller than the entry before it (units are in write order)")
    _bad("s_unit", (s_unit >= base) & (s_unit < base + k), f"is not a unit id in [{base}, {base + k})")
    key = s_unit * _KEY_SHIFT + s_off
    _bad("s_off", key[1:] > key[:-1], "is out of order (segments are sorted by unit, then offset)")
    local = s_unit - base
    first = torch.ones_like(s_unit, dtype=torch.bool)
    first[1:] = s_unit[1:] != s_unit[:-1]
    if int(first.sum()) != k:
        raise ValueError(f"index.s_unit: {int(first.sum())} units have segments, the table has {k} units")
    _bad("s_off", (s_off == 0) | ~first, "is not 0 although it is its unit's first segment")
    _bad("s_gpos", (s_gpos == u_first[local]) | ~first, "is not its unit's first position (index.u_first)")
    nxt_off = torch.cat([s_off[1:], s_off.new_zeros(1)])
    last = torch.ones_like(first)
    last[:-1] = first[1:]
    seg_len = torch.where(last, u_len[local] - s_off, nxt_off - s_off)
    _bad("s_off", seg_len >= 1, "leaves an empty segment (past its unit's length, index.u_len)")
    _bad("s_gpos", (s_gpos >= max(oldest, 0)) & (s_gpos + seg_len <= write_count),
         f"lies outside the stored positions [{max(oldest, 0)}, {write_count})")
    order = torch.argsort(s_gpos)
    g, n = s_gpos[order], seg_len[order]
    _bad("s_gpos", torch.cat([g[1:] >= g[:-1] + n[:-1], torch.ones(1, dtype=torch.bool)])[torch.argsort(order)],
         "overlaps the next segment")
    env_unit = _vector(state, "env_unit", torch.long, optional=True)
    env_traj = _vector(state, "env_traj", torch.long, optional=True)
    if env_unit is not None:
        _bad("env_unit", (env_unit == -1) | ((env_unit >= base) & (env_unit < base + k)),
             f"is neither -1 nor a unit id in [{base}, {base + k})")
    if env_traj is not None and env_traj.numel() and bool((env_traj < 0).all()):
        env_traj = None  # written before trials were keyed by trajectory id, by data without ids: per row
    if env_traj is not None:  # keyed map (older checkpoints held one id per row: the same map)
        if env_unit is None or env_unit.numel() != env_traj.numel():
            raise ValueError(f"index.env_traj: {env_traj.numel()} ids for "
                             f"{0 if env_unit is None else env_unit.numel()} open units (index.env_unit)")
        keep = env_unit >= 0
        order = torch.argsort(env_traj[keep])
        env_traj, env_unit = env_traj[keep][order], env_unit[keep][order]
        _bad("env_traj", env_traj[1:] > env_traj[:-1], "repeats a trajectory id")
    return {"write_count": write_count, "unit_base": base, "u_len": u_len, "u_first": u_first,
            "u_finished": u_finished, "s_unit": s_unit, "s_off": s_off, "s_gpos": s_gpos, "env_unit": env_unit,
            "env_traj": env_traj}
