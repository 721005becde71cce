"""The torchrun learner on this machine: 2 ranks (gloo, 127.0.0.1) equal one process on the concatenated batch;
ranks with different configs, a dead rank and a CUDA flag without CUDA fail clearly; per-rank replay layout."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.trainers.dist_worker import FixedBatches, batch_files, loss_state, make_env
from torchrl_amago.trainers import AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.run.checkpoint import load_checkpoint
from torchrl_amago.trainers.scale.device import device_from_flag
from torchrl_amago.trainers.scale.distributed import setup_distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H = 4  # dist_worker.HORIZON: trials of H + 1 steps


def _cfg(tmp_path, **kw) -> dict:
    base = dict(run_name="dist", buffer_dir=str(tmp_path / "runs"), epochs=3, timesteps_per_epoch=H + 1,
                grads_per_epoch=2, parallel_envs=4, eval_envs=2, eval_interval=0, eval_timesteps=H + 1,
                max_seq_len=H + 1, batch_size=3, memory_size=16, memory_layers=1, n_heads=2, tstep_hidden=16,
                tstep_out=16, actor_hidden=16, critic_hidden=16, dset_max_size=2000, progress_bar=False,
                ckpt_interval=0, lr_warmup_steps=2, eps_steps_anneal=100, dropout=0.0, learning_rate=3e-3,
                num_critics=1, timeout_s=60.0, mixed_precision="no")  # equal to one process in fp32
    base.update(kw)
    return base


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a rank connecting to a port in that range while rank 0 is
    not yet listening can be handed that same port as its own source port and connect to itself (TCP self-connect),
    after which rendezvous waits for a peer that is not there."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _spawn(mode: str, cfgs: list[dict], out_dir, *extra: str, timeout: float = 180.0) -> list[int]:
    """Start one process per config as torchrun would (env vars), wait at most `timeout` s, return exit codes."""
    port = _free_port()
    procs = []
    for rank, cfg in enumerate(cfgs):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(len(cfgs)),
                   LOCAL_WORLD_SIZE=str(len(cfgs)), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", DUMP_S=str(max(5.0, timeout - 20)),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.trainers.dist_worker", mode, json.dumps(cfg),
                                       str(out_dir), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    deadline, codes = time.time() + timeout, []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
            codes.append(p.returncode)
            if p.returncode not in (0, 2, 3):
                print(out)
    except subprocess.TimeoutExpired:  # a rank hung: show what every rank printed (its stacks, see DUMP_S)
        for p in procs:
            p.kill()
        outs = [p.communicate()[0] for p in procs]
        pytest.fail(f"ranks still running after {timeout:.0f} s:\n" + "\n".join(
            f"--- rank {r} ---\n{o[-6000:]}" for r, o in enumerate(outs)), pytrace=False)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes


def _error(out_dir, rank: int) -> str | None:
    path = os.path.join(out_dir, f"error_rank{rank}.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def test_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    """K DDP updates on 2 ranks with batches b1, b2 == K updates of one process on cat(b1, b2): weights, target
    heads, PopArt and InputNorm statistics (all in the loss's state_dict) within 1e-5. DDP averages the two
    ranks' gradients (each a mean over an equal number of valid steps, so the average is the global mean) and
    PopArt / InputNorm all-reduce their batch moments; without that reduction the PopArt update of a rank would
    be that of its half batch and the statistics would differ by far more than 1e-5.

    The loss is made deterministic (one critic, no dropout, a discrete critic: no sampled actions): REDQ member
    picks and dropout masks are per-sample random draws, which each rank takes from its own stream, so with them
    the two runs are equal in distribution only."""
    K = 4
    cfg = _cfg(tmp_path)
    src = AMAGOTrainer(TrainConfig(**_cfg(tmp_path, run_name="src", epochs=1)), make_env, None)
    for _ in range(2):
        src.collection.collect(src.store)
    batches = [[src.replay.sample() for _ in range(K)] for _ in range(2)]
    src.close()
    for rank in range(2):
        for b, path in zip(batches[rank], batch_files(str(tmp_path / "batches"), rank, K)):
            assert b["mask"].all()  # whole trials of H + 1 steps: equal valid counts per rank (see docstring)
            b.memmap(path)
    # a rank's half batch alone moves PopArt elsewhere: the test can tell the global update from a local one
    ref = AMAGOTrainer(TrainConfig(**_cfg(tmp_path, run_name="ref")), make_env, None)
    ref.sampler = FixedBatches(torch.cat([b1, b2]) for b1, b2 in zip(*batches))
    local = AMAGOTrainer(TrainConfig(**_cfg(tmp_path, run_name="local")), make_env, None)
    local.sampler = FixedBatches(batches[0])
    for _ in range(K):
        ref.learner.update()
        local.learner.update()
    expected, half = loss_state(ref), loss_state(local)
    ref.close()
    local.close()
    assert (expected["popart.mu"] - half["popart.mu"]).abs().max() > 1e-3

    codes = _spawn("updates", [cfg, cfg], tmp_path / "out", str(tmp_path / "batches"), str(K))
    assert codes == [0, 0], [_error(tmp_path / "out", r) for r in range(2)]
    states = [torch.load(tmp_path / "out" / f"state_rank{r}.pt", weights_only=True) for r in range(2)]
    assert any("target_critic_head_params" in k for k in expected) and any("in_norm" in k for k in expected)
    for name, want in expected.items():
        for r, st in enumerate(states):
            if want.is_floating_point():
                err = (st[name] - want).abs().max().item()
                assert err <= 1e-5, f"rank {r} {name}: max |diff| {err:.2e}"
            else:
                assert torch.equal(st[name], want), (r, name)
    moved = max((expected[k] - v).abs().max().item() for k, v in loss_state(
        AMAGOTrainer(TrainConfig(**_cfg(tmp_path, run_name="init")), make_env, None)).items() if v.is_floating_point())
    assert moved > 1e-3  # the K updates changed the weights: equality above is not that of two untouched inits


def test_ranks_with_different_configs_stop_at_start(tmp_path):
    a = _cfg(tmp_path)
    b = _cfg(tmp_path, learning_rate=1e-4)
    codes = _spawn("train", [a, b], tmp_path / "out", timeout=120)
    assert codes == [2, 2]
    for r in range(2):
        err = _error(tmp_path / "out", r)
        assert err.startswith("DistributedError") and "different configs" in err and "--learning_rate" in err, err
    assert not os.path.exists(tmp_path / "runs" / "dist" / "ckpts" / "latest.pt")  # stopped before any work


@pytest.mark.slow
def test_two_rank_run_resumes_on_one_rank_and_on_three(tmp_path):
    """A 2-rank run writes one checkpoint and one replay per rank; resuming on 1 rank (plain process) continues
    from its counters with rank 0's replay, and on 3 ranks the new rank starts from a copy of rank 0's replay."""
    cfg = _cfg(tmp_path, epochs=2)
    assert _spawn("train", [cfg, cfg], tmp_path / "out") == [0, 0]
    run = tmp_path / "runs" / "dist"
    ck = load_checkpoint(str(run / "ckpts" / "latest.pt"))
    assert ck["counters"]["grad_steps"] == 2 * cfg["grads_per_epoch"]
    assert ck["counters"]["env_steps"] == 2 * 2 * cfg["parallel_envs"] * (H + 1)  # both ranks' steps
    assert len(ck["replay_generations"]) == 2 and os.path.isdir(run / "buffer_rank1")
    # rank 1's replay table: its own file, named by latest.pt; the older checkpoint's file is gone
    assert ck["replay_rank_files"] == [None, f"replay_rank1_e2_g{2 * cfg['grads_per_epoch']}.pt"]
    assert sorted(f for f in os.listdir(run / "ckpts") if f.startswith("replay_rank")) == [ck["replay_rank_files"][1]]
    one = AMAGOTrainer(TrainConfig(**_cfg(tmp_path, epochs=3)), make_env, None,
                       settings={"script": "dist_worker.py"})  # the run dist_worker.py started
    assert one.resume() and one.grad_steps == 4 and len(one.replay) == 2 * cfg["parallel_envs"] * (H + 1)
    one.train()
    assert one.grad_steps == 6
    one.close()
    cfg3 = _cfg(tmp_path, epochs=4)
    assert _spawn("train", [cfg3] * 3, tmp_path / "out3") == [0, 0, 0]
    done = [json.loads((tmp_path / "out3" / f"summary_rank{r}.json").read_text()) for r in range(3)]
    assert [d["grad_steps"] for d in done] == [8, 8, 8]


def test_a_dead_rank_stops_the_other_with_a_clear_error_and_the_checkpoint_survives(tmp_path):
    cfg = _cfg(tmp_path, epochs=6)
    t0 = time.time()
    codes = _spawn("die", [cfg, cfg], tmp_path / "out", timeout=150)
    assert codes == [2, 3], codes  # rank 1 crashed (exit 3); rank 0 stopped with an error (2), no hang
    err = _error(tmp_path / "out", 0)
    assert err.startswith("DistributedError") and "another rank stopped responding" in err, err
    assert time.time() - t0 < 150
    ck = load_checkpoint(str(tmp_path / "runs" / "dist" / "ckpts" / "latest.pt"))  # intact, loadable
    assert ck["counters"]["epoch"] == 2 and ck["counters"]["grad_steps"] == 2 * cfg["grads_per_epoch"]
    again = AMAGOTrainer(TrainConfig(**_cfg(tmp_path, epochs=6)), make_env, None,
                         settings={"script": "dist_worker.py"})  # the run dist_worker.py started
    assert again.resume() and again.epoch == 2
    again.close()


@pytest.mark.slow
def test_a_hung_rank_makes_the_other_time_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HANG_S", "150")
    cfg = _cfg(tmp_path, epochs=6, timeout_s=15.0)
    t0 = time.time()
    codes = _spawn("hang", [cfg, cfg], tmp_path / "out", timeout=240)
    assert codes == [2, 3], codes
    err_file = tmp_path / "out" / "error_rank0.txt"
    err = err_file.read_text()
    assert err.startswith("DistributedError") and "--timeout_s=15.0" in err, err
    # rank 0 gave up while rank 1 was still asleep (150 s): it was the 15 s timeout, not rank 1's exit
    assert os.path.getmtime(err_file) - t0 < 120
    assert load_checkpoint(str(tmp_path / "runs" / "dist" / "ckpts" / "latest.pt"))["counters"]["epoch"] == 2


# ------------------------------------------------------------------------------------------- device / single
def test_cuda_flag_without_cuda_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    built = []
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        AMAGOTrainer(TrainConfig(**_cfg(tmp_path, device="cuda")), lambda n: built.append(n) or make_env(n), None)
    assert built == [] and not os.path.exists(tmp_path / "runs")
    with pytest.raises(ValueError, match="--device 'gpu0' is not a torch device"):
        device_from_flag("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_from_flag("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        device_from_flag("cuda:2")


def test_single_process_context_is_inert(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup_distributed("cpu", 60.0)
    loss = torch.nn.Linear(2, 2)
    assert not ctx.enabled and ctx.is_main and ctx.seed_offset == 0 and ctx.wrap(loss) is loss
    assert ctx.all_gather_int(7) == [7] and ctx.all_true(True) and not ctx.all_true(False)
    assert ctx.rank_path("/r/buffer") == "/r/buffer"
    with pytest.raises(ValueError, match="--timeout_s"):
        setup_distributed("cpu", 0)
