"""``SequenceReplayBuffer.dumps``/``loads``: the replay state in ``<dump>/replay_state.pt`` beside copies of the
memmaps in ``<dump>/storage/``; written atomically, loaded only after every file and field is checked
(docs/api/data.md, "A dump folder")."""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from tensordict import TensorDict

from .replay_persist import (DUMP_FORMAT, DUMP_STATE_FILE, STORAGE_DIR, ReplayStateError, fsync_dir,
                             check_trial_keys, leaf_bytes, load_table, map_storage, replay_state, save_durably,
                             validate_replay_state, write_error)
from .safe_files import UnsafeFileError, check_folder, load_tensors
from .writer import reserve_rows


def dump_replay(rb, path) -> None:
    """Write ``rb`` to the folder ``path``: copies of its memmaps in ``storage/`` and ``replay_state.pt`` (the
    replay state plus the transform's state_dict). ``path`` must be new, empty or an earlier dump, which is
    replaced only once the new dump is complete (:func:`write_folder`); any other folder raises a ValueError."""
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
            try:
                shutil.copyfile(src_root / leaf["file"], dst)  # shared mappings: the file has every write
                with open(dst, "rb+") as f:
                    os.fsync(f.fileno())
            except OSError as e:
                raise write_error(dst, e, "the dump was not written") from e
        save_durably(folder / DUMP_STATE_FILE, state)  # last: a folder without it is never loaded

    write_folder(path, write)


def _dump_entry(rel: str) -> bool:
    return rel == DUMP_STATE_FILE or (rel.startswith(STORAGE_DIR + "/") and rel.endswith(".memmap"))


def _unnamed(files: list, state: dict) -> str | None:
    """The first of a dump's ``files`` that its state does not name, if any."""
    named = {f"{STORAGE_DIR}/{Path(leaf['file']).as_posix()}" for leaf in state["storage"]["leaves"]}
    extra = sorted(set(files) - named - {DUMP_STATE_FILE})
    return extra[0] if extra else None


def not_a_replay_dump(path) -> str | None:
    """None if the folder ``path`` is exactly a replay dump (its state and the memmaps it names), else why not."""
    path = Path(path)
    try:
        files = check_folder(path, _dump_entry, "replay dump")
        state_file = path / DUMP_STATE_FILE
        state = load_tensors(state_file)
        if not isinstance(state, dict) or state.get("format") != DUMP_FORMAT:
            return f"{state_file} is not a replay dump's state"
        extra = _unnamed(files, state)
        if extra:
            return f"{path / extra} is not named by {state_file}"
    except (OSError, ValueError, KeyError, TypeError) as e:  # UnsafeFileError included
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def check_dump_target(path: Path, what: str, why_not_ours: Callable[[Path], str | None]) -> None:
    """Raise a ValueError unless ``dumps`` may replace ``path``: missing, empty, or a ``what`` per ``why_not_ours``."""
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
    """Make the folder ``path`` by ``write(folder)`` into a new hidden folder beside it, then put it in place: a
    rename, or an atomic exchange with an earlier one (Linux ``renameat2``), which is then deleted. Without the
    exchange the earlier folder is renamed aside first (a crash in between leaves both beside ``path``). A failure
    or a kill while writing leaves ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(path)
    tmp, lock = _locked_temp_folder(path)
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
        remove_stale_folders(path)  # an earlier dump moved aside by a killed dumps, now that path is whole
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if str(e.strerror).startswith("dumps("):  # a buffer of a mixed dump: named already
            raise
        raise OSError(e.errno, f"dumps({path}) failed: {e.strerror if e.filename else e}; {path} was left as it "
                               f"was", e.filename) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def _locked_temp_folder(path: Path) -> tuple[Path, int]:
    """A new hidden folder ``.<name>.tmp-XXXX`` beside ``path``, locked (``flock``) by this process while it writes;
    a lock left by a killed process is free, which is how :func:`remove_stale_folders` tells a stale one."""
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        fd = os.open(tmp, os.O_RDONLY)
        if _lock(fd, block=True) and os.fstat(fd).st_nlink > 0:
            return tmp, fd
        os.close(fd)  # removed as stale between mkdtemp and the lock: make another


def _lock(fd: int, block: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing is ever taken for stale
        return block
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def remove_stale_folders(path: Path) -> list[Path]:
    """Remove the hidden folders a killed ``dumps(path)`` left beside ``path``: ``.<name>.tmp-*`` folders no live
    process holds (their lock is free), owned by this user and holding only files a dump writes; and
    ``.<name>.old-*`` folders (an earlier dump moved aside) once ``path`` exists. Returns what was removed."""
    removed = []
    for p in sorted(path.parent.glob(f".{glob.escape(path.name)}.*-*")):
        kind = p.name[len(path.name) + 2:].split("-", 1)[0]
        if kind not in ("tmp", "old") or p.is_symlink() or not p.is_dir() or p.lstat().st_uid != os.getuid():
            continue
        if kind == "old" and not path.is_dir():
            continue  # the only copy of the earlier dump
        fd = os.open(p, os.O_RDONLY)
        try:
            if not _lock(fd, block=False) or not _only_dump_files(p):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        finally:
            os.close(fd)
    return removed


def _only_dump_files(folder: Path) -> bool:
    """Whether every entry under ``folder`` is a regular file or folder a dump (or mixed dump) writes."""
    for sub, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(sub) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                return False
            parts = rel.split("/")
            inner = "/".join(parts[1:]) if parts[0].startswith("buffer_") or parts[0].startswith(".buffer_") else rel
            if p.is_file() and not (_dump_entry(inner) or rel == "mixed.json" or inner == DUMP_STATE_FILE + ".tmp"):
                return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def _check_room(rb, state: dict) -> None:
    """Before a fresh buffer allocates the dump's layout: the folder of its memmaps must have room for it."""
    need = sum(leaf_bytes(leaf) for leaf in state["storage"]["leaves"])
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


