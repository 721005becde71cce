"""The learner side of the many-node test (tests/trainers/test_remote_collection.py): joins the Ray cluster at
argv[1] as a fresh process (as `python examples/... --collector_address` would), collects from 2 remote workers,
then kills the raylet whose pid is argv[2] (a whole node lost) and reports the error it gets. Prints one JSON line."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from tests.trainers.test_remote_collection import FRAMES, make_env, make_policy, worker_of
from torchrl_amago.trainers.scale.remote_collection import RemoteCollectorError, make_remote_collector


def main(address: str, raylet_pid: int) -> dict:
    t0 = time.monotonic()
    c = make_remote_collector([make_env, make_env], make_policy(), frames_per_batch=FRAMES, address=address,
                              batch_timeout_s=120)
    out = {"start_s": round(time.monotonic() - t0, 1), "workers": c.worker_info()}
    it = iter(c)
    # until both workers have delivered (one may start well after the other on a loaded machine), 200 batches at most
    seen: set[int] = set()
    for n_batches in range(1, 201):
        seen.add(worker_of(next(it)))
        if len(seen) == 2 and n_batches >= 4:
            break
    out["batch_workers"], out["batches_before_kill"] = sorted(seen), n_batches
    os.kill(raylet_pid, signal.SIGKILL)
    t1 = time.monotonic()
    try:
        for _ in range(10**6):
            next(it)
        out["error"] = None
    except RemoteCollectorError as e:
        out["error"] = str(e)
    out["error_after_s"] = round(time.monotonic() - t1, 1)
    c.shutdown()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))), flush=True)
