"""SIGTERM and SIGINT end a run with one line: which epoch its checkpoint keeps and how to resume it."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGINT while a run trains (a KeyboardInterrupt, so ``except
    Exception`` blocks let it through and the run's ``finally`` blocks close it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def kept_epoch(latest: str) -> int | None:
    """The epoch the checkpoint `latest` holds (None: no readable checkpoint)."""
    from .checkpoint import CheckpointError, load_checkpoint

    if not os.path.exists(latest):
        return None
    try:
        return int(load_checkpoint(latest, required=("counters",))["counters"]["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def resume_command() -> str:
    """The command that started this process, to run again (or what to call from an interactive session)."""
    if not sys.argv or sys.argv[0] in ("", "-c", "-m"):
        return "the same call again (AMAGOTrainer(...).run() with the same config)"
    return shlex.join(["python", *sys.argv])


def stopped_line(signum: int, latest: str, epochs: int | None = None) -> str:
    """The line a stopped run prints: the signal, the epoch kept, the command that resumes it (a run of `epochs`
    epochs that has them all was stopped in its final eval: the command evaluates again)."""
    epoch = kept_epoch(latest)
    if epoch is not None and epochs is not None and epoch >= epochs:
        return (f"stopped by {signal.Signals(signum).name} in the final eval: {latest} keeps all {epoch} epochs; to "
                f"evaluate them, run {resume_command()}")
    if epoch is None:
        return f"stopped by {signal.Signals(signum).name}: no epoch was checkpointed yet; to start again, run " \
               f"{resume_command()}"
    return (f"stopped by {signal.Signals(signum).name}: {latest} keeps epochs 0..{epoch - 1}; to resume at epoch "
            f"{epoch}, run {resume_command()}")


@contextlib.contextmanager
def stop_on_signals(latest: str, epochs: int | None = None):
    """Within the block, SIGTERM and SIGINT raise :class:`RunStopped`; it ends the block with one line on stderr
    (:func:`stopped_line`, from the checkpoint `latest`) and ``SystemExit(128 + signal)``. What the checkpoint
    holds is kept: a stop at any point is as safe as a kill. A stop that a library's cleanup turned into another error
    is recognised by the error's context (:func:`_stop_behind`). Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise RunStopped(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    except BaseException as error:
        e = _stop_behind(error)
        if e is None:
            raise
        for s, handler in previous.items():  # a second signal while closing: the default behaviour
            signal.signal(s, handler)
        print(stopped_line(e.signum, latest, epochs), file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_behind(error: BaseException) -> RunStopped | None:
    """The RunStopped that `error` is, or that code handling it turned into `error` (a library's cleanup that fails
    while the stop passes through it, e.g. tensordict's `to_module`): its chain of contexts, None when there is none."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RunStopped):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
