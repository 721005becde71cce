"""Collection on remote workers (TorchRL's RayCollector, `trainers/remote_collection.py`), on loopback: a local
Ray instance on this machine with 2 collector processes, each holding its own T-Maze envs and its own copy of
the real AMAGOPolicy (built as the trainer builds it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import ExplorationType, Transform

from tests.missing_package import assert_missing_package_named
from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import TrainConfig, build_agent_modules, build_policy
from torchrl_amago.trainers.scale.remote_collection import (TRAJ_IDS_KEY, GlobalTrajIds, RemoteCollectorError,
                                                      make_remote_collector)

N_ENVS, T = 3, 6  # per worker: batches are [3, 6]
FRAMES = N_ENVS * T
CORRIDOR = 4  # trials of 5 steps: several trials per row per batch, and trials that span batches


def make_env(n: int = N_ENVS):
    return make_amago_env(TMaze(n, corridor_length=CORRIDOR, passive=True, penalty=-1.0 / (CORRIDOR + 1)))


def make_policy(seed: int = 0):
    torch.manual_seed(seed)
    cfg = TrainConfig(memory_size=16, memory_layers=1, n_heads=2, max_seq_len=16, tstep_hidden=32, tstep_out=16,
                      actor_hidden=32, critic_hidden=32)
    env = make_env()
    return build_policy(build_agent_modules(cfg, env.observation_spec, env.action_spec))


class StallAfter(Transform):
    """Sleeps `stall_s` in the env step after `steps` steps: a worker that is alive but sends nothing."""

    def __init__(self, steps: int, stall_s: float):
        super().__init__()
        self.steps, self.stall_s, self.count = steps, stall_s, 0

    def _step(self, tensordict, next_tensordict):
        self.count += 1
        if self.count > self.steps:
            time.sleep(self.stall_s)
        return next_tensordict


def make_stalling_env():
    return make_env().append_transform(StallAfter(steps=2 * T, stall_s=120.0))


def worker_of(batch, n_workers: int = 2) -> int:
    ids = batch.get(TRAJ_IDS_KEY)
    owners = (ids % n_workers).unique()
    assert owners.numel() == 1, f"one batch mixes trajectory ids of workers {owners.tolist()}"
    return int(owners)


def action_index(batch) -> torch.Tensor:
    return batch.get("action").long().argmax(-1)  # T-Maze actions are one-hot


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray instance for the module (workers of every test start in it)."""
    pytest.importorskip("ray")
    from torchrl_amago.trainers.scale.remote_collection import _connect

    # CPU slots for the module's collector and one more (Ray queues a worker without a free CPU slot)
    lease = _connect(None, {"num_cpus": 4}, 2.0)
    yield
    lease.release()


@pytest.fixture(scope="module")
def collector(ray_runtime):
    policy = make_policy()
    # argmax actions, so that test_weight_push can know the action the pushed weights must produce
    c = make_remote_collector([make_env, make_env], policy, frames_per_batch=FRAMES,
                              exploration_type=ExplorationType.DETERMINISTIC,
                              batch_timeout_s=120)
    c.main_policy = policy
    yield c
    c.shutdown()


# ---------------------------------------------------------------- no cluster needed
def test_global_traj_ids_maps_each_worker_to_its_own_residue():
    td = TensorDict({TRAJ_IDS_KEY: torch.tensor([[0, 0, 1], [2, -1, 3]])}, [2, 3])
    out = GlobalTrajIds(1, 3)(td)
    # id -> id * 3 + 1 (hand computed); TorchRL's -1 padding stays -1
    assert out.get(TRAJ_IDS_KEY).tolist() == [[1, 1, 4], [7, -1, 10]]
    assert td.get(TRAJ_IDS_KEY).tolist() == [[0, 0, 1], [2, -1, 3]]  # the worker's own buffer is untouched
    with pytest.raises(ValueError, match="worker_index"):
        GlobalTrajIds(3, 3)


def test_missing_ray_names_the_pip_extra(monkeypatch):
    assert_missing_package_named(
        monkeypatch, "ray", r"pip install torchrl_amago\[ray\]",
        lambda: make_remote_collector([make_env], make_policy(), frames_per_batch=FRAMES))


def test_bad_env_factories_are_named():
    pytest.importorskip("ray")
    lock = threading.Lock()

    def holds_a_lock():
        return lock and make_env()

    with pytest.raises(ValueError, match=r"env_fns\[1\] .*holds_a_lock.* cannot be pickled"):
        make_remote_collector([make_env, holds_a_lock], make_policy(), frames_per_batch=FRAMES)
    with pytest.raises(ValueError, match=r"env_fns\[0\] must be a callable returning an EnvBase"):
        make_remote_collector([make_env()], make_policy(), frames_per_batch=FRAMES)
    with pytest.raises(ValueError, match="non-empty list"):
        make_remote_collector([], make_policy(), frames_per_batch=FRAMES)


