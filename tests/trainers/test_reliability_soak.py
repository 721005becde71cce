"""Kill-anywhere soak (slow): a tiny run is SIGKILLed 20 times at random moments, each time resumed by a new
process. At the end the counters equal the stored replay, every stored trial is intact (the FIFO wraps, so
kills also land after checkpointed rows were overwritten), nothing is NaN, the metrics have one row per epoch
and the replay uses the disk of one run.

Run: `PYTHONPATH=$PWD python -m pytest -q -m slow tests/trainers/test_reliability_soak.py -s`
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.trainers.test_reliability import H, resume_fresh, run_dir

KILLS = 20
CAP = 40  # 8 steps per epoch: the FIFO wraps after 5 epochs, so kills also hit overwriting writes

CHILD = """
import sys
from pathlib import Path
from tests.trainers.test_reliability import trainer
t = trainer(Path(sys.argv[1]), dset_max_size=int(sys.argv[3]), grads_per_epoch=2)
t.resume()
print("ready", t.epoch, flush=True)
extra = sys.argv[2]
t.train(epochs=t.epoch + int(extra[1:]) if extra.startswith("+") else int(extra))
print("done", t.epoch, flush=True)
t.close()
"""


def _child(tmp_path, epochs):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), epochs, str(CAP)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _files_bytes(path, memmaps=True):
    """Bytes of the replay's memmaps (or of every other file: marks, metadata)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
               if f.endswith(".memmap") == memmaps)


@pytest.mark.slow
def test_twenty_random_kills_then_resume(tmp_path):
    rng = random.Random(0)
    log = []
    sizes = []
    for k in range(KILLS):
        p = _child(tmp_path, "100000")
        line = p.stdout.readline()  # "ready <epoch>" once resumed
        if not line.startswith("ready"):
            p.wait()
            raise AssertionError(f"child {k} failed to resume:\n{line}{p.stderr.read()[-3000:]}")
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
        log.append({"kill": k, "resumed_at_epoch": int(line.split()[1]), "after_s": round(delay, 2)})
        if (run_dir(tmp_path) / "buffer").exists():
            sizes.append(_files_bytes(run_dir(tmp_path) / "buffer"))
    p = _child(tmp_path, "+3")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    final_epoch = int(out.split()[-1])

    r = resume_fresh(tmp_path, dset_max_size=CAP, grads_per_epoch=2)
    idx = r.replay._writer.index
    assert r.epoch == final_epoch
    assert r.env_steps == idx.write_count == final_epoch * 2 * (H + 1)  # counters equal the stored data
    units, lengths = idx.sampleable()
    assert units.numel() > 0
    for u, n in zip(units.tolist(), lengths.tolist()):  # each stored trial is one trial's consecutive steps
        rows = r.replay.storage[idx.physical(torch.full((n,), u), torch.arange(n))]
        t = rows["time_idx"].reshape(-1)
        assert torch.equal(t, t[0] + torch.arange(n)), f"unit {u}: time_idx {t.tolist()}"
        assert torch.equal(rows["next", "time_idx"].reshape(-1), t + 1)
        assert torch.isfinite(rows["observation"]).all() and torch.isfinite(rows["next", "reward"]).all()
    for k, v in r.loss.state_dict().items():
        assert not v.is_floating_point() or torch.isfinite(v).all(), k
    epochs = [int(rec["epoch"]) for rec in r.logger.records]
    assert epochs == list(range(final_epoch)), epochs  # one metrics row per epoch: none lost, none twice
    buf = run_dir(tmp_path) / "buffer"
    assert len(os.listdir(buf)) == 1
    assert len(set(sizes[1:] + [_files_bytes(buf)])) == 1, sizes  # disk flat across 20 kills and resumes
    assert _files_bytes(buf, memmaps=False) < 64 * 1024  # undo rows of at most one epoch, no copies
    r.close()
    print(json.dumps({"soak": "kill-anywhere", "kills": KILLS, "final_epoch": final_epoch,
                      "env_steps": r.env_steps, "stored_trials": int(units.numel()),
                      "buffer_bytes": sizes[-1], "kills_log": log[:3]}))
