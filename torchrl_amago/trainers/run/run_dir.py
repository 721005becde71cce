"""A run's folder, ``<buffer_dir>/<run_name>``: one run, one process, plain files only (docs/api/trainers.md)."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import stat
import sys
import time
import uuid
import weakref

from ...data.safe_files import UnsafeFileError, load_json
from ..config import folder_name
from .checkpoint import CheckpointError, save_text

IDENTITY_FILE = "run.json"
IDENTITY_FORMAT = "torchrl_amago.run.v1"


class RunDirError(CheckpointError):
    """The run folder is in use by another process, holds a link or a special file, or belongs to another run."""


class RunDir:
    """``<buffer_dir>/<run_name>``, locked for this process (rank `rank` of a torchrun job) until :meth:`close`."""

    def __init__(self, buffer_dir: str, run_name: str, rank: int = 0, settings: dict | None = None):
        problem = folder_name(run_name) if isinstance(run_name, str) else "must be a string"
        if problem:
            raise ValueError(f"--run_name {problem}, got {run_name!r}")
        self.path = os.path.join(buffer_dir, run_name)
        self.rank = rank
        self.settings = json.loads(json.dumps(settings or {}, default=str, sort_keys=True))  # as run.json has them
        if os.path.islink(self.path):
            raise RunDirError(f"{self.path} is a symlink: a run folder is a plain folder inside --buffer_dir (point "
                              f"--buffer_dir elsewhere instead)")
        os.makedirs(self.path, exist_ok=True)
        self._fd = self._lock(os.path.join(self.path, "run.lock" if rank == 0 else f"run_rank{rank}.lock"))
        self._release = weakref.finalize(self, os.close, self._fd)
        with self.released_on_error():
            self.check_plain()
            self.identity = self._read_identity()

    def _lock(self, path: str) -> int:
        try:
            import fcntl
        except ImportError:  # Windows
            raise RunDirError("run folders are locked with fcntl.flock, which this platform lacks: the trainer runs "
                              "on Linux and macOS") from None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        for attempt in range(2):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip()
                if attempt == 0 and holder.startswith(f"pid {os.getpid()} "):
                    gc.collect()  # an unreferenced AMAGOTrainer of this process
                    continue
                os.close(fd)
                raise RunDirError(f"{self.path} is in use by another trainer ({holder or 'holder unknown'}): one run "
                                  f"folder belongs to one run; wait for it to end or stop it, or use another "
                                  f"--run_name") from None
            except OSError as e:
                os.close(fd)
                raise RunDirError(f"cannot lock {path} ({e.strerror}): run folders need a file system with "
                                  f"flock support") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        return fd

    def close(self) -> None:
        """Release the lock (idempotent; also on garbage collection)."""
        self._release()

    @contextlib.contextmanager
    def released_on_error(self):
        """Release the lock if the block raises."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def check_plain(self) -> None:
        """Refuse a symlink, FIFO or device anywhere in the run folder."""
        for folder, dirs, files in os.walk(self.path):
            for name in dirs + files:
                p = os.path.join(folder, name)
                try:
                    mode = os.lstat(p).st_mode
                except FileNotFoundError:  # renamed by another rank meanwhile
                    continue
                if stat.S_ISLNK(mode):
                    raise RunDirError(f"{p} is a symlink: a run folder holds plain files and folders only, so "
                                      f"nothing of the run is read or written outside it; replace it by the file")
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise RunDirError(f"{p} is not a regular file or folder; move it out of the run folder")

    def _read_identity(self) -> dict | None:
        p = os.path.join(self.path, IDENTITY_FILE)
        if not os.path.exists(p):
            return None
        try:
            ident = load_json(p)
        except UnsafeFileError as e:
            raise RunDirError(f"{e}; move it away to resume this run") from e
        if not (isinstance(ident, dict) and ident.get("format") == IDENTITY_FORMAT and isinstance(
                ident.get("run_id"), str) and isinstance(ident.get("settings"), dict)):
            raise RunDirError(f"{p} is not a run identity written by torchrl_amago (format {IDENTITY_FORMAT!r}); "
                              f"move it away to resume this run")
        return ident

    def check_settings(self, stored: dict, source: str) -> None:
        """Refuse to continue a run whose defining settings (`stored`, from `source`) differ from this one's."""
        now = self.settings
        changes = [f"{k}: the run's {stored.get(k)!r}, now {now.get(k)!r}"
                   for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)]
        if changes:
            raise RunDirError(f"{self.path} holds another run ({source}):\n  " + "\n  ".join(changes) +
                              "\ngive this run its own --run_name, or resume that one with its own settings (from "
                              "another script: AMAGOTrainer(settings={'script': ...}))")

    def new_identity(self) -> dict:
        return {"format": IDENTITY_FORMAT, "run_id": uuid.uuid4().hex, "settings": self.settings}

    def identity_of(self, ckpt_run, path: str) -> dict:
        """The identity of a checkpoint being resumed, checked against run.json and this run's settings."""
        if ckpt_run is None:
            return self.identity or self.new_identity()
        if not (isinstance(ckpt_run, dict) and isinstance(ckpt_run.get("run_id"), str)
                and isinstance(ckpt_run.get("settings"), dict)):
            raise CheckpointError(f"checkpoint {path}: entry 'run' must hold run_id and settings, got {ckpt_run!r}")
        if self.identity is not None and self.identity["run_id"] != ckpt_run["run_id"]:
            raise RunDirError(f"checkpoint {path} belongs to run {ckpt_run['run_id']}, but {self.path} is run "
                              f"{self.identity['run_id']} ({IDENTITY_FILE}): it comes from another run; refused")
        self.check_settings(ckpt_run["settings"], f"settings of {path}")
        return self.identity or {"format": IDENTITY_FORMAT, "run_id": ckpt_run["run_id"], "settings": self.settings}

    def keep(self, identity: dict) -> None:
        """Go on as `identity` (rank 0 writes a new one to run.json)."""
        if identity is not self.identity and self.rank == 0:
            save_text(os.path.join(self.path, IDENTITY_FILE), json.dumps(identity, indent=1))
        self.identity = identity

    def entry(self) -> dict:
        """The identity as a checkpoint stores it (key ``run``)."""
        return {"run_id": self.identity["run_id"], "settings": self.identity["settings"]}


def run_settings(settings: dict | None, **known) -> dict:
    """The settings that define a run beyond its config: the script that built the trainer, `known` (what
    the trainer is told about the env) and `settings` (an example's env flags, which may replace the others)."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    f = sys._getframe(1)
    while f is not None and (f.f_code.co_name == "__init__" or os.path.abspath(f.f_code.co_filename).startswith(
            package + os.sep)):
        f = f.f_back
    name = f.f_code.co_filename if f is not None else ""
    return {"script": os.path.basename(name) if os.path.isfile(name) else "interactive", **known, **(settings or {})}
