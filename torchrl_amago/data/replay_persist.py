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
- :func:`restore_replay` re-attaches the memmaps **in place** (no copy of the capacity): the state is checked for
  consistency (:func:`validate_replay_state`) and every file for existence and exact size first; a problem raises
  :class:`ReplayStateError` naming the file or field.
- Undo log (:class:`UndoLog`, registered with ``rb.register_write_hook``): checkpointed rows never change. Once the
  FIFO is full, a write overwrites the oldest slots; before a write overwrites rows that the last durable checkpoint
  holds, their old values are saved (fsynced) to ``<gen>/undo/``. Resuming that checkpoint writes them back, so every trial it holds is
  restored bit for bit. A new checkpoint makes the older undo files obsolete; they are then deleted.
- :func:`dump_replay` / :func:`load_replay` (``SequenceReplayBuffer.dumps``/``loads``): the same state in
  ``<dump>/replay_state.pt`` next to copies of the memmaps in ``<dump>/storage/``. A dump is written into a hidden
  folder beside ``<dump>`` and put in place by a rename once complete (an earlier dump stays whole until then);
  ``replay_state.pt`` names every file of a dump, and a non-empty folder that is not exactly a dump is refused
  (:func:`write_folder`). Loading checks the folder first (plain files, only those two kinds), reads the state with
  :func:`~torchrl_amago.data.safe_files.load_tensors`, checks it for consistency (:func:`validate_replay_state`)
  and every memmap, then copies the data into the buffer.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable

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


_MAX_LEAVES = 10_000  # stored keys a replay state may declare


class ReplayStateError(ValueError):
    """Replay files on disk do not match the checkpoint (missing, truncated, wrong key / dtype / shape), or the
    replay state is not consistent (the message names the field)."""


def _key_str(key) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def leaf_check(key: list, dtype: str, shape: list, file: str) -> str:
    """Checksum of one stored key's declared layout, saved beside it: a state whose dtype, shape or file was edited
    afterwards no longer matches it (the only sign of, e.g., float32 relabelled int32, which has the same size)."""
    return hashlib.sha256(json.dumps([list(key), str(dtype), [int(s) for s in shape], str(file)]).encode()
                          ).hexdigest()[:16]


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
        self._handle = None

    def install(self) -> "UndoLog":
        """Register :meth:`before_write` as the buffer's write hook (``rb.register_write_hook``), in place of the
        UndoLog installed on this buffer before, if any. Returns self."""
        previous = _INSTALLED.pop(self.rb, None)
        if previous is not None:
            previous.remove()
        self._handle = self.rb.register_write_hook(self.before_write)
        _INSTALLED[self.rb] = self
        return self

    def remove(self) -> None:
        """Stop saving rows before writes (unregister the hook)."""
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
        keys, values = [], []
        for key, v in rows.items(include_nested=True, leaves_only=True):
            keys.append(list(key) if isinstance(key, tuple) else [key])
            values.append(v.clone())
        self.dir.mkdir(parents=True, exist_ok=True)
        save_durably(self.dir / f"{w}_{lo}.pt", {"protects": w, "gpos": gpos, "keys": keys, "values": values})

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.pt")) if self.dir.is_dir() else []

    def apply(self, write_count: int) -> int:
        """Write back the saved rows of the checkpoint at ``write_count``; returns the number of rows restored.

        Each file is checked before any row is written: positions inside the checkpoint's stored range, keys the
        storage holds, values of the stored dtype and shape (an error names the file and the field)."""
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


_INSTALLED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # buffer -> its installed UndoLog


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


