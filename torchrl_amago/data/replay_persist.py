"""Crash-safe, pickle-free persistence of a :class:`SequenceReplayBuffer` whose memmaps live in one folder.

TorchRL's ``dumps``/``loads`` write ``prefetch.pkl`` with ``pickle`` and read the storage and RNG back with
tensordict's ``load_memmap`` (``ReplayBuffer.loads`` -> ``TensorStorageCheckpointer.loads`` / ``rng_state`` ->
``TensorDict.load_memmap`` -> ``NonTensorStack._load_memmap`` -> ``tensorclass._load_pickle_file`` ->
``pickle.load``), which unpickles any ``NonTensorStack`` a ``meta.json`` names; a crafted dump or run directory
would then run code. This module replaces that path, for run checkpoints and for ``dumps``/``loads``:

- :func:`replay_state` returns the buffer's whole state (trial table, storage layout: key, dtype, shape and
  file of every memmap, length, sampler settings, sampling RNG) as tensors and plain values, so it is saved
  *inside* the trainer's checkpoint file, read with :func:`~torchrl_amago.data.safe_files.load_tensors`; the
  counters and the replay are committed by one rename.
- :func:`sync_storage` flushes the memmaps (``fsync``) before that file is written.
- :func:`restore_replay` re-attaches the memmaps **in place** (no copy of the capacity): every file is checked
  for existence and exact size first, and a missing or short file raises :class:`ReplayStateError` naming it.
- Undo log (:class:`UndoLog`): checkpointed rows never change. Once the FIFO is full, a write overwrites the
  oldest slots; before a write overwrites rows that the last durable checkpoint holds, their old values are
  saved (fsynced) to ``<gen>/undo/``. Resuming that checkpoint writes them back, so every trial it holds is
  restored bit for bit. A new checkpoint makes the older undo files obsolete; they are then deleted.
- :func:`dump_replay` / :func:`load_replay` (``SequenceReplayBuffer.dumps``/``loads``): the same state in
  ``<dump>/replay_state.pt`` next to copies of the memmaps in ``<dump>/storage/``. Loading checks the folder
  first (plain files, only those two kinds), reads the state with
  :func:`~torchrl_amago.data.safe_files.load_tensors`, checks every memmap, then copies the data into the buffer.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.memmap import MemoryMappedTensor

from .safe_files import UnsafeFileError, check_folder, load_tensors

REPLAY_STATE_VERSION = 1
UNDO_DIR = "undo"
STORAGE_DIR = "storage"  # memmaps of a generation folder: <gen_dir>/storage/<key>.memmap
DUMP_STATE_FILE = "replay_state.pt"  # SequenceReplayBuffer.dumps: <dump>/replay_state.pt + <dump>/storage/
DUMP_FORMAT = "torchrl_amago.replay_dump.v1"
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
                               torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
                               torch.complex64, torch.complex128)}


class ReplayStateError(ValueError):
    """Replay files on disk do not match the checkpoint (missing, truncated, wrong key / dtype / shape)."""


def _key_str(key) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


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
        leaves.append({"key": list(key) if isinstance(key, tuple) else [key], "dtype": str(v.dtype),
                       "shape": list(v.shape), "file": str(Path(fn).absolute().relative_to(root))})
    return {"initialized": True, "len": int(st._len), "leaves": leaves}


def replay_state(rb) -> dict:
    """Everything needed to resume ``rb`` from its memmaps, as weights_only-loadable values."""
    rng = getattr(rb, "_rng", None)
    return {"version": REPLAY_STATE_VERSION,
            "capacity": int(rb.capacity_steps),
            "storage": storage_layout(rb),
            "writer": rb._writer.state_dict(),
            "sampler": rb._sampler.state_dict(),
            "batch_size": rb._batch_size,
            "rng": None if rng is None else rng.get_state().clone()}


def sync_storage(rb) -> None:
    """fsync every memmap file of ``rb`` (flushes the mapped pages; a kill after this loses nothing)."""
    st = rb._storage
    if not st.initialized:
        return
    for _, v in _leaves(st):
        fn = getattr(v, "filename", None)
        if fn is None:
            continue
        fd = os.open(fn, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class UndoLog:
    """Copy-on-write of checkpointed rows (see module docstring). ``protect(W)``: the durable checkpoint holds
    the steps written before global position ``W``; their rows are saved before any write overwrites them."""

    def __init__(self, rb, gen_dir):
        self.rb = rb
        self.dir = Path(gen_dir).absolute() / UNDO_DIR
        self.protected = 0

    def install(self) -> "UndoLog":
        self.rb._writer.before_write = self.before_write
        return self

    def protect(self, write_count: int) -> None:
        self.protected = int(write_count)

    def before_write(self, gpos0: int, n: int) -> None:
        cap, w = self.rb.capacity_steps, self.protected
        lo, hi = max(gpos0 - cap, w - cap, 0), min(gpos0 + n - cap, w)  # checkpointed steps about to be overwritten
        if hi <= lo or not self.rb._storage.initialized:
            return
        gpos = torch.arange(lo, hi)
        rows = self.rb._storage._storage[gpos % cap]
        keys, values = [], []
        for key, v in rows.items(include_nested=True, leaves_only=True):
            keys.append(list(key) if isinstance(key, tuple) else [key])
            values.append(v.clone())
        self.dir.mkdir(parents=True, exist_ok=True)
        save_durably(self.dir / f"{w}_{lo}.pt", {"protects": w, "gpos": gpos, "keys": keys, "values": values})

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.pt")) if self.dir.is_dir() else []

    def apply(self, write_count: int) -> int:
        """Write back the saved rows of the checkpoint at ``write_count``; returns the number of rows restored."""
        cap, restored = self.rb.capacity_steps, 0
        for f in self.files():
            try:
                entry = load_tensors(f)
                if int(entry["protects"]) != write_count:
                    continue  # belongs to an older checkpoint
                slots = entry["gpos"].long() % cap
                for key, value in zip(entry["keys"], entry["values"]):
                    self.rb._storage._storage.get(tuple(key))[slots] = value
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


def save_durably(path, obj) -> None:
    """``torch.save`` to ``path`` through a fsynced temporary file and a rename (old file or new one, never half)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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


