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
from ..config import CONFIG_FILE, CONFIG_FORMAT, IDENTITY_FILE, folder_name
from .checkpoint import COMMITS, CheckpointError, save_text

IDENTITY_FORMAT = "torchrl_amago.run.v1"


def _not_own_file(st: os.stat_result) -> str:
    return (f"has {st.st_nlink} hard links (other names for the same file)" if stat.S_ISREG(st.st_mode)
            else "is not a regular file")


def _diff(stored: dict, now: dict) -> str:
    keys = [k for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)]
    return "; ".join(f"{k}: the run's {stored.get(k)!r}, now {now.get(k)!r}" for k in keys[:4]) + (
        " ..." if len(keys) > 4 else "")


class RunDirError(CheckpointError):
    """The run folder is in use by another process, holds a link or a special file, or belongs to another run."""


class RunDir:
    """``<buffer_dir>/<run_name>``, locked for this process (rank `rank` of a torchrun job) until :meth:`close`."""

    def __init__(self, buffer_dir: str, run_name: str, rank: int = 0, settings: dict | None = None,
                 read_only: bool = False):
        problem = folder_name(run_name) if isinstance(run_name, str) else "must be a string"
        if problem:
            raise ValueError(f"--run_name {problem}, got {run_name!r}")
        self.path = os.path.join(buffer_dir, run_name)
        self.rank = rank
        self.settings = json.loads(json.dumps(settings or {}, default=str, sort_keys=True))  # as run.json has them
        if os.path.islink(self.path):
            raise RunDirError(f"{self.path} is a symlink: a run folder is a plain folder inside --buffer_dir (point "
                              f"--buffer_dir elsewhere instead)")
        self._release = lambda: None
        if read_only:  # --eval_only: no lock, nothing written; a run that trains meanwhile replaces files atomically
            if not os.path.isfile(os.path.join(self.path, IDENTITY_FILE)):
                raise RunDirError(f"{self.path} holds no run ({IDENTITY_FILE} is missing): --eval_only evaluates a "
                                  f"run folder made by a training run; check --buffer_dir and --run_name")
            self.check_plain()
            self.identity = self._read_identity()
            self.check_settings(self.identity["settings"], IDENTITY_FILE, ignore=("script",))  # read-only: any script
            return
        os.makedirs(self.path, exist_ok=True)
        self._fd = self._lock(os.path.join(self.path, "run.lock" if rank == 0 else f"run_rank{rank}.lock"))
        self._release = weakref.finalize(self, os.close, self._fd)
        with self.released_on_error():
            self.check_plain()
            self.identity = self._read_identity()
            if rank == 0 and not os.path.exists(os.path.join(self.path, "ckpts", "latest.pt")):
                self.check_fresh_start()

    def _lock(self, path: str) -> int:
        try:
            import fcntl
        except ImportError:  # Windows
            raise RunDirError("run folders are locked with fcntl.flock, which this platform lacks: the trainer runs "
                              "on Linux and macOS") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            kind = "a symlink" if os.path.islink(path) else f"not a file this process can lock ({e.strerror})"
            raise RunDirError(f"{path} is {kind}: the lock file of a run is a plain file inside its folder; remove "
                              f"it (no trainer holds a lock through it)") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            raise RunDirError(f"{path} {_not_own_file(st)}: the lock file of a run is a plain file of its own; "
                              f"remove it (no trainer holds a lock through it)")
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
        """Refuse a symlink, FIFO, device or file with more than one hard link anywhere in the run folder."""
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
                if stat.S_ISREG(mode) and os.lstat(p).st_nlink > 1:
                    raise RunDirError(f"{p} {_not_own_file(os.lstat(p))}: a run writes its files in place, so a "
                                      f"write here would change the file's other names too, which may lie outside "
                                      f"the run; replace it by a copy of its own (cp {p} {p}.copy && mv {p}.copy {p})")

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

    def held_run(self) -> list[str]:
        """What of an earlier run the folder holds that a fresh start would replace: checkpoints, metrics, a
        committed replay, or a ``run.json`` / ``config.json`` of other settings."""
        found = []
        if self.identity is not None and self.identity["settings"] != self.settings:
            found.append(f"{IDENTITY_FILE} (settings {_diff(self.identity['settings'], self.settings)})")
        if self.identity is None and os.path.exists(os.path.join(self.path, CONFIG_FILE)):
            found.append(f"{CONFIG_FILE} (without {IDENTITY_FILE})")
        ckpts = os.path.join(self.path, "ckpts")
        found += [f"ckpts/{n}" for n in sorted(os.listdir(ckpts)) if n.endswith(".pt")] if os.path.isdir(ckpts) else []
        metrics = os.path.join(self.path, "logs", "metrics.csv")
        if os.path.exists(metrics) and os.path.getsize(metrics):
            found.append("logs/metrics.csv")
        for name in sorted(os.listdir(self.path)):
            if (name == "buffer" or name.startswith("buffer_rank")) and os.path.isdir(os.path.join(self.path, name)):
                found += [f"{name}/{g}/{COMMITS}" for g in sorted(os.listdir(os.path.join(self.path, name)))
                          if os.path.exists(os.path.join(self.path, name, g, COMMITS))]
        return found

    def check_fresh_start(self) -> None:
        """Refuse to start a new run in a folder that holds one (:meth:`held_run`) without its ``ckpts/latest.pt``."""
        found = self.held_run()
        if found:
            raise RunDirError(f"{self.path} holds a run without its checkpoint ckpts/latest.pt: " + ", ".join(found) +
                              ". A new run would replace it. To continue that run, put its latest.pt back; to start "
                              "a new one, use another --run_name or remove the folder")

    def check_settings(self, stored: dict, source: str, ignore: tuple = ()) -> None:
        """Refuse to continue a run whose defining settings (`stored`, from `source`) differ from this one's (but for
        the settings in `ignore`)."""
        now = self.settings
        changes = [f"{k}: the run's {stored.get(k)!r}, now {now.get(k)!r}"
                   for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k) and k not in ignore]
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

    def write_config(self, config: dict, **chosen) -> None:
        """Write the run's resolved config and settings to ``config.json`` (rank 0; a new run can start from it:
        ``--config``); `chosen`: what the config left to the machine or the env, beside it (``precision``, from
        ``--mixed_precision auto``; ``observations``, the env's observation shapes)."""
        if self.rank == 0:
            text = json.dumps({"format": CONFIG_FORMAT, "config": config, "settings": self.settings, **chosen},
                              indent=1, sort_keys=True)
            save_text(os.path.join(self.path, CONFIG_FILE), text + "\n")

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