def validate_replay_state(rb, state, source: str = "the replay") -> None:
    """Check a replay state (:func:`replay_state`, a dump's ``replay_state.pt``) against itself and against ``rb``
    before anything of it is used; a :class:`ReplayStateError` names the field.

    Checked: version and capacity; the trial table and the write count (``TrialWriter.check_state``); the storage
    length against the written steps (``min(write_count, capacity)``); every stored key's name, dtype, shape (first
    dim = capacity), file (``<key path>.memmap``) and layout checksum, and, when ``rb`` already holds data, its
    dtype and shape against ``rb``'s own; the sampler settings (a dict), batch size (None or >= 1) and RNG state
    (a byte tensor a generator accepts)."""
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

    The state is checked first (:func:`validate_replay_state`), then every memmap (:func:`check_files`). Rows that a
    later write overwrote are restored from the undo log. Returns ``{"restored_rows": n}``.
    """
    gen_dir = Path(gen_dir).absolute()
    folder = gen_dir / STORAGE_DIR
    validate_replay_state(rb, state, "the checkpoint's replay")
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
    """Write ``rb`` to the folder ``path``: copies of its memmaps in ``storage/`` and ``replay_state.pt`` (trial table,
    layout naming every memmap, sampler settings, RNG, batch size and the state_dict of the buffer's transform:
    tensors and plain values).

    ``path`` must be new, empty, or an earlier dump (which is replaced); any other folder raises a ValueError naming
    it, and nothing is written or deleted. The dump is written into a hidden folder beside ``path`` and put in place
    once complete (:func:`write_folder`): a dump interrupted at any point leaves ``path`` as it was."""
    path = Path(path).absolute()
    scratch = Path(rb._storage.scratch_dir).absolute() if rb._storage.scratch_dir else None
    if scratch is not None and (scratch == path or path in scratch.parents):
        raise ValueError(f"dumps({path}): refused: it holds this buffer's own memmaps ({scratch}); dump elsewhere")
    check_dump_target(path, "replay dump", not_a_replay_dump)
    state = {"format": DUMP_FORMAT, **replay_state(rb), "transform": dict(rb._transform.state_dict())}
    src_root = Path(rb._storage.scratch_dir).absolute() if rb._storage.initialized else None

    def write(folder: Path) -> None:
        for leaf in state["storage"]["leaves"]:
            dst = folder / STORAGE_DIR / leaf["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / leaf["file"], dst)  # the memmaps are shared mappings: the file has every write
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
        save_durably(folder / DUMP_STATE_FILE, state)  # last: a folder without it is never loaded

    write_folder(path, write)


def _dump_entry(rel: str) -> bool:
    return rel == DUMP_STATE_FILE or (rel.startswith(STORAGE_DIR + "/") and rel.endswith(".memmap"))


def not_a_replay_dump(path) -> str | None:
    """None if the folder ``path`` is exactly a replay dump (``replay_state.pt`` of the dump format, and the memmaps
    it names, nothing else), else why not (naming the first entry that is not part of one). Reads the state only
    with :func:`~torchrl_amago.data.safe_files.load_tensors`."""
    path = Path(path)
    try:
        files = check_folder(path, _dump_entry, "replay dump")
        state_file = path / DUMP_STATE_FILE
        state = load_tensors(state_file)
        if not isinstance(state, dict) or state.get("format") != DUMP_FORMAT:
            return f"{state_file} is not a replay dump's state"
        named = {f"{STORAGE_DIR}/{leaf['file']}" for leaf in state["storage"]["leaves"]}
        extra = sorted(set(files) - named - {DUMP_STATE_FILE})
        if extra:
            return f"{path / extra[0]} is not named by {state_file}"
    except (OSError, ValueError, KeyError, TypeError) as e:  # UnsafeFileError included
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def check_dump_target(path: Path, what: str, why_not_ours: Callable[[Path], str | None]) -> None:
    """Raise a ValueError naming ``path`` unless it is a folder ``dumps`` may replace: missing, empty, or a ``what``
    written by ``dumps`` (``why_not_ours(path)`` is None)."""
    if path.is_symlink():
        raise ValueError(f"dumps({path}): refused: it is a symlink; a {what} is a folder of its own")
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"dumps({path}): refused: it is a file, not a folder")
    if not any(path.iterdir()):
        return
    why = why_not_ours(path)
    if why:
        raise ValueError(f"dumps({path}): refused: the folder holds files that are not a {what} ({why}); nothing "
                         f"was written or deleted: use an empty or new folder")


def write_folder(path: Path, write: Callable[[Path], None]) -> None:
    """Make the folder ``path`` by ``write(folder)`` into a new hidden folder beside it (same parent, so on the same
    file system), then put it in place: a rename onto a missing or empty ``path``, an atomic exchange with an
    earlier one (Linux ``renameat2(RENAME_EXCHANGE)``) after which the earlier one is deleted. Where the exchange
    is not available, the earlier folder is first renamed aside: a crash between the two renames leaves both
    complete folders beside ``path`` (``.<name>.old-*``, ``.<name>.tmp-*``) and ``path`` missing. A failure while
    writing removes the new folder and leaves ``path`` as it was; a kill leaves it as it was and the hidden folder
    beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # as mkdir would make it (mkdtemp makes 0o700)
        write(tmp)
        for folder, dirs, _ in os.walk(tmp):
            for d in dirs:
                fsync_dir(Path(folder) / d)
        fsync_dir(tmp)
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):  # tmp now holds the earlier folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0