def check_files(state: dict, folder) -> None:
    """Raise ReplayStateError naming the first memmap that is missing, lies outside ``folder`` or whose size is not
    dtype x shape."""
    root = Path(folder).absolute()
    cap = int(state["capacity"])
    for leaf in state["storage"]["leaves"]:
        name = _key_str(tuple(leaf["key"]))
        dtype = _DTYPES.get(leaf["dtype"])
        if dtype is None:
            raise ReplayStateError(f"replay key {name!r}: unsupported dtype {leaf['dtype']!r} in the checkpoint")
        shape = [int(s) for s in leaf["shape"]]
        if not shape or shape[0] != cap:
            raise ReplayStateError(f"replay key {name!r}: stored shape {shape} does not start with the capacity {cap}")
        f = (root / leaf["file"]).resolve()
        if root.resolve() not in f.parents:
            raise ReplayStateError(f"replay key {name!r}: file {leaf['file']!r} lies outside {root}")
        if not f.is_file():
            raise ReplayStateError(f"replay file {f} (key {name!r}) is missing")
        want = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        have = f.stat().st_size
        if have != want:
            raise ReplayStateError(f"replay file {f} (key {name!r}) has {have} bytes, expected {want} "
                                   f"({leaf['dtype']} x {shape}): truncated or from another run")


def _check_state(rb, state: dict, source: str) -> None:
    if int(state.get("version", -1)) != REPLAY_STATE_VERSION:
        raise ReplayStateError(f"replay state version {state.get('version')!r} is not {REPLAY_STATE_VERSION}")
    if int(state["capacity"]) != rb.capacity_steps:
        raise ReplayStateError(f"{source} has capacity_steps={state['capacity']}, this buffer has "
                               f"{rb.capacity_steps} (--dset_max_size cannot change on resume)")
    rb._writer.check_compatible(state["writer"])


def _map_storage(state: dict, folder: Path, writable: bool) -> TensorDict | None:
    """The stored rows as a TensorDict [capacity] of memmaps (files checked by :func:`check_files` first);
    ``writable=False`` maps them privately (the files are never written)."""
    check_files(state, folder)
    if not state["storage"]["initialized"]:
        return None
    td = TensorDict({}, batch_size=[int(state["capacity"])])
    for leaf in state["storage"]["leaves"]:
        f, dtype, shape = str(folder / leaf["file"]), _DTYPES[leaf["dtype"]], torch.Size(leaf["shape"])
        t = (MemoryMappedTensor.from_filename(filename=f, dtype=dtype, shape=shape) if writable
             else torch.from_file(f, shared=False, size=shape.numel(), dtype=dtype).view(shape))
        td.set(tuple(leaf["key"]), t)
    return td


def _load_table(rb, state: dict) -> None:
    rb._writer.load_state_dict(state["writer"])
    rb._sampler.load_state_dict(state["sampler"])
    if state.get("rng") is not None:
        g = torch.Generator()
        g.set_state(state["rng"])
        rb.set_rng(g)


