"""The full trainer: stop/resume keeps buffer, counters and curve; bad checkpoints fail clearly; it learns."""
import os

import pytest
import torch

from torchrl_amago.envs import TMaze, TMazeExploration, make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, TrainConfig


def _tiny_cfg(tmp_path, **kw):
    base = dict(run_name="tiny", buffer_dir=str(tmp_path), epochs=4, timesteps_per_epoch=5, grads_per_epoch=2,
                parallel_envs=2, eval_envs=2, eval_interval=2, eval_timesteps=6, max_seq_len=8, batch_size=4,
                memory_size=16, memory_layers=1, n_heads=2, tstep_hidden=16, tstep_out=16, actor_hidden=16,
                critic_hidden=16, dset_max_size=2000, progress_bar=False, ckpt_interval=0, lr_warmup_steps=2,
                eps_steps_anneal=100)
    base.update(kw)
    return TrainConfig(**base)


def _make_env(n, horizon=4):
    return make_amago_env(TMaze(n, corridor_length=horizon, passive=True, penalty=-1.0 / (horizon + 1)))


def _buffer_state(tr):
    rb = tr.replay
    n = len(rb)
    import copy

    return n, rb.num_trials(), rb.storage[:n].clone() if n else None, copy.deepcopy(rb._writer.state_dict())


def _assert_same(a, b, path="writer"):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_resume_matches_uninterrupted_run_and_continues(tmp_path):
    torch.manual_seed(0)
    a = AMAGOTrainer(_tiny_cfg(tmp_path / "a"), _make_env, _make_env)
    a.train(epochs=2)
    n_a, trials_a, data_a, _ = _buffer_state(a)
    open_a = a.replay.num_open_trials()
    a.replay.end_trials()  # what a resume does: trials in progress are kept as shorter finished trials
    _, closed_trials_a, _, writer_a = _buffer_state(a)
    assert closed_trials_a == trials_a + open_a
    counters_a = (a.epoch, a.env_steps, a.grad_steps)
    params_a = {k: v.clone() for k, v in a.loss.state_dict().items()}
    a.close()
    assert counters_a[0] == 2 and counters_a[1] == 2 * 2 * 5 and n_a > 0

    b = AMAGOTrainer(_tiny_cfg(tmp_path / "a"), _make_env, _make_env)  # same run dir: a restarted process
    assert b.resume()
    assert (b.epoch, b.env_steps, b.grad_steps) == counters_a
    n_b, trials_b, data_b, writer_b = _buffer_state(b)
    assert (n_b, trials_b) == (n_a, closed_trials_a) and b.collection.partial_trials_closed == open_a
    assert (data_b == data_a).all()
    _assert_same(writer_a, writer_b)  # in-progress (unfinished) trials survive the stop, closed
    for k, v in b.loss.state_dict().items():
        assert torch.equal(v, params_a[k]), k
    b.train(epochs=3)  # continues: one more epoch of data and updates, no data lost
    assert b.epoch == 3 and b.env_steps == counters_a[1] + 10 and b.grad_steps > counters_a[2]
    assert len(b.replay) >= n_a
    rows = b.logger.records
    assert [r["env_steps"] for r in rows] == sorted(r["env_steps"] for r in rows) and len(rows) == 3
    b.close()


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    a = AMAGOTrainer(_tiny_cfg(tmp_path), _make_env, _make_env)
    a.train(epochs=1)
    a.close()
    other = AMAGOTrainer(_tiny_cfg(tmp_path, memory_size=24), _make_env, _make_env)
    with pytest.raises(CheckpointError, match="--memory_size: checkpoint 16 -> now 24"):  # refused config change
        other.resume()
    other.close()
    with open(os.path.join(tmp_path, "tiny", "ckpts", "latest.pt"), "wb") as f:
        f.write(b"\x00garbage")
    c = AMAGOTrainer(_tiny_cfg(tmp_path), _make_env, _make_env)
    with pytest.raises(CheckpointError, match="corrupt"):
        c.resume()
    c.close()


