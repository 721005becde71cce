"""Reading files a user can be handed (replay dumps, run checkpoints, offline datasets) as data, never as code:
every loader reads through these functions, which check a file *before* anything in it is deserialised and raise
:class:`UnsafeFileError` naming it (docs/api/data.md, "Loading files safely")."""
from __future__ import annotations

import contextlib
import json
import os
import pickletools
import stat
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .._optional import require

_PICKLE_CONTAINERS = {"collections OrderedDict", "torch Size", "torch device", "torch._utils _rebuild_tensor_v2",
                      "torch._utils _rebuild_parameter", "_codecs encode", "builtins set", "__builtin__ set",
                      "builtins complex", "__builtin__ complex"}
_ALLOWED_GLOBALS = frozenset(
    _PICKLE_CONTAINERS
    | {f"torch {n}" for n in dir(torch) if n.endswith("Storage") and n not in ("TypedStorage", "UntypedStorage")}
    | {f"torch {n}" for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)})
_CODE_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"}
_HDF5_KINDS = "biuf"  # bool, int, uint, float
_HDF5_MAX_DEPTH = 8
#: largest pickle record (``data.pkl``) of a ``torch.save`` file that is read (tensors live in other records; a
#: checkpoint's is ~10 KB plus ~100 bytes per tensor); scanning one takes up to a few seconds
MAX_PICKLE_BYTES = 2 * 2**20
#: most values a pickle stream may hold on its stack at once (a ``torch.save`` of nested dicts holds a few thousand)
MAX_PICKLE_STACK = 100_000


class UnsafeFileError(ValueError):
    """A file is not tensors, plain values, JSON or numeric arrays, or is a link or out of place; it was not loaded."""


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_archive_sizes(path: Path, z: zipfile.ZipFile) -> None:
    """Refuse a zip archive whose declared sizes do not fit, before anything in it is decompressed: a pickle record
    over ``MAX_PICKLE_BYTES``, a compressed record declaring more than the file holds (``torch.save`` never
    compresses), or records declaring more than :func:`available_memory`."""
    infos = z.infolist()
    pickled = sum(i.file_size for i in infos if i.filename.endswith(".pkl"))
    total, size = sum(i.file_size for i in infos), path.stat().st_size
    packed = any(i.compress_type != zipfile.ZIP_STORED for i in infos)
    memory = available_memory()
    if pickled > MAX_PICKLE_BYTES or (packed and total > size) or total > memory:
        why = (f"{pickled} of pickle record, at most MAX_PICKLE_BYTES={MAX_PICKLE_BYTES}" if pickled > MAX_PICKLE_BYTES
               else f"more than the {memory} bytes of memory available" if total > memory
               else "compressed records declaring more than the file holds")
        raise UnsafeFileError(f"{path} declares {total} bytes ({why}) in a {size}-byte file; refused before reading "
                              f"it")


def _scan_pickle(path: Path, stream: bytes) -> set[str]:
    """The globals a pickle stream references, after a static walk over its opcodes (nothing is built or called)
    that tracks its stack: a stream that would hold more than ``MAX_PICKLE_STACK`` values at once is refused."""
    found, odd, stack, marks = set(), set(), 0, []
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name in _CODE_OPCODES:
                odd.add(op.name)
            elif op.name == "GLOBAL":
                found.add(str(arg))
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before or (op.name == "POP" and marks and marks[-1] == stack):
                if not marks:
                    raise ValueError(f"{op.name} without a MARK")
                stack = marks.pop() - (before.index(pickletools.markobject) if pickletools.markobject in before
                                       else 0)
            else:
                stack -= len(before)
            if stack < 0:
                raise ValueError(f"{op.name} pops from an empty stack")
            if pickletools.markobject in after:
                marks.append(stack)
            else:
                stack += len(after)
            if stack + len(marks) > MAX_PICKLE_STACK:
                raise UnsafeFileError(f"{path}: its pickle stream holds more than MAX_PICKLE_STACK="
                                      f"{MAX_PICKLE_STACK} values at once (torch.save never writes that); refused")
    except (ValueError, EOFError) as e:
        if isinstance(e, UnsafeFileError):
            raise
        raise UnsafeFileError(f"{path}: malformed pickle stream ({_first_line(e)}); refused") from e
    if odd:
        raise UnsafeFileError(f"{path} holds pickle opcodes {sorted(odd)} (torch.save with its default protocol never "
                              f"writes them); refused")
    return found


