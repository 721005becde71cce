"""The trainer with --collect async: TorchRL MultiAsyncCollector workers collect while the learner updates.

Every test spawns real worker processes (a few seconds each) and is bounded by pytest's timeout.
"""
import functools
import os
import signal
import sys
import threading
import time
import warnings

import pytest
import torch

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.scale.feed import CollectionError, batch_steps, collector_processes

H = 3  # T-Maze corridor: trials of H + 1 steps


def cfg_(tmp_path, **kw):
    base = dict(run_name="r", buffer_dir=str(tmp_path), epochs=3, timesteps_per_epoch=H + 1, grads_per_epoch=6,
                parallel_envs=4, eval_interval=0, max_seq_len=H + 1, batch_size=4, memory_size=8, memory_layers=1,
                n_heads=1, tstep_hidden=8, tstep_out=8, actor_hidden=8, critic_hidden=8, dset_max_size=2000,
                progress_bar=False, ckpt_interval=0, lr_warmup_steps=2, eps_steps_anneal=100, min_trials_to_learn=1,
                num_threads=1, collect="async", num_collectors=2, timeout_s=60.0, policy_sync_interval=1)
    base.update(kw)
    return TrainConfig(**base)


def env_(n):
    return make_amago_env(TMaze(n, corridor_length=H, passive=True, penalty=-0.1))


def trainer(tmp_path, make_env=env_, eval_env=None, **kw):
    return AMAGOTrainer(cfg_(tmp_path, **kw), make_env, eval_env)


@pytest.mark.timeout(120)
def test_async_run_holds_the_replay_ratio_and_stores_every_step(tmp_path):
    t = trainer(tmp_path)
    try:
        rec = t.train()
        ratio = t.collection.replay_ratio
        assert ratio == pytest.approx(6 / (4 * (H + 1)))
        assert t.grad_steps == 3 * 6  # every epoch makes its updates
        # the learner is never ahead of the ratio, and the collectors never far ahead of the learner
        assert t.grad_steps <= ratio * t.env_steps + 1e-9
        frames = (4 // 2) * batch_steps(t.cfg)  # one worker batch
        in_flight = (2 * t.cfg.num_collectors + t.cfg.num_collectors + 1) * frames  # queue + one ahead per worker
        assert t.env_steps >= 3 * 4 * (H + 1)
        assert t.env_steps - t.grad_steps / ratio <= in_flight
        # every delivered step is in the replay (nothing collected and counted is lost)
        assert t.replay._writer._write_count == t.env_steps
        for key in ("train/env_steps_per_s", "train-update/grad_steps_per_s", "train/learner_wait_s",
                    "train/replay_ratio", "train/weight_pushes"):
            assert key in rec
        assert rec["train/weight_pushes"] >= 6  # --policy_sync_interval 1
        # two workers with different seeds: both delivered data
        traj = t.replay._storage.get(torch.arange(t.env_steps))["collector", "traj_ids"]
        assert traj.unique().numel() >= 2 * 2
    finally:
        t.close()


@pytest.mark.timeout(150)
def test_async_stop_and_resume_loses_nothing(tmp_path):
    t = trainer(tmp_path, epochs=2)
    t.train()
    t.save("latest")  # a stop: the workers' unfinished batches were never delivered nor counted
    steps, writes = t.env_steps, t.replay._writer._write_count
    stored = t.replay._storage.get(torch.arange(steps)).clone()
    open_trials = t.replay.num_open_trials()
    t.close()
    assert steps == writes

    t2 = trainer(tmp_path, epochs=3)
    try:
        assert t2.resume()
        assert t2.env_steps == steps and t2.replay._writer._write_count == steps
        assert t2.collection.partial_trials_closed == open_trials and t2.replay.num_open_trials() == 0
        again = t2.replay._storage.get(torch.arange(steps))
        for key in (("observation",), ("next", "reward"), ("collector", "traj_ids")):
            assert torch.equal(again[key], stored[key])  # the checkpointed steps, bit for bit
        rec = t2.train()
        assert t2.epoch == 3 and t2.grad_steps == 3 * 6
        assert rec["train/partial_trials_closed_on_resume"] == open_trials
        assert t2.replay._writer._write_count == t2.env_steps > steps
    finally:
        t2.close()


class _Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, n):
        return env_(n)