@pytest.mark.slow
def test_tmaze_learns_with_full_trainer(tmp_path):
    """Learning check of the whole stack (collector, replay, loss, policy, exploration): a short passive T-Maze
    must be solved; a broken memory path, loss sign or data alignment leaves it at ~50% success. About 60 CPU-s
    (86-159 s wall on the shared 2-core box), so it runs with `make test-slow`; the default suite keeps the
    whole-stack learning checks tests/examples/test_example_03_dense_reward.py and tests/benchmarks/test_no_repeat.py,
    and one learning test per loss variant in tests/objectives/test_learning.py."""
    torch.manual_seed(0)
    H = 4
    cfg = _tiny_cfg(tmp_path, epochs=25, timesteps_per_epoch=H + 1, grads_per_epoch=20, parallel_envs=16,
                    eval_envs=32, eval_interval=0, eval_timesteps=H + 1, max_seq_len=H + 1, batch_size=24,
                    memory_size=32, memory_layers=1, n_heads=2, tstep_hidden=32, tstep_out=32, actor_hidden=32,
                    critic_hidden=32, learning_rate=1e-3, lr_warmup_steps=20, reward_multiplier=100.0, gamma=0.99,
                    sample_actions_train=False, sample_actions_eval=False, tstep_normalize_inputs=False,
                    num_threads=2)
    env = _make_env(1, H)
    explore = TMazeExploration(env.action_spec, horizon=H + 1, steps_anneal=25 * (H + 1) // 2)
    tr = AMAGOTrainer(cfg, lambda n: _make_env(n, H), lambda n: _make_env(n, H), exploration=explore,
                      success_threshold=0.5)
    tr.train()
    res = tr.evaluate(timesteps=2 * (H + 1))
    tr.close()
    assert res["eval/success"] >= 0.9, res


def test_offline_then_online_training(tmp_path):
    """Offline data only for the first epochs (no env steps, but gradient steps from the offline buffer), then
    online collection starts at `start_collecting_at_epoch` and both buffers are sampled."""
    H = 3
    env = _make_env(4, H)
    ro = env.rollout(4 * (H + 1), break_when_any_done=False)  # random actions: 4 whole trials per env
    env.close()
    offline = torch.cat([ro[i] for i in range(ro.batch_size[0])])  # flat: split into trials at ("next", "done")
    cfg = _tiny_cfg(tmp_path, epochs=4, start_collecting_at_epoch=2, max_seq_len=H + 1, eval_interval=0)
    tr = AMAGOTrainer(cfg, lambda n: _make_env(n, H), None, offline_data=offline, offline_weight=0.5)
    assert tr.offline_replay.num_trials() == 16
    tr.train(epochs=2)
    assert tr.env_steps == 0 and tr.grad_steps == 2 * cfg.grads_per_epoch and len(tr.replay) == 0
    tr.train(epochs=4)
    assert tr.env_steps == 2 * cfg.parallel_envs * cfg.timesteps_per_epoch and len(tr.replay) > 0
    assert tr.grad_steps == 4 * cfg.grads_per_epoch
    tr.close()
    again = AMAGOTrainer(cfg, lambda n: _make_env(n, H), None, offline_data=offline, offline_weight=0.5)
    assert again.resume() and again.epoch == 4 and again.offline_replay.num_trials() == 16  # restart with offline data
    again.close()


def test_count_heads_feed_the_counts_to_the_encoder_and_the_replay(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=2, count_heads=True), _make_env, _make_env)
    assert "action_counts" in tr.eval_env.observation_spec.keys()
    tr.train()
    n = len(tr.replay)
    steps = tr.replay.storage[:n]
    # stored counts are the trial's own: the counts before a step + its action = the counts after it
    assert torch.equal(steps["action_counts"] + steps["action"].float(), steps["next", "action_counts"])
    assert steps["action_counts"][steps["is_init"].squeeze(-1)].abs().sum() == 0
    assert steps["next", "action_counts"].sum(-1).max() > 1  # counted over several steps
    explored = steps["explored"].squeeze(-1)  # the exploration module marks the actions it replaced
    # epsilon near 1 (100-step anneal) times each trial's random multiplier (2 envs), counting only draws that differ
    # from the policy's own action: 0.35 in fp32, 0.2 in bf16 (other policy actions after the first update)
    assert 0.1 < explored.float().mean().item() < 0.9
    tr.close()


def test_count_heads_act_as_they_learn_and_refuse_what_they_cannot_read(tmp_path):
    """--count_heads: the counts reach the heads beside the embeddings; acting step by step (KV cache, counts from
    the env) gives the actor outputs the loss's sequence pass gives for the same steps."""
    from torchrl_amago.envs.transforms import add_action_counts
    from torchrl_amago.modules.count_heads import CountActorHead, CountDiscreteCritic, CountsPassThrough
    from torchrl_amago.modules.policy import AMAGOPolicy

    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=1, count_heads=True), _make_env, _make_env)
    m = tr.modules
    assert isinstance(m.actor, CountActorHead) and isinstance(m.critic, CountDiscreteCritic)
    assert isinstance(m.trajectory_encoder, CountsPassThrough)
    assert "action_counts" in tr.eval_env.observation_spec.keys()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.actor.count_term.parameters():
            p.normal_()
    policy = AMAGOPolicy(m.timestep_encoder, m.trajectory_encoder, m.actor, m.action_space, params_key="params")
    env = add_action_counts(_make_env(2))
    with torch.no_grad():
        data = env.rollout(11, policy.eval(), break_when_any_done=False)  # trials of 5 steps: two and a bit
        assert data["action_counts"].sum(-1).max() >= 4
        seq_td = m.timestep_encoder.eval()(data.clone().exclude("tstep_emb", "params"))
    # the sequence pass sees one trial per row: cut the rollout at its trial starts
    for e in range(2):
        starts = data["is_init"][e].squeeze(-1).nonzero().flatten().tolist() + [11]
        for a, b in zip(starts[:-1], starts[1:]):
            with torch.no_grad():
                trial = m.trajectory_encoder(seq_td["tstep_emb"][e:e + 1, a:b],
                                             seq_td["time_idx"][e:e + 1, a:b].squeeze(-1))
                torch.testing.assert_close(m.actor(trial)[0], data["params"][e, a:b], atol=1e-5, rtol=0)
    tr.train()  # the loss runs on the count modules
    tr.close()
    with pytest.raises(ValueError, match="--count_heads needs discrete actions and --agent_type agent"):
        AMAGOTrainer(_tiny_cfg(tmp_path / "mt", epochs=1, count_heads=True, agent_type="multitask"), _make_env,
                     _make_env)