def _pickle_globals(path: Path) -> set[str]:
    """Globals referenced by the pickle record of a torch.save zip archive; refuses anything else."""
    if not zipfile.is_zipfile(path):
        raise UnsafeFileError(f"{path} is not a torch.save archive (zip); refused without unpickling it (a legacy "
                              f"torch.save file or a plain pickle can run code)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            records = [n for n in names if n.endswith(".pkl")]
            if len(records) != 1 or not records[0].endswith("/data.pkl") or any("/code/" in n for n in names):
                raise UnsafeFileError(f"{path} is not a plain torch.save archive (pickle records {records}); refused")
            check_archive_sizes(path, z)
            with z.open(records[0]) as f:
                stream = f.read(MAX_PICKLE_BYTES + 1)
            if len(stream) > MAX_PICKLE_BYTES:
                raise UnsafeFileError(f"{path}: its pickle record {records[0]} holds more than MAX_PICKLE_BYTES="
                                      f"{MAX_PICKLE_BYTES} bytes; refused")
    except (zipfile.BadZipFile, OSError, RuntimeError) as e:
        raise UnsafeFileError(f"{path} is a damaged archive ({_first_line(e)}); refused") from e
    return _scan_pickle(path, stream)


def load_tensors(path: str | os.PathLike) -> Any:
    """Read a ``torch.save`` file of tensors, numbers, strings, bytes, ``None`` and containers of those: its declared
    sizes are checked (:func:`check_archive_sizes`) and its pickle stream scanned first (any other global, or a stack
    over ``MAX_PICKLE_STACK``, raises :class:`UnsafeFileError`), then read with
    ``torch.load(weights_only=True, map_location="cpu")``. A missing file is a FileNotFoundError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise UnsafeFileError(f"{path} is not a regular file; refused")
    bad = sorted(_pickle_globals(path) - _ALLOWED_GLOBALS)
    if bad:
        names = ", ".join(g.replace(" ", ".") for g in bad)
        raise UnsafeFileError(f"{path} holds objects other than tensors and plain values ({names}); it was not "
                              f"loaded (torchrl_amago never unpickles code)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refusals, damaged records: name the file
        raise UnsafeFileError(f"{path} cannot be read as tensors ({type(e).__name__}: {_first_line(e)})") from e


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (anything else raises :class:`UnsafeFileError`; a missing file is a FileNotFoundError)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_symlink() or not path.is_file():
        raise UnsafeFileError(f"{path} is not a regular file; refused")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsafeFileError(f"{path} is not a JSON file ({_first_line(e)}); refused") from e
    except RecursionError:
        raise UnsafeFileError(f"{path} nests its values deeper than Python can read; refused") from None


def check_folder(root: str | os.PathLike, allowed: Callable[[str], bool], what: str) -> list[str]:
    """The ``/``-separated paths of the files under ``root``, after checking that each is a regular file (no symlink,
    pipe or device) that ``allowed(path)`` accepts; else :class:`UnsafeFileError` naming the first bad entry."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} is not a folder")
    files = []
    for folder, dirs, names in os.walk(root):
        for name in sorted(dirs + names):
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeFileError(f"{p} is a symlink; a {what} holds plain files only; refused")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise UnsafeFileError(f"{p} is not a regular file; refused")
            if not allowed(rel):
                raise UnsafeFileError(f"{p} is not part of a {what} (unexpected file {rel!r}); nothing was loaded")
            files.append(rel)
    return files


def available_memory() -> int:
    """Bytes a new array may take: ``MemAvailable`` (else the free physical pages), capped by ``RLIMIT_AS``."""
    avail = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 2**63 - 1
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, soft)
    return int(avail)


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike):
    """``h5py.File(path, "r")``; a file that is not HDF5 raises :class:`UnsafeFileError` naming it."""
    h5py = require("h5py", "h5py", "HDF5 datasets")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UnsafeFileError(f"{os.fspath(path)} is not a readable HDF5 file ({_first_line(e)}); refused") from e
    with f:
        yield f


def read_hdf5(group, name: str, file: str | os.PathLike, keys: Sequence[str] | None = None, _depth: int = 0,
              max_bytes: int | None = None):
    """Member ``name`` of an open h5py ``group``: a Dataset as a numpy array, a Group as a dict of its members (only
    ``keys`` when given). Only hard-linked numeric datasets stored in the file, of at most ``max_bytes`` (default:
    :func:`available_memory`), are read; anything else raises :class:`UnsafeFileError`. Attributes are never read."""
    h5py = require("h5py", "h5py", "HDF5 datasets")
    where = f"{file}: {group.name.rstrip('/')}/{name}"
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise UnsafeFileError(f"{where} is a {type(link).__name__}; only members stored in the file are read")
    node = group[name]
    if isinstance(node, h5py.Group):
        if _depth >= _HDF5_MAX_DEPTH:
            raise UnsafeFileError(f"{where}: groups nested deeper than {_HDF5_MAX_DEPTH} (or a cycle); refused")
        missing = [k for k in keys or () if k not in node]
        if missing:
            raise KeyError(f"{where} lacks {missing}")
        return {k: read_hdf5(node, k, file, None, _depth + 1, max_bytes) for k in (keys or node.keys())}
    if not isinstance(node, h5py.Dataset):
        raise UnsafeFileError(f"{where} is a {type(node).__name__}, not a dataset or group; refused")
    if node.dtype.kind not in _HDF5_KINDS:
        raise UnsafeFileError(f"{where} has dtype {node.dtype} (object, variable-length, string or compound data); "
                              f"only numeric arrays are read")
    if node.external or node.is_virtual:
        raise UnsafeFileError(f"{where} stores its data outside the file (external or virtual dataset); refused")
    size = int(node.size) * node.dtype.itemsize
    limit = available_memory() if max_bytes is None else max_bytes
    if size > limit:
        raise UnsafeFileError(f"{where} declares shape {list(node.shape)} of {node.dtype} ({size} bytes), more than "
                              f"the {limit} bytes of memory available; refused before reading it")
    return node[()]


__all__ = ["UnsafeFileError", "load_tensors", "load_json", "check_folder", "read_hdf5", "open_hdf5",
           "available_memory", "MAX_PICKLE_BYTES", "MAX_PICKLE_STACK"]
