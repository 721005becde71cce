"""Config validation, the common CLI, rollout metrics and checkpoint-file errors (no training)."""
import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.trainers.run.checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint
from torchrl_amago.trainers.cli import build_parser, example_args, parse_config
from torchrl_amago.trainers.config import TrainConfig
from torchrl_amago.trainers.metrics import (TrialReturnsById, bottom_quintile, episode_metrics,
                                           finished_trial_returns, per_task_return_metrics, return_metrics)


def test_config_rejects_bad_flags():
    with pytest.raises(ValueError, match="traj_encoder"):
        TrainConfig(traj_encoder="lstmx")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    assert TrainConfig(gamma=0.99).gammas == [0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.99]
    assert TrainConfig(multigammas=[0.5]).gammas == [0.5, 0.999]


def test_cli_covers_every_field_and_parses_types():
    parser = build_parser(defaults={"epochs": 7})
    flags = {a.dest for a in parser._actions}
    assert {f for f in TrainConfig.__dataclass_fields__} <= flags
    cfg, _ = parse_config(defaults={"epochs": 7}, argv=["--no-sample_actions_train", "--multigammas", "0.9", "--seed", "3"])
    assert (cfg.epochs, cfg.sample_actions_train, cfg.gammas, cfg.seed) == (7, False, [0.9, 0.999], 3)
    with pytest.raises(SystemExit):
        parse_config(argv=["--agent_type", "nope"])
    with pytest.raises(ValueError, match="unknown TrainConfig defaults"):
        build_parser(defaults={"not_a_flag": 1})


def test_example_flags_are_not_abbreviated_by_common_ones():
    """`--final_eval best` (a TrainConfig flag) is not read as an abbreviation of an example's --final_eval_timesteps."""
    def extra(p):
        p.add_argument("--final_eval_timesteps", type=int, default=1000)

    argv = ["--final_eval", "best", "--final_eval_timesteps", "50"]
    assert example_args(extra, argv[:2]).final_eval_timesteps == 1000
    cfg, args = parse_config(extra=extra, argv=argv)
    assert (cfg.final_eval, args.final_eval_timesteps) == ("best", 50)


def _rollout(rewards, dones):
    r = torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1)
    d = torch.tensor(dones, dtype=torch.bool).unsqueeze(-1)
    return TensorDict({"next": {"reward": r, "done": d}}, batch_size=r.shape[:2])


def test_finished_trial_returns_carry_partial_trials_across_batches():
    ro1 = _rollout([[1, 1, 1], [2, 0, 0]], [[0, 1, 0], [0, 0, 0]])
    ret, running = finished_trial_returns(ro1)
    assert ret == [2.0] and running.tolist() == [1.0, 2.0]
    ro2 = _rollout([[5, 0], [1, 1]], [[1, 0], [0, 1]])
    ret, running = finished_trial_returns(ro2, running)
    assert sorted(ret) == [4.0, 6.0] and running.tolist() == [0.0, 0.0]


def test_trial_returns_by_id_follow_trials_across_workers_and_rows():
    def batch(rew, done, ids):
        td = _rollout(rew, done)
        td.set(("collector", "traj_ids"), torch.tensor(ids))
        return td

    acc = TrialReturnsById()
    # worker A: env rows hold trajectories 0 and 1; trajectory 0 ends at t=1 and trajectory 2 starts in its row
    assert acc.add(batch([[1, 2, 4], [1, 1, 1]], [[0, 1, 0], [0, 0, 0]], [[0, 0, 2], [1, 1, 1]])) == [3.0]
    # worker B (other trajectories) arrives in between, in another row layout
    assert acc.add(batch([[7, 1]], [[1, 0]], [[5, 6]])) == [7.0]
    # worker A again, rows swapped: trajectory 1 now in row 0, trajectory 2 in row 1
    assert sorted(acc.add(batch([[10, 0], [20, 0]], [[1, 0], [1, 0]], [[1, 3], [2, 4]]))) == [13.0, 24.0]
    assert acc.drop_partial() == 3  # trajectories 6, 3 and 4 were still open


def test_per_task_returns_follow_each_trials_task_id():
    ro = _rollout([[1, 1, 1], [2, 3, 4]], [[0, 1, 1], [1, 0, 1]])
    ro["next", "task_id"] = torch.tensor([[0, 0, 1], [1, 1, 0]]).unsqueeze(-1)
    ret, _ = finished_trial_returns(ro)  # ends: t0 env1 (2, task 1), t1 env0 (2, task 0), t2 env0 (1, task 1),
    m = per_task_return_metrics(ro, ret, "eval", ["a", "b"])  # t2 env1 (7, task 0)
    assert m["eval/return/a"] == pytest.approx(4.5) and m["eval/trials/a"] == 2
    assert m["eval/return/b"] == pytest.approx(1.5) and m["eval/trials/b"] == 2
    # task a's trials returned 2 and 7: sample std 3.5355, over sqrt(2)
    assert m["eval/return_se/a"] == pytest.approx(2.5) and m["eval/return_se/b"] == pytest.approx(0.5)
    assert per_task_return_metrics(_rollout([[1]], [[1]]), [1.0], "eval", ["a"]) == {}
    with pytest.raises(ValueError, match="task_id 1 has no name"):
        per_task_return_metrics(ro, ret, "eval", ["a"])