def test_wandb_records_the_run_offline_and_close_finishes_it(tmp_path, wandb_offline, monkeypatch):
    """--logger wandb through the trainer (offline, the project from $WANDB_PROJECT): the last eval reaches the wandb
    run; closing the trainer finishes it, so a script that trains twice does not log into the first run."""
    wandb = wandb_offline
    monkeypatch.setenv("WANDB_PROJECT", "tiny_proj")
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=2, logger="wandb"), _make_env, _make_env)
    tr.train()
    last = tr.logger.records[-1]
    assert wandb.run is not None and wandb.run.project == "tiny_proj"
    assert wandb.run.summary["grad_steps"] == last["grad_steps"] == 4.0
    assert wandb.run.config["parallel_envs"] == "2"
    tr.close()
    assert wandb.run is None
    assert len(list((tmp_path / "tiny" / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


def test_tensorboard_event_files_hold_the_csv_scalars(tmp_path):
    """--logger tensorboard: TorchRL's TensorboardLogger writes event files in logs/<run_name>; read back with
    TensorBoard's own reader, they hold every scalar of metrics.csv (each column but env_steps, the step), at each
    row's env steps, with its value. Without --logger, logs/ holds metrics.csv and the figures only."""
    pytest.importorskip("tensorboard")  # in the test extras
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=2, eval_interval=1, logger="tensorboard"), _make_env, _make_env)
    tr.train()
    tr.close()
    logs = tmp_path / "tiny" / "logs"
    with open(logs / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    events = EventAccumulator(str(logs / "tiny"), size_guidance={"scalars": 0})
    events.Reload()
    csv_scalars = {(k, int(float(r["env_steps"]))): float(v) for r in rows for k, v in r.items()
                   if k != "env_steps" and v not in ("", "nan")}
    tb_scalars = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    assert len(rows) == 2 and "eval/return" in rows[-1] and len(csv_scalars) > 20
    assert tb_scalars.keys() == csv_scalars.keys()
    for key, value in csv_scalars.items():
        assert tb_scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key  # float32 in the event file
    plain = AMAGOTrainer(_tiny_cfg(tmp_path / "plain", epochs=1), _make_env, _make_env)
    plain.train()
    plain.close()
    assert sorted(p.name for p in (tmp_path / "plain" / "tiny" / "logs").iterdir()) == ["metrics.csv"]


def test_target_encoders_copy_moves_at_its_own_rate_and_nothing_switches_it_on(tmp_path):
    """--target_encoders: the loss keeps a target copy of the encoders for every discount's TD targets, which its
    AMAGOSoftUpdate moves at DEFAULT_BACKBONE_TAU while the heads' copies move at --tau. Without the flag there is no
    copy, whatever the discounts (here an acting gamma of 0.9999, which switched it on in earlier releases)."""
    from torchrl_amago.objectives import DEFAULT_BACKBONE_TAU, AMAGOSoftUpdate

    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=1, gamma=0.9999, target_encoders=True, tau=0.25),
                      _make_env, _make_env)
    assert "target_backbone_params" in dict(tr.loss.named_children()) and isinstance(tr.learner.target_updater,
                                                                                       AMAGOSoftUpdate)
    assert (tr.learner.target_updater.backbone_tau, 1 - tr.learner.target_updater.eps) == (DEFAULT_BACKBONE_TAU, 0.25)
    target = {k: v.clone() for k, v in tr.loss.target_backbone_params.items(True, True)}
    tr.train()  # 2 updates
    online = dict(tr.loss.backbone_params.items(True, True))
    moved = [k for k in target if not torch.equal(target[k], tr.loss.target_backbone_params[k])]
    assert moved and all(not torch.equal(tr.loss.target_backbone_params[k], online[k]) for k in moved)
    tr.close()
    off = AMAGOTrainer(_tiny_cfg(tmp_path / "off", epochs=1, gamma=0.9999, cql_coeff=0.0), _make_env, _make_env)
    assert "target_backbone_params" not in dict(off.loss.named_children()) and off.loss.cql_coeff == 0.0
    off.close()