def read_dump(rb, path) -> tuple[dict, TensorDict | None]:
    """Check the folder ``path`` (written by :func:`dump_replay`) against ``rb`` without writing anything: the
    folder, the state, every memmap and the stored trial keys. Returns the state and its rows (mapped privately);
    a failure raises :class:`~torchrl_amago.data.safe_files.UnsafeFileError` or :class:`ReplayStateError` naming the
    file."""
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
        extra = _unnamed(files, state)
        if extra:
            raise UnsafeFileError(f"{path / extra} is not named by {state_file}; nothing was loaded")
        if state["storage"]["initialized"] and not rb._storage.initialized:
            _check_room(rb, state)
        td = map_storage(state, path / STORAGE_DIR, writable=False)
        check_trial_keys(rb._writer, state, td)
        return state, td
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # ReplayStateError included
        raise _cannot_load(path, e) from e


def _cannot_load(path: Path, e: Exception) -> Exception:
    if isinstance(e, UnsafeFileError):
        return e
    state_file = path / DUMP_STATE_FILE
    why = (str(e) if str(path) in str(e) else f"{state_file}: {e}" if isinstance(e, ValueError)
           else f"{state_file}: {type(e).__name__}: {e}")
    return ReplayStateError(f"replay dump {path} cannot be loaded ({why})")


def load_replay(rb, path) -> None:
    """Load a folder written by :func:`dump_replay` into ``rb`` (a copy: the dump is never written), after
    :func:`read_dump` checked all of it; the disk space of the rows is reserved before they are written."""
    path = Path(path).absolute()
    state, td = read_dump(rb, path)
    try:
        st = rb._storage
        if td is not None:
            if not st.initialized:
                st._init(td[0])
            reserve_rows(st._storage, 0, int(state["capacity"]))
            st._storage.update_(td)
            st._len = int(state["storage"]["len"])
        elif st.initialized:
            st._empty()
        load_table(rb, state)
        rb._batch_size = state["batch_size"]
        if state["transform"]:
            rb._transform.load_state_dict(state["transform"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _cannot_load(path, e) from e
