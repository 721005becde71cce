"""Pickle-free, crash-safe persistence of a :class:`SequenceReplayBuffer` whose memmaps live in one folder. The
trainer checkpoints it in place: :func:`replay_state` (inside its checkpoint file), :func:`sync_storage` before that
file is written, :func:`restore_replay` on resume, and :class:`UndoLog`, which saves checkpointed rows before a write
overwrites them; ``SequenceReplayBuffer.dumps``/``loads`` copy the same state into a folder (:mod:`.replay_dump`).
Every state is checked first (:func:`validate_replay_state`; the format and its checks: docs/api/data.md)."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import weakref
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.memmap import MemoryMappedTensor

from .safe_files import load_tensors

REPLAY_STATE_VERSION = 1
UNDO_DIR = "undo"
STORAGE_DIR = "storage"  # memmaps of a generation folder: <gen_dir>/storage/<key>.memmap
DUMP_STATE_FILE = "replay_state.pt"  # SequenceReplayBuffer.dumps: <dump>/replay_state.pt + <dump>/storage/
DUMP_FORMAT = "torchrl_amago.replay_dump.v1"
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
                               torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
                               torch.complex64, torch.complex128)}
_MAX_LEAVES = 10_000  # stored keys a replay state may declare


class ReplayStateError(ValueError):
    """A replay state is inconsistent, or its files do not match it; the message names the file or field."""


def _key_str(key) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def leaf_check(key: list, dtype: str, shape: list, file: str) -> str:
    """Checksum of one stored key's declared layout (a later edit of its dtype, shape or file no longer matches)."""
    return hashlib.sha256(json.dumps([list(key), str(dtype), [int(s) for s in shape], str(file)]).encode()
                          ).hexdigest()[:16]


def leaf_bytes(leaf: dict) -> int:
    """Size in bytes of one declared memmap (dtype x shape)."""
    return torch.Size(leaf["shape"]).numel() * torch.empty((), dtype=_DTYPES[leaf["dtype"]]).element_size()


def _leaves(storage) -> list:
    return list(storage._storage.items(include_nested=True, leaves_only=True))


def storage_layout(rb) -> dict:
    """Key, dtype, shape and file (relative to the storage folder) of every memmap of ``rb``'s storage."""
    st = rb._storage
    if not st.initialized:
        return {"initialized": False, "len": 0, "leaves": []}
    root = Path(st.scratch_dir).absolute()
    leaves = []
    for key, v in _leaves(st):
        fn = getattr(v, "filename", None)
        if fn is None:
            raise ReplayStateError(f"replay key {_key_str(key)!r} is not memory-mapped; cannot checkpoint it")
        leaf = {"key": list(key) if isinstance(key, tuple) else [key], "dtype": str(v.dtype), "shape": list(v.shape),
                "file": Path(fn).absolute().relative_to(root).as_posix()}
        leaves.append({**leaf, "check": leaf_check(**leaf)})
    return {"initialized": True, "len": int(st._len), "leaves": leaves}


def replay_state(rb) -> dict:
    """Everything needed to resume ``rb`` from its memmaps, as weights_only-loadable values."""
    rng = getattr(rb, "_rng", None)
    return {"version": REPLAY_STATE_VERSION, "capacity": int(rb.capacity_steps), "storage": storage_layout(rb),
            "writer": rb._writer.state_dict(), "sampler": rb._sampler.state_dict(), "batch_size": rb._batch_size,
            "rng": None if rng is None else rng.get_state().clone()}