def _check_room(rb, state: dict, path: Path) -> None:
    """Before a fresh buffer allocates the dump's layout: the folder of its memmaps must have room for it."""
    need = sum(torch.Size(leaf["shape"]).numel() * torch.empty((), dtype=_DTYPES[leaf["dtype"]]).element_size()
               for leaf in state["storage"]["leaves"])
    folder = Path(rb._storage.scratch_dir or tempfile.gettempdir()).absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ReplayStateError(f"storage.leaves: the dump's layout needs {need} bytes, the buffer's folder {folder} "
                               f"has {free} free; nothing was loaded")


def _check_transform(rb, state: dict) -> None:
    got = state.get("transform")
    if not isinstance(got, dict):
        raise ReplayStateError("transform: expected the transform's state_dict (a dict)")
    if not got:
        return
    mine = dict(rb._transform.state_dict())
    if set(got) != set(mine):
        raise ReplayStateError(f"transform: keys {sorted(got)} differ from this buffer's transform {sorted(mine)}")
    for k, v in got.items():
        if isinstance(mine[k], torch.Tensor) and (not isinstance(v, torch.Tensor) or v.shape != mine[k].shape):
            raise ReplayStateError(f"transform.{k}: {getattr(v, 'shape', type(v).__name__)} does not fit this "
                                   f"buffer's transform ({list(mine[k].shape)})")


def load_replay(rb, path) -> None:
    """Load a folder written by :func:`dump_replay` into ``rb`` (a copy: the dump is never written).

    Before anything is read, every entry of the folder must be a plain file, either ``replay_state.pt`` or a
    ``storage/**.memmap``; the state is read with :func:`~torchrl_amago.data.safe_files.load_tensors` and checked
    (:func:`validate_replay_state`, the transform state, room for the layout); every memmap it names is checked
    (inside the folder, exact size) and no other memmap may be there. Only then is anything written into ``rb``.
    Any failure raises :class:`~torchrl_amago.data.safe_files.UnsafeFileError` or :class:`ReplayStateError` naming
    the file (and the field)."""
    path = Path(path).absolute()
    state_file = path / DUMP_STATE_FILE
    if path.is_dir() and not state_file.exists():
        raise UnsafeFileError(f"{path} is not a replay dump written by SequenceReplayBuffer.dumps ({state_file} is "
                              f"missing; TorchRL's own dump format is not loaded, since it can hold pickles)")
    files = check_folder(path, _dump_entry, "replay dump")
    state = load_tensors(state_file)
    try:
        if not isinstance(state, dict) or state.get("format") != DUMP_FORMAT:
            raise ReplayStateError(f"format: not a replay dump (format {DUMP_FORMAT!r} expected)")
        validate_replay_state(rb, state, "the dump")
        _check_transform(rb, state)
        check_files(state, path / STORAGE_DIR)
        named = {f"{STORAGE_DIR}/{Path(leaf['file']).as_posix()}" for leaf in state["storage"]["leaves"]}
        extra = sorted(set(files) - named - {DUMP_STATE_FILE})
        if extra:
            raise UnsafeFileError(f"{path / extra[0]} is not named by {state_file}; nothing was loaded")
        st = rb._storage
        if state["storage"]["initialized"] and not st.initialized:
            _check_room(rb, state, path)
        td = _map_storage(state, path / STORAGE_DIR, writable=False)
        if td is None:
            if st.initialized:
                st._empty()
        else:
            if not st.initialized:
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
        why = (str(e) if str(path) in str(e) else f"{state_file}: {e}" if isinstance(e, ValueError)
               else f"{state_file}: {type(e).__name__}: {e}")
        raise ReplayStateError(f"replay dump {path} cannot be loaded ({why})") from e