def restore_replay(rb, state: dict, gen_dir) -> dict:
    """Attach ``rb`` to the memmaps in ``gen_dir/storage`` (no copy) and load the trial table from ``state``.

    Rows that a later write overwrote are restored from the undo log. Returns ``{"restored_rows": n}``.
    """
    gen_dir = Path(gen_dir).absolute()
    folder = gen_dir / STORAGE_DIR
    _check_state(rb, state, "the checkpoint's replay")
    td = _map_storage(state, folder, writable=True)
    st = rb._storage
    st.scratch_dir = str(folder)
    if td is not None:
        st._storage = td
        st.initialized = True
        st._len = int(state["storage"]["len"])
    elif st.initialized:
        st._empty()
    _load_table(rb, state)
    restored = UndoLog(rb, gen_dir).apply(rb._writer.index.write_count) if st.initialized else 0
    return {"restored_rows": restored}


def dump_replay(rb, path) -> None:
    """Write ``rb`` to the folder ``path`` (created; it must be empty or hold an earlier dump, which is replaced):
    copies of its memmaps in ``storage/``, then, last and by one rename, ``replay_state.pt`` (trial table, layout,
    sampler settings, RNG, batch size and the state_dict of the buffer's transform: tensors and plain values)."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    state_file = path / DUMP_STATE_FILE
    if any(path.iterdir()) and not state_file.is_file():
        raise ValueError(f"dumps({path}): the folder holds files that are not a replay dump; use an empty folder")
    state = {"format": DUMP_FORMAT, **replay_state(rb), "transform": dict(rb._transform.state_dict())}
    state_file.unlink(missing_ok=True)  # an interrupted dump has no state file, so it is never loaded
    folder = path / STORAGE_DIR
    shutil.rmtree(folder, ignore_errors=True)
    src_root = Path(rb._storage.scratch_dir).absolute() if rb._storage.initialized else None
    for leaf in state["storage"]["leaves"]:
        dst = folder / leaf["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / leaf["file"], dst)  # the memmaps are shared mappings: the file has every write
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())
    save_durably(state_file, state)


def load_replay(rb, path) -> None:
    """Load a folder written by :func:`dump_replay` into ``rb`` (a copy: the dump is never written).

    Before anything is read, every entry of the folder must be a plain file, either ``replay_state.pt`` or a
    ``storage/**.memmap``; the state is read with :func:`~torchrl_amago.data.safe_files.load_tensors`; every memmap
    it names is checked (inside the folder, exact size) and no other memmap may be there. Any failure raises
    :class:`~torchrl_amago.data.safe_files.UnsafeFileError` or :class:`ReplayStateError` naming the file."""
    path = Path(path).absolute()
    state_file = path / DUMP_STATE_FILE
    if path.is_dir() and not state_file.exists():
        raise UnsafeFileError(f"{path} is not a replay dump written by SequenceReplayBuffer.dumps ({state_file} is "
                              f"missing; TorchRL's own dump format is not loaded, since it can hold pickles)")
    files = check_folder(path, lambda rel: rel == DUMP_STATE_FILE or (rel.startswith(STORAGE_DIR + "/")
                                                                       and rel.endswith(".memmap")), "replay dump")
    state = load_tensors(state_file)
    try:
        if not isinstance(state, dict) or state.get("format") != DUMP_FORMAT:
            raise ReplayStateError(f"not a replay dump (format {DUMP_FORMAT!r} expected)")
        _check_state(rb, state, "the dump")
        check_files(state, path / STORAGE_DIR)
        named = {f"{STORAGE_DIR}/{Path(leaf['file']).as_posix()}" for leaf in state["storage"]["leaves"]}
        extra = sorted(set(files) - named - {DUMP_STATE_FILE})
        if extra:
            raise UnsafeFileError(f"{path / extra[0]} is not named by {state_file}; nothing was loaded")
        td = _map_storage(state, path / STORAGE_DIR, writable=False)
        st = rb._storage
        if td is None:
            if st.initialized:
                st._empty()
        else:
            if st.initialized:
                _check_same_layout(st._storage, td)
            else:
                st._init(td[0])
            st._storage.update_(td)
            st._len = int(state["storage"]["len"])
        _load_table(rb, state)
        rb._batch_size = state["batch_size"]
        if state["transform"]:
            rb._transform.load_state_dict(state["transform"])
    except UnsafeFileError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # ReplayStateError included
        why = str(e) if str(path) in str(e) else f"{state_file}: {type(e).__name__}: {e}"
        raise ReplayStateError(f"replay dump {path} cannot be loaded ({why})") from e


def _check_same_layout(have: TensorDict, got: TensorDict) -> None:
    mine = {k: (v.dtype, v.shape) for k, v in have.items(include_nested=True, leaves_only=True)}
    theirs = {k: (v.dtype, v.shape) for k, v in got.items(include_nested=True, leaves_only=True)}
    if mine != theirs:
        diff = sorted(set(mine.items()) ^ set(theirs.items()), key=str)[:4]
        raise ReplayStateError(f"the dump's keys/dtypes/shapes differ from this buffer's stored data: {diff}")