def test_unpicklable_env_factory_is_named(tmp_path):
    with pytest.raises(CollectionError, match="training env factory cannot be sent.*functools.partial"):
        trainer(tmp_path, make_env=_Unpicklable())


@pytest.mark.parametrize("kw, match", [
    (dict(num_collectors=0), "--num_collectors must be >= 1"),
    (dict(num_collectors=5), "--num_collectors=5 exceeds --parallel_envs=4"),
    (dict(num_collectors=3), "--parallel_envs=4 is not a multiple of --num_collectors=3"),
    (dict(timesteps_per_epoch=0), "--collect async needs env collection"),
    (dict(start_collecting_at_epoch=3), "--collect async needs env collection"),
    (dict(replay_ratio=0.0), "--replay_ratio must be > 0"),
    (dict(collect="threads"), "--collect='threads' is not one of"),
])
def test_bad_async_combinations_are_named(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, **kw)


@pytest.mark.timeout(120)
def test_dead_worker_is_a_clear_error_and_the_replay_resumes(tmp_path):
    t = trainer(tmp_path, epochs=1)
    t.train()
    t.save("latest")
    steps = t.env_steps
    procs = collector_processes(t.collector)
    assert len(procs) == 2
    os.kill(procs[0].pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(CollectionError, match="collector worker"):
        t.train(epochs=4)
    assert time.monotonic() - t0 < 30  # bounded: no hang
    t.close()
    t2 = trainer(tmp_path, epochs=2)  # the replay on disk is intact: the run resumes from its checkpoint
    try:
        assert t2.resume() and t2.env_steps == steps == t2.replay._writer._write_count
        t2.train()
        assert t2.epoch == 2
    finally:
        t2.close()


@pytest.mark.timeout(120)
def test_eval_does_not_stop_collection(tmp_path):
    t = trainer(tmp_path, epochs=1, num_collectors=1, eval_envs=2)
    try:
        t.train()
        t.collection.feed.ready()  # empty the queue
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:  # the learner's thread is busy elsewhere (e.g. evaluating)
            time.sleep(0.1)
        # the worker kept collecting: the queue is full (2 batches), more than the one batch it runs ahead
        assert len(t.collection.feed.ready()) == 2
    finally:
        t.close()


def _greedy_actions(t, n_actions, batches=6):
    t.collection.feed.ready()
    data = [t.collection.feed.get() for _ in range(batches)][-2:]  # past the batches collected before the change
    return torch.cat([d["action"].reshape(-1, n_actions) for d in data]).argmax(-1)


@pytest.mark.timeout(120)
def test_workers_act_with_pushed_weights_only(tmp_path):
    t = trainer(tmp_path, epochs=1, exploration="none", sample_actions_train=False, grads_per_epoch=0)
    try:
        t.train()
        last = [m for m in t.policy.actor_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        n_actions = t.train_env.action_spec.shape[-1]
        before = _greedy_actions(t, n_actions)
        first = 0 if not bool((before == 0).all()) else n_actions - 1  # an action the workers do not take now
        for wanted in (first, n_actions - 1 - first):
            with torch.no_grad():
                last.weight.zero_()
                last.bias.fill_(-50.0)
                last.bias[wanted::n_actions].fill_(50.0)  # every gamma's logits favour `wanted`
            if wanted == first:  # the learner's weights alone do not reach the workers' copies...
                assert torch.equal(_greedy_actions(t, n_actions), before)
            t.collection.push_weights(t.counters)  # ...a push (TorchRL's update_policy_weights_) does
            acts = _greedy_actions(t, n_actions)
            assert bool((acts == wanted).all()), acts.tolist()
    finally:
        t.close()


@pytest.mark.slow  # starts a Ray instance and two remote workers: ~1-2 min on 2 cores
@pytest.mark.timeout(400)
def test_distributed_mode_trains_with_two_ray_workers_on_this_machine(tmp_path):
    pytest.importorskip("ray")
    t = trainer(tmp_path, collect="distributed", epochs=2)  # no --collector_address: a private local Ray instance
    try:
        t.train()
        assert t.grad_steps == 2 * 6 and t.grad_steps <= t.collection.replay_ratio * t.env_steps + 1e-9
        assert t.replay._writer._write_count == t.env_steps >= 2 * 4 * (H + 1)
        ids = t.replay._storage.get(torch.arange(t.env_steps))["collector", "traj_ids"]
        assert set((ids % 2).unique().tolist()) == {0, 1}  # both remote workers delivered (id % n = worker)
        assert t.collection.weight_pushes >= 12
        assert t.replay.num_trials() >= 4
    finally:
        t.close()


class _RecordingTrainer(AMAGOTrainer):
    def build_policy(self):
        from torchrl_amago.modules.policy import AMAGOPolicy

        m = self.modules
        return AMAGOPolicy(m.timestep_encoder, m.trajectory_encoder, m.actor, m.action_space, params_key="actor_params")


@pytest.mark.timeout(180)
def test_workers_act_exactly_as_the_learner_after_training_and_pushes(tmp_path):
    """After updates, a worker's actor outputs equal the learner's policy replayed over the same trials. Regression:
    weights written into shared memory by the learner's process do not bump the worker's version counters, so the
    Transformer's cached sigma-reparam weights stayed those of the first acting step (outputs off by up to 2.3)."""
    h = 6

    def tmaze(n):
        return make_amago_env(TMaze(n, corridor_length=h, passive=True, penalty=-1.0 / (h + 1)))

    cfg = cfg_(tmp_path, max_seq_len=h + 1, timesteps_per_epoch=h + 1, parallel_envs=6, num_collectors=1,
               grads_per_epoch=10, epochs=2, sample_actions_train=False, exploration="none", memory_size=32,
               memory_layers=2, n_heads=2, tstep_hidden=32, tstep_out=32, tstep_normalize_inputs=True,
               policy_sync_interval=3)
    t = _RecordingTrainer(cfg, tmaze, None)
    try:
        t.train()
        batches = []
        for _ in range(10):
            t.collection.push_weights(t.counters)  # the same weights again: a push must never change how the workers act
            batches.append(t.collection.feed.get())
        d = torch.cat(batches[4:], dim=1)  # past the batches collected before the first push
        replay = t.policy.fresh_copy()
        with torch.no_grad():
            mine = torch.stack([replay(d[:, k].exclude("action", "next", "collector", "actor_params").clone())
                                ["actor_params"] for k in range(d.batch_size[1])], 1)
        started = d["is_init"].reshape(d.batch_size).cumsum(1) > 0  # trials that start inside the window
        assert int(started.sum()) >= 12
        torch.testing.assert_close(mine[started], d["actor_params"][started], atol=1e-5, rtol=1e-5)
    finally:
        t.close()


@pytest.mark.timeout(120)
def test_a_push_without_waiting_sends_the_weights_of_its_call(tmp_path):
    """push_weights(wait=False) returns before the workers have the weights; what they get is a copy taken at the
    call, not the learner's weights as they are when the push runs (the learner keeps updating them)."""
    t = trainer(tmp_path, epochs=1, exploration="none", sample_actions_train=False, grads_per_epoch=0)
    try:
        t.train()
        last = [m for m in t.policy.actor_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        n_actions = t.train_env.action_spec.shape[-1]

        def favour(action):
            with torch.no_grad():
                last.weight.zero_()
                last.bias.fill_(-50.0)
                last.bias[action::n_actions].fill_(50.0)  # every gamma's logits favour `action`

        favour(0)
        t.collection.push_weights(t.counters, wait=False)
        favour(n_actions - 1)  # the learner moves on before the push is known to be done
        t.collection.wait_for_push()
        assert bool((_greedy_actions(t, n_actions) == 0).all())
        t.collection.push_weights(t.counters, wait=False)
        t.collection.push_weights(t.counters, wait=False)  # the second waits for the first: never two in flight
        t.collection.wait_for_push()
        assert bool((_greedy_actions(t, n_actions) == n_actions - 1).all())
    finally:
        t.close()


@pytest.mark.timeout(120)
def test_two_workers_and_a_slow_learner_store_every_step():
    """TorchRL 0.14's MultiAsyncCollector has one slot for finished batches: a worker that cannot hand its batch in
    within 1 s collects the next one over it, and those steps are lost (5 of 12 trials had gaps in this setting).
    The trainer's collector keeps a slot per worker: every trial it delivers is every step of that trial."""
    from tests.data.toy_envs import make_counting_env
    from torchrl_amago.trainers.scale.feed import AMAGOMultiAsyncCollector

    factories = [functools.partial(make_counting_env, 2, 3, 1, 0),
                 functools.partial(make_counting_env, 2, 3, 2, 1_000_000)]
    batches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = AMAGOMultiAsyncCollector(factories, None, frames_per_batch=8, total_frames=-1)
        try:
            for d in collector:
                batches.append(d.clone())
                if len(batches) == 5:
                    break
                time.sleep(1.5)  # the learner takes batches more slowly than the collector's 1 s timeout
        finally:
            collector.shutdown()
    flat = torch.cat([d.reshape(-1) for d in batches])
    trials = flat["trial"][:, 0]
    assert trials.unique().numel() >= 6
    for tid in trials.unique().tolist():
        steps = flat["step"][trials == tid][:, 0].sort().values
        assert torch.equal(steps, torch.arange(steps.numel())), (tid, steps.tolist())  # no step lost


@pytest.mark.timeout(120)
def test_the_feed_counts_the_workers_that_act(tmp_path):
    """A worker whose finished batch waits for the learner is idle; once the learner takes batches it acts again."""
    t = trainer(tmp_path, epochs=1, num_collectors=1)
    try:
        t.train()
        deadline = time.monotonic() + 30
        while t.collection.feed.acting_workers() != 0:  # nobody takes batches: the feed's queue fills, then the worker parks
            assert time.monotonic() < deadline, "the worker never stopped"
            time.sleep(0.05)
        assert t.collector.parked_batches() == 1
        if sys.platform.startswith("linux"):  # a parked worker uses no CPU: its CPU seconds stand still
            cpu = t.collection.feed.workers_cpu_s()
            time.sleep(0.3)
            assert 0 < cpu and t.collection.feed.workers_cpu_s() - cpu < 0.05
        t.collection.feed.ready()  # the learner takes every waiting batch: room for the parked one, so the worker goes on
        assert t.collection.feed.acting_workers() == 1
    finally:
        t.close()


@pytest.mark.timeout(120)
def test_async_workers_build_their_envs_with_action_counts(tmp_path):
    t = trainer(tmp_path, epochs=1, num_collectors=1, count_heads=True)
    try:
        t.train()
        steps = t.replay.storage[:len(t.replay)]
        assert torch.equal(steps["action_counts"] + steps["action"].float(), steps["next", "action_counts"])
        assert steps["next", "action_counts"].sum(-1).max() == H + 1  # a whole trial's actions, counted
        assert steps["explored"].shape == (len(t.replay), 1) and steps["explored"].any()  # the workers' exploration
    finally:
        t.close()