def sync_storage(rb) -> None:
    """fsync every memmap file of ``rb`` (a kill after this loses nothing)."""
    st = rb._storage
    if not st.initialized:
        return
    for _, v in _leaves(st):
        fn = getattr(v, "filename", None)
        if fn is not None:
            fd = os.open(fn, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


_INSTALLED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # buffer -> its installed UndoLog


class UndoLog:
    """Copy-on-write of checkpointed rows into ``<gen_dir>/undo/``: once ``protect(W)`` says the durable checkpoint
    holds the steps written before global position ``W``, their rows are saved (fsynced) before any write
    overwrites them, and :meth:`apply` writes them back on resume."""

    def __init__(self, rb, gen_dir):
        self.rb = rb
        self.dir = Path(gen_dir).absolute() / UNDO_DIR
        self.protected = 0
        self._handle = None

    def install(self) -> "UndoLog":
        """Register :meth:`before_write` as the buffer's write hook, replacing this buffer's earlier UndoLog."""
        previous = _INSTALLED.pop(self.rb, None)
        if previous is not None:
            previous.remove()
        self._handle = self.rb.register_write_hook(self.before_write)
        _INSTALLED[self.rb] = self
        return self

    def remove(self) -> None:
        """Unregister the write hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if _INSTALLED.get(self.rb) is self:
            del _INSTALLED[self.rb]

    def protect(self, write_count: int) -> None:
        self.protected = int(write_count)

    def before_write(self, gpos0: int, n: int) -> None:
        cap, w = self.rb.capacity_steps, self.protected
        lo, hi = max(gpos0 - cap, w - cap, 0), min(gpos0 + n - cap, w)  # checkpointed steps about to be overwritten
        if hi <= lo or not self.rb._storage.initialized:
            return
        gpos = torch.arange(lo, hi)
        rows = self.rb._storage._storage[gpos % cap]
        items = list(rows.items(include_nested=True, leaves_only=True))
        keys = [list(key) if isinstance(key, tuple) else [key] for key, _ in items]
        values = [v.clone() for _, v in items]
        self.dir.mkdir(parents=True, exist_ok=True)
        save_durably(self.dir / f"{w}_{lo}.pt", {"protects": w, "gpos": gpos, "keys": keys, "values": values})

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.pt")) if self.dir.is_dir() else []

    def apply(self, write_count: int) -> int:
        """Write back the saved rows of the checkpoint at ``write_count``; returns the number of rows restored.
        Each file is checked (positions, keys, dtypes, shapes) before any of its rows is written."""
        cap, restored = self.rb.capacity_steps, 0
        stored = self.rb._storage._storage
        for f in self.files():
            try:
                entry = load_tensors(f)
                if not isinstance(entry, dict) or int(entry["protects"]) != write_count:
                    continue  # belongs to an older checkpoint
                gpos, keys, values = entry["gpos"], entry["keys"], entry["values"]
                if not isinstance(gpos, torch.Tensor) or gpos.dim() != 1 or gpos.dtype != torch.long:
                    raise ValueError("gpos: expected a 1-D int64 tensor")
                if gpos.numel() and not bool(((gpos >= write_count - cap) & (gpos < write_count)).all()):
                    raise ValueError(f"gpos: positions outside the checkpoint's stored range "
                                     f"[{max(write_count - cap, 0)}, {write_count})")
                if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
                    raise ValueError("keys/values: expected two lists of the same length")
                for key, value in zip(keys, values):
                    have = stored.get(tuple(key), None) if isinstance(key, list) else None
                    if not isinstance(have, torch.Tensor) or not isinstance(value, torch.Tensor):
                        raise ValueError(f"keys: {key!r} is not a stored key")
                    if value.dtype != have.dtype or value.shape != (gpos.numel(), *have.shape[1:]):
                        raise ValueError(f"values: key {key!r} holds {value.dtype} {list(value.shape)}, the storage "
                                         f"{have.dtype} {[gpos.numel(), *have.shape[1:]]}")
                slots = gpos % cap
                for key, value in zip(keys, values):
                    stored.get(tuple(key))[slots] = value
            except Exception as e:  # noqa: BLE001 - any damage: name the file, restore nothing silently
                raise ReplayStateError(f"replay undo file {f} cannot be applied ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''})") from e
            restored += int(slots.numel())
        return restored

    def discard_except(self, write_count: int) -> None:
        """Delete undo files of older checkpoints (call once the checkpoint at ``write_count`` is durable)."""
        for f in self.files():
            if not f.name.startswith(f"{write_count}_"):
                f.unlink(missing_ok=True)


def write_durably(path, write) -> None:
    """``write(f)`` into ``path`` (binary) through a fsynced temporary file and a rename: the old file or the new one,
    never half of it. A failed write removes the temporary file and raises."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # a full disk (torch.save reports it as a RuntimeError)
        tmp.unlink(missing_ok=True)
        raise write_error(path, e, "the previous file is kept") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_error(path, e: BaseException, kept: str) -> OSError:
    """An OSError naming `path` for a failed write `e` (errno kept; the free space when the disk is full)."""
    code = getattr(e, "errno", None)
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if code is None and free == 0:
        code = errno.ENOSPC
    cause = (os.strerror(code) if code else str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    room = f"; {free} bytes free on its disk" if free is not None and (code == errno.ENOSPC or free == 0) else ""
    return OSError(code or errno.EIO, f"could not write {path} ({cause}{room}); {kept}", str(path))


def save_durably(path, obj) -> None:
    """``torch.save(obj)`` to ``path`` with :func:`write_durably`."""
    write_durably(path, lambda f: torch.save(obj, f))


def fsync_dir(path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_files(state: dict, folder, single_link: bool = False) -> None:
    """Raise ReplayStateError naming the first memmap of a validated ``state`` that is missing, lies outside
    ``folder`` (symlinks resolved), has another name (``single_link``: a file that will be written) or whose size is
    not dtype x shape."""
    root = Path(folder).absolute()
    for leaf in state["storage"]["leaves"]:
        name = _key_str(tuple(leaf["key"]))
        f = (root / leaf["file"]).resolve()
        if root.resolve() not in f.parents:
            raise ReplayStateError(f"replay key {name!r}: file {leaf['file']!r} lies outside {root}")
        if not f.is_file():
            raise ReplayStateError(f"replay file {f} (key {name!r}) is missing")
        if single_link and f.stat().st_nlink > 1:
            raise ReplayStateError(f"replay file {f} (key {name!r}) has {f.stat().st_nlink} hard links: writing it "
                                   f"would change the same file under its other names, which may lie outside the "
                                   f"folder; replace it by a copy of its own")
        want, have = leaf_bytes(leaf), f.stat().st_size
        if have != want:
            raise ReplayStateError(f"replay file {f} (key {name!r}) has {have} bytes, expected {want} "
                                   f"({leaf['dtype']} x {[int(s) for s in leaf['shape']]}): truncated or from "
                                   f"another run")


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _check_leaves(leaves, cap: int) -> dict:
    """{key tuple: (dtype, shape)} of a declared storage layout, each leaf checked (see validate_replay_state)."""
    if not isinstance(leaves, list) or len(leaves) > _MAX_LEAVES:
        raise ReplayStateError(f"storage.leaves: expected a list of at most {_MAX_LEAVES} stored keys")
    layout, checked = {}, [isinstance(leaf, dict) and "check" in leaf for leaf in leaves]
    for i, leaf in enumerate(leaves):
        where = f"storage.leaves[{i}]"
        if not isinstance(leaf, dict):
            raise ReplayStateError(f"{where}: expected a dict")
        key = leaf.get("key")
        if (not isinstance(key, list) or not key or
                any(not isinstance(k, str) or k in ("", ".", "..") or any(c in k for c in "/\\\0") for k in key)):
            raise ReplayStateError(f"{where}.key: {key!r} is not a key (a list of names, none empty, '.', '..' or "
                                   f"holding '/')")
        where = f"{where} (key {'/'.join(key)!r})"
        if tuple(key) in layout:
            raise ReplayStateError(f"{where}: the key appears twice")
        dtype, shape, file = leaf.get("dtype"), leaf.get("shape"), leaf.get("file")
        if dtype not in _DTYPES:
            raise ReplayStateError(f"{where}.dtype: unsupported dtype {dtype!r} in the checkpoint")
        if (not isinstance(shape, list) or not shape or any(_int(d) is None or d < 0 for d in shape)
                or shape[0] != cap):
            raise ReplayStateError(f"{where}.shape: stored shape {shape} does not start with the capacity {cap}")
        if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
            raise ReplayStateError(f"{where}.file: {file!r} lies outside the storage folder")
        if file != "/".join(key) + ".memmap":
            raise ReplayStateError(f"{where}.file: {file!r} is not the key's file {'/'.join(key) + '.memmap'!r}")
        if any(checked) and leaf.get("check") != leaf_check(key, dtype, shape, file):
            raise ReplayStateError(f"{where}: its dtype {dtype}, shape {shape} or file does not match its checksum "
                                   f"('check'): the state was edited after it was written")
        layout[tuple(key)] = (dtype, shape)
    return layout


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def check_layout(writer, layout: dict, source: str) -> None:
    """A declared layout ``{key: (dtype, shape)}`` against what the writer stores: its trial keys are int64 of one
    value per step, its done and reset flags bool, and every key ``k`` has the dtype and shape of ``("next", *k)``
    (the same env output one step apart); a relabelled dtype or shape raises :class:`ReplayStateError`."""
    cap = int(writer.index.capacity)
    kinds = {_as_tuple(k): (dtype, shape) for k, dtype, shape in (
        (writer.trial_id_key, "torch.int64", [cap]), (writer.trial_step_key, "torch.int64", [cap]),
        (writer.traj_key, "torch.int64", [cap]), (writer.done_key, "torch.bool", None),
        (writer.init_key, "torch.bool", None)) if k is not None}
    for key, (dtype, shape) in sorted(layout.items()):
        want = kinds.get(key)
        pair = layout.get(key[1:]) if key[0] == "next" else None
        if want is not None and (dtype != want[0] or (want[1] is not None and shape != want[1])):
            raise ReplayStateError(f"storage.leaves (key {'/'.join(key)!r}): {source} declares {dtype} {shape}, but "
                                   f"the replay writes it as {want[0]}{f' {want[1]}' if want[1] else ''}: the "
                                   f"layout was edited")
        if pair is not None and pair != (dtype, shape):
            raise ReplayStateError(f"storage.leaves (key {'/'.join(key[1:])!r}): {source} declares {pair[0]} "
                                   f"{pair[1]}, but {'/'.join(key)!r} {dtype} {shape}; they hold the same env output "
                                   f"one step apart, so one was relabelled")


def check_trial_keys(writer, state: dict, td: TensorDict | None) -> None:
    """The stored trial keys of mapped rows ``td`` against the trial table of a validated ``state``: every stored
    step of a unit holds the unit's id and its offset in it (a memmap of other data, or relabelled, raises
    :class:`ReplayStateError` naming the key and the first slot)."""
    keys = [_as_tuple(k) for k in (writer.trial_id_key, writer.trial_step_key) if k is not None]
    if td is None or len(keys) < 2 or any(k not in td.keys(include_nested=True) for k in keys):
        return
    index, cap = state["writer"]["index"], int(state["capacity"])
    unit, off, gpos = index["s_unit"], index["s_off"], index["s_gpos"]
    if not unit.numel():
        return
    order = torch.argsort(unit * 2**32 + off)
    unit, off, gpos = unit[order], off[order], gpos[order]
    ends = torch.where(torch.cat([unit[1:] == unit[:-1], torch.tensor([False])]), torch.cat([off[1:], off[:1]]),
                       index["u_len"][unit - int(index["unit_base"])])
    length = (ends - off).clamp(min=0)
    seg = torch.repeat_interleave(torch.arange(unit.numel()), length)
    within = torch.arange(seg.numel()) - torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
    pos = gpos[seg] + within
    live = pos >= int(index["write_count"]) - cap
    slots, want = pos[live] % cap, {keys[0]: unit[seg][live], keys[1]: (off[seg] + within)[live]}
    for key in keys:
        got = td.get(key)[slots].reshape(-1)
        bad = (got != want[key]).nonzero()
        if bad.numel():
            i = int(bad[0])
            raise ReplayStateError(f"replay key {'/'.join(key)!r}: slot {int(slots[i])} holds {int(got[i])}, but the "
                                   f"trial table stores {'unit' if key == keys[0] else 'offset'} {int(want[key][i])} "
                                   f"there: the memmap holds other data than the table describes")


def validate_replay_state(rb, state, source: str = "the replay") -> None:
    """Check a replay state (:func:`replay_state`, a dump's ``replay_state.pt``) against itself and against ``rb``
    before anything of it is used: version, capacity, the trial table (``TrialWriter.check_state``), the storage length,
    every stored key (name, dtype, shape, file, checksum; ``rb``'s own layout), sampler settings, batch size and RNG.
    A :class:`ReplayStateError` names the field."""
    if not isinstance(state, dict):
        raise ReplayStateError(f"{source}: expected a dict, got {type(state).__name__}")
    if state.get("version") != REPLAY_STATE_VERSION:
        raise ReplayStateError(f"version: replay state version {state.get('version')!r} is not {REPLAY_STATE_VERSION}")
    cap = _int(state.get("capacity"))
    if cap != rb.capacity_steps:
        raise ReplayStateError(f"capacity: {source} has capacity_steps={state.get('capacity')}, this buffer has "
                               f"{rb.capacity_steps} (--dset_max_size cannot change on resume)")
    try:
        rb._writer.check_state(state.get("writer"))
    except ValueError as e:
        raise ReplayStateError(f"writer.{e}" if str(e).startswith(("index.", "_write", "max_trial_len"))
                               else f"writer: {e}") from e
    write_count = state["writer"]["index"]["write_count"]
    st = state.get("storage")
    if not isinstance(st, dict) or not isinstance(st.get("initialized"), bool):
        raise ReplayStateError("storage: expected a dict with 'initialized' (bool), 'len' and 'leaves'")
    n = _int(st.get("len"))
    want = min(write_count, cap) if st["initialized"] else 0
    if n is None or n != want:
        raise ReplayStateError(f"storage.len: {st.get('len')!r} stored steps, but the trial table has written "
                               f"{write_count} steps into capacity {cap} (expected {want})")
    if not st["initialized"] and write_count:
        raise ReplayStateError(f"storage.initialized: False, but the trial table has written {write_count} steps")
    layout = _check_leaves(st.get("leaves"), cap)
    if st["initialized"] and not layout:
        raise ReplayStateError("storage.leaves: empty, but the storage holds data")
    check_layout(rb._writer, layout, source)
    if rb._storage.initialized and layout:
        mine = {k if isinstance(k, tuple) else (k,): (str(v.dtype), list(v.shape)) for k, v in _leaves(rb._storage)}
        for key in sorted(set(mine) | set(layout)):
            if mine.get(key) != layout.get(key):
                raise ReplayStateError(f"storage.leaves (key {'/'.join(key)!r}): {source} holds "
                                       f"{layout.get(key, 'no such key')}, this buffer's stored data "
                                       f"{mine.get(key, 'no such key')} (dtype, shape)")
    if not isinstance(state.get("sampler"), dict):
        raise ReplayStateError("sampler: expected a dict of sampling settings")
    batch = state.get("batch_size")
    if batch is not None and (_int(batch) is None or batch < 1):
        raise ReplayStateError(f"batch_size: expected None or an integer >= 1, got {batch!r}")
    rng = state.get("rng")
    if rng is not None:
        try:
            torch.Generator().set_state(rng)
        except (TypeError, RuntimeError) as e:
            raise ReplayStateError(f"rng: not a generator state ({str(e).splitlines()[0]})") from e


def map_storage(state: dict, folder: Path, writable: bool) -> TensorDict | None:
    """The stored rows as a TensorDict [capacity] of memmaps, after :func:`check_files`; ``writable=False`` maps
    them privately (the files are never written)."""
    check_files(state, folder, single_link=writable)
    if not state["storage"]["initialized"]:
        return None
    td = TensorDict({}, batch_size=[int(state["capacity"])])
    for leaf in state["storage"]["leaves"]:
        f, dtype, shape = str(folder / leaf["file"]), _DTYPES[leaf["dtype"]], torch.Size(leaf["shape"])
        t = (MemoryMappedTensor.from_filename(filename=f, dtype=dtype, shape=shape) if writable
             else torch.from_file(f, shared=False, size=shape.numel(), dtype=dtype).view(shape))
        td.set(tuple(leaf["key"]), t)
    return td


def load_table(rb, state: dict) -> None:
    """Load the trial table, sampler settings and RNG of a validated ``state`` into ``rb``."""
    rb._writer.load_state_dict(state["writer"])
    rb._sampler.load_state_dict(state["sampler"])
    if state.get("rng") is not None:
        g = torch.Generator()
        g.set_state(state["rng"])
        rb.set_rng(g)


def restore_replay(rb, state: dict, gen_dir) -> dict:
    """Attach ``rb`` to the memmaps in ``gen_dir/storage`` (no copy) and load the trial table from ``state``, after
    checking both; rows a later write overwrote come back from the undo log. Returns ``{"restored_rows": n}``."""
    gen_dir = Path(gen_dir).absolute()
    folder = gen_dir / STORAGE_DIR
    validate_replay_state(rb, state, "the checkpoint's replay")
    td = map_storage(state, folder, writable=True)
    st = rb._storage
    st.scratch_dir = str(folder)
    if td is not None:
        st._storage, st.initialized, st._len = td, True, int(state["storage"]["len"])
    elif st.initialized:
        st._empty()
    load_table(rb, state)
    restored = UndoLog(rb, gen_dir).apply(rb._writer.index.write_count) if st.initialized else 0
    check_trial_keys(rb._writer, state, td)  # with the undo rows back
    return {"restored_rows": restored}