def test_bottom_quintile_standard_error_and_episode_metrics():
    assert bottom_quintile(list(range(11))) == pytest.approx(2.0)
    assert math.isnan(bottom_quintile([]))
    m = return_metrics([1.0, 2.0, 3.0, 6.0], "eval")  # mean 3, sample variance 14 / 3
    assert m["eval/return_se"] == pytest.approx(math.sqrt(14 / 3) / 2) and m["eval/trials"] == 4
    assert math.isnan(return_metrics([5.0], "eval")["eval/return_se"])  # one trial: no spread to estimate
    assert math.isnan(return_metrics([], "eval")["eval/return_se"])
    T = 4
    td = TensorDict({"next": {
        "episode_end": torch.tensor([[0, 1, 0, 1]], dtype=torch.bool).unsqueeze(-1),
        "episode_count": torch.tensor([[0, 1, 1, 2]]).unsqueeze(-1),
        "episode_success": torch.tensor([[0., 0., 0., 1.]]).unsqueeze(-1)}}, batch_size=[1, T])
    m = episode_metrics(td, "eval")
    assert m == {"eval/episode_0_success": 0.0, "eval/episode_1_success": 1.0}


def test_checkpoint_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a torchrl_amago checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))
    m = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_module_state(m, torch.nn.Linear(4, 2).state_dict(), "model", "x.pt")
    path = str(tmp_path / "ok.pt")
    save_checkpoint(path, {"loss": m.state_dict(), "optimizer": {}, "scheduler": {}, "counters": {}, "config": {}})
    assert set(load_checkpoint(path)["loss"]) == {"weight", "bias"}


def test_run_logger_csv_records_and_curve(tmp_path):
    """One readable metrics.csv and the curve; TorchRL's CSV tree (a file per scalar) only with --logger csv."""
    from torchrl_amago.trainers.logging import RunLogger

    lg = RunLogger(str(tmp_path), "run", {"a": 1})
    lg.log({"eval/return": 1.0}, env_steps=10, grad_steps=2)
    lg.log({"eval/return": 3.0, "train/return": torch.tensor(2.0)}, env_steps=20, grad_steps=4)
    text = (tmp_path / "metrics.csv").read_text().splitlines()
    assert text[0].split(",")[:4] == ["env_steps", "grad_steps", "wall_s", "eval/return"] and len(text) == 3
    assert lg.plot_curve() == str(tmp_path / "learning_curve.png") and (tmp_path / "learning_curve.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curve.png", "metrics.csv"]
    with_csv = RunLogger(str(tmp_path / "csv"), "run", logger="csv")
    with_csv.log({"eval/return": 1.0}, env_steps=10, grad_steps=2)
    assert (tmp_path / "csv" / "run" / "scalars" / "eval" / "return.csv").exists()  # TorchRL's CSVLogger
    resumed = RunLogger(str(tmp_path), "run", resume=True)
    assert [r["env_steps"] for r in resumed.records] == [10.0, 20.0]


def test_run_logger_logs_to_wandb_offline_and_finishes_the_run(tmp_path, wandb_offline, monkeypatch):
    """--logger wandb for real, offline (the project from wandb's own $WANDB_PROJECT): the run's config and last
    values reach wandb; close() finishes the run."""
    from torchrl_amago.trainers.logging import RunLogger

    wandb = wandb_offline
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    lg = RunLogger(str(tmp_path), "wb_run", {"lr": 3e-4}, logger="wandb")
    lg.log({"eval/return": 1.0}, env_steps=10, grad_steps=2)
    lg.log({"eval/return": 3.0, "train/return": torch.tensor(2.5)}, env_steps=20, grad_steps=4)
    run = wandb.run
    assert run is not None and run.offline and run.name == "wb_run" and run.project == "proj"
    assert run.config["lr"] == "0.0003"
    assert (run.summary["eval/return"], run.summary["train/return"], run.summary["grad_steps"]) == (3.0, 2.5, 4.0)
    lg.close()
    lg.close()  # idempotent: the trainer's close may follow an example's own
    assert wandb.run is None
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3  # the CSV is kept beside wandb


def test_wandb_without_wandb_names_the_package(tmp_path, monkeypatch):
    from tests.missing_package import assert_missing_package_named
    from torchrl_amago.trainers.logging import RunLogger

    assert_missing_package_named(monkeypatch, "wandb", "for --logger wandb but is not installed: `pip install wandb`",
                                 lambda: RunLogger(str(tmp_path), "run", logger="wandb"))
    assert_missing_package_named(monkeypatch, "tensorboard", "for --logger tensorboard but is not installed: "
                                 "`pip install tensorboard`", lambda: RunLogger(str(tmp_path), "run",
                                                                                logger="tensorboard"))


def test_each_critic_starts_at_its_own_default_init():
    """Discrete critics start at Q = 0 (zero last layer), continuous ones random (the original's)."""
    from torchrl_amago.spaces import ActionSpace
    from torchrl_amago.trainers.factory import build_heads

    cfg, _ = parse_config("", argv=["--critic_hidden", "8", "--actor_hidden", "8"])
    for space, want_zero in ((ActionSpace("discrete", 3), True), (ActionSpace("continuous", 2), False)):
        _, critic = build_heads(cfg, 6, space)
        assert bool((critic.net.out.weight == 0).all()) is want_zero, space