def test_an_address_without_a_ray_head_is_refused_at_once():
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on (Ray's own client would retry it without end)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RemoteCollectorError, match=rf"cannot reach the Ray head at 127.0.0.1:{port} \(--collector_address\)"):
        make_remote_collector([make_env], make_policy(), frames_per_batch=FRAMES, address=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
    with pytest.raises(ValueError, match=r"address 'headnode' \(--collector_address\) must be <head-ip>:<port>"):
        make_remote_collector([make_env], make_policy(), frames_per_batch=FRAMES, address="headnode")


# ---------------------------------------------------------------- 2 workers on loopback
@pytest.mark.timeout(180)
def test_batches_from_both_workers_with_globally_unique_traj_ids(collector):
    batches = []
    for batch in collector:
        batches.append(batch)
        if len(batches) == 8:
            break
    by_worker = {0: [], 1: []}
    for b in batches:
        assert b.batch_size == torch.Size([N_ENVS, T])
        for key in ("observation", "prev_action", "prev_reward", ("next", "reward"), ("next", "observation")):
            assert torch.isfinite(b.get(key).float()).all(), key
        assert b.get("time_idx").shape == (N_ENVS, T, 1) and b.get("is_init").dtype == torch.bool
        by_worker[worker_of(b)].append(b)
    assert len(by_worker[0]) >= 2 and len(by_worker[1]) >= 2, {w: len(bs) for w, bs in by_worker.items()}
    ids = {w: set(torch.cat([b.get(TRAJ_IDS_KEY).flatten() for b in bs]).tolist()) for w, bs in by_worker.items()}
    assert not ids[0] & ids[1]
    for w, bs in by_worker.items():
        for b in bs:  # at one step, the 3 envs of a worker are in 3 different trials
            assert b.get(TRAJ_IDS_KEY)[:, 0].unique().numel() == N_ENVS
        # consecutive batches of a worker: an env row keeps its trial id across the boundary unless its trial
        # ended on the last step (a trial spans batches, as in one process)
        for prev, nxt in zip(bs, bs[1:]):
            done = prev.get(("next", "done"))[:, -1, 0]
            same = prev.get(TRAJ_IDS_KEY)[:, -1] == nxt.get(TRAJ_IDS_KEY)[:, 0]
            assert torch.equal(same, ~done), (prev.get(TRAJ_IDS_KEY), nxt.get(TRAJ_IDS_KEY), done)
        # a new trial starts exactly where is_init is set, and gets a new id
        for b in bs:
            ids_b, init = b.get(TRAJ_IDS_KEY), b.get("is_init")[..., 0]
            changed = torch.cat([torch.zeros(N_ENVS, 1, dtype=torch.bool), ids_b[:, 1:] != ids_b[:, :-1]], 1)
            assert torch.equal(changed[:, 1:], init[:, 1:])
    # 5-step trials: 6-step batches hold trial starts of every row
    assert any(b.get("is_init")[:, 1:].any() for b in batches)


@pytest.mark.timeout(180)
def test_weight_push_changes_the_remote_actors_and_carries_buffers(collector):
    policy = collector.main_policy
    main = TensorDict.from_module(policy).data
    before = [next(iter(collector)) for _ in range(4)]
    counts = torch.bincount(torch.cat([action_index(b).flatten() for b in before]), minlength=4)
    k = int(counts.argmin())  # an action the current weights rarely pick: the pushed weights must pick it always
    assert counts[k] < sum(b.numel() for b in before)
    with torch.no_grad():
        last = [m for m in policy.actor_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        bias = torch.zeros(policy.actor_head.num_gammas, 4)
        bias[:, k] = 5.0
        last.bias.copy_(bias.flatten())
        in_norm = policy.timestep_encoder.in_norm  # a buffer-only change (InputNorm statistics)
        in_norm.mu.fill_(0.25)
        in_norm._t.fill_(7.0)
    remote = collector.remote_policy_weights()
    assert not any(torch.equal(r["timestep_encoder", "in_norm", "mu"], main["timestep_encoder", "in_norm", "mu"])
                   for r in remote)
    collector.update_policy_weights_()
    for r in collector.remote_policy_weights():  # every parameter and buffer of both workers equals the main's
        for key, val in main.items(True, True):
            assert torch.equal(r[key], val), key
    seen = {0: [], 1: []}
    it = iter(collector)
    while min(len(v) for v in seen.values()) < 2:
        b = next(it)
        seen[worker_of(b)].append(b)
    for w, bs in seen.items():  # each worker's 2nd batch after the push was requested after it
        assert (action_index(bs[1]) == k).all(), (w, action_index(bs[1]))


@pytest.mark.timeout(180)
def test_a_killed_worker_gives_a_clear_error_in_bounded_time(ray_runtime):
    """One worker is enough here (the module's collector covers two), and every worker is a process to start."""
    c = make_remote_collector([make_env], make_policy(), frames_per_batch=FRAMES, batch_timeout_s=120)
    try:
        it = iter(c)
        next(it)
        victim = c.worker_info()[0]
        assert victim["pid"] != os.getpid() and victim["node"] == "127.0.0.1"  # loopback only (tests/conftest.py)
        os.kill(victim["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RemoteCollectorError, match=rf"worker 0 of 1 .*pid {victim['pid']}.* died"):
            for _ in range(50):
                next(it)
        assert time.monotonic() - t0 < 60
    finally:
        c.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stuck_worker_gives_a_clear_error_after_batch_timeout_s(ray_runtime):
    c = make_remote_collector([make_env, make_stalling_env], make_policy(), frames_per_batch=FRAMES,
                              batch_timeout_s=5)
    t0 = time.monotonic()
    # worker 1 hands out 2 batches, then sleeps 120 s in its 3rd rollout
    it = iter(c)
    with pytest.raises(RemoteCollectorError, match=r"worker 1 of 2 .* sent no batch for 5 s \(batch_timeout_s\)"):
        for _ in range(10**6):
            next(it)
    assert time.monotonic() - t0 < 60


@pytest.mark.timeout(180)
def test_a_cluster_without_free_cpus_is_refused_before_any_worker_starts(collector):
    # the module's collector holds 2 of the 4 CPU slots: 3 more workers cannot start
    with pytest.raises(RemoteCollectorError, match=r"has 2 free CPUs \(4 in all\) but the remote collectors ask for 3"):
        make_remote_collector([make_env] * 3, make_policy(), frames_per_batch=FRAMES)


@pytest.mark.timeout(180)
def test_a_dead_worker_fails_the_weight_push_with_its_name(collector):
    """Kills a worker of the module's collector (a collector takes ~1 min to start on 2 cores), so it is the last
    test that uses it."""
    victim = collector.worker_info()[0]
    os.kill(victim["pid"], signal.SIGKILL)
    with pytest.raises(RemoteCollectorError, match=rf"worker 0 of 2 .*pid {victim['pid']}.*policy weights"):
        collector.update_policy_weights_()


def first_batch_per_worker(c) -> dict:
    out, it = {}, iter(c)
    while len(out) < 2:
        b = next(it)
        out.setdefault(worker_of(b), b)
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_seeded_workers_repeat_their_rollouts_and_differ_from_each_other(ray_runtime):
    runs = []
    for _ in range(2):
        c = make_remote_collector([make_env, make_env], make_policy(), frames_per_batch=FRAMES, seed=11)
        try:
            runs.append(first_batch_per_worker(c))
        finally:
            c.shutdown()
    keys = ["observation", "action", ("next", "reward")]
    for w in (0, 1):  # same seed -> the same envs and the same sampled actions, worker by worker
        for key in keys:
            assert torch.equal(runs[0][w].get(key), runs[1][w].get(key)), (w, key)
    assert not torch.equal(runs[0][0].get("action"), runs[0][1].get("action"))  # but not the same across workers


# ---------------------------------------------------------------- the documented per-node launch, on loopback
def _ray_cli(*args: str, env: dict) -> subprocess.Popen:
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.Popen([ray, *args, "--disable-usage-stats", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for_child(parent: int, name: str, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-P", str(parent), "-f", name], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
        time.sleep(0.5)
    raise TimeoutError(f"no {name} process under pid {parent} after {timeout_s} s")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_ray_nodes_started_per_node_on_loopback_collect_and_a_lost_node_is_a_clear_error(tmp_path):
    """docs/scaling.md "Many nodes: Ray": `ray start --head` (1 CPU), `ray start --address=...` (1 CPU), then a fresh
    learner process joins with the address: its 2 workers must run on the 2 nodes; killing the second node's raylet
    must stop the learner's iteration with a RemoteCollectorError within 60 s."""
    pytest.importorskip("ray")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # two nodes on one machine: Ray's single-machine mode (conftest.py) refuses a second node, so it is off here;
    # both nodes still listen on loopback only (--node-ip-address=127.0.0.1)
    env = dict(os.environ, PYTHONPATH=root, RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"  # loopback only: both "nodes" are processes of this machine
    head = _ray_cli("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", env=env)
    procs = [head]
    try:
        _wait_for_child(head.pid, "raylet")
        node = _ray_cli("start", f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1", env=env)
        procs.append(node)
        raylet = _wait_for_child(node.pid, "raylet")
        done = subprocess.run([sys.executable, "-m", "tests.trainers.remote_driver", address, str(raylet)], env=env,
                              cwd=root, capture_output=True, text=True, timeout=300)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        assert done.returncode == 0 and lines, done.stderr[-3000:]
        out = json.loads(lines[-1])
        assert len({w["node_id"] for w in out["workers"]}) == 2, out["workers"]  # one worker per node
        assert set(out["batch_workers"]) == {0, 1}, out
        assert out["error"] is not None and "died or became unreachable" in out["error"], out
        assert out["error_after_s"] < 60, out
    finally:
        for p in reversed(procs):  # SIGTERM to `ray start --block` stops that node's processes
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
