"""examples/08_ale.py: `--help`, and tiny in-process runs on the Atari stand-in (a fake `ale_py` with two toy games,
tests/envs/libs/atari_standin.py), so the multi-game wiring (one game per slot, per-game eval returns, the
multi-task agent default, replay snippets) is tested without ale-py."""
import csv
import math

import pytest

from tests.envs.libs.atari_standin import EPISODE_FRAMES, REWARD, install_fake_ale
from tests.examples.test_examples_smoke import TINY, example_config, load_example
from torchrl_amago.trainers import build_agent_modules, build_loss
from torchrl_amago.trainers.run.checkpoint import load_checkpoint
from tests.missing_package import assert_missing_package_named

STEPS = EPISODE_FRAMES // 4  # one toy episode = 12 agent steps at frame skip 4




def _run(tmp_path, games, extra=()):
    argv = TINY + ["--timesteps_per_epoch", str(STEPS), "--eval_timesteps", str(STEPS + 1),
                   "--final_eval_timesteps", str(STEPS + 1), "--max_seq_len", "6", "--resolution", "36", "36",
                   "--buffer_dir", str(tmp_path), "--run_name", "ale", "--games", *games, *extra]
    return load_example("08_ale").main(argv)


def _agent(tmp_path, games, extra=()):
    """(config, loss) the example builds for these flags, nothing trained."""
    argv = TINY + ["--resolution", "36", "36", "--buffer_dir", str(tmp_path), "--games", *games, *extra]
    _, cfg, _, make_train = example_config("08_ale", argv)
    env = make_train(cfg.parallel_envs)
    return cfg, build_loss(cfg, build_agent_modules(cfg, env.observation_spec, env.action_spec))


def _last_eval_row(tmp_path):
    with open(tmp_path / "ale" / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/return")]
    return rows[-1]


def test_two_games_run_multitask_with_per_game_returns(monkeypatch, tmp_path):
    install_fake_ale(monkeypatch)
    summary = _run(tmp_path, ["ToyGame", "OtherToy"])
    assert summary["env_steps"] == 2 * 2 * STEPS and summary["grad_steps"] == 2 * 2
    # each eval env (one per game) finishes exactly one episode; toy episodes pay a fixed, unclipped return
    toy, other = EPISODE_FRAMES * REWARD["ToyGame"], EPISODE_FRAMES * REWARD["OtherToy"]
    assert summary["eval_return"] == pytest.approx((toy + other) / 2)
    row = _last_eval_row(tmp_path)
    assert float(row["eval/return/ToyGame"]) == pytest.approx(toy)
    assert float(row["eval/return/OtherToy"]) == pytest.approx(other)
    cfg = load_checkpoint(str(tmp_path / "ale" / "ckpts" / "latest.pt"))["config"]
    assert cfg["agent_type"] == "multitask" and cfg["reward_multiplier"] == 0.25
    cfg, loss = _agent(tmp_path / "agent", ["ToyGame", "OtherToy"])  # the multi-task agent: filtered BC only
    assert cfg.agent_type == "multitask" and (loss.online_coeff, loss.offline_coeff) == (0.0, 1.0) and loss.two_hot


def test_one_game_uses_the_plain_agent_and_an_explicit_agent_type_wins(monkeypatch, tmp_path):
    install_fake_ale(monkeypatch)
    summary = _run(tmp_path, ["ToyGame"], ["--cnn", "drq", "--no-grayscale", "--resolution", "24", "24",
                                           "--no-drqv2_aug"])
    assert math.isfinite(summary["eval_return"]) and summary["eval_return"] == EPISODE_FRAMES * REWARD["ToyGame"]
    cfg = load_checkpoint(str(tmp_path / "ale" / "ckpts" / "latest.pt"))["config"]
    assert cfg["agent_type"] == "agent" and cfg["offline_coeff"] == 0.0 and cfg["image_key"] == "observation"
    summary = _run(tmp_path / "mt", ["ToyGame"], ["--agent_type", "multitask", "--epochs", "1",
                                                  "--eval_interval", "0", "--final_eval_timesteps", "1"])
    cfg = load_checkpoint(str(tmp_path / "mt" / "ale" / "ckpts" / "latest.pt"))["config"]
    assert cfg["agent_type"] == "multitask"
    # one game: the DPG-only agent; --agent_type multitask: the multi-task agent's filtered BC; --offline_coeff wins
    assert [(loss.online_coeff, loss.offline_coeff) for _, loss in (
        _agent(tmp_path / "a", ["ToyGame"]), _agent(tmp_path / "b", ["ToyGame"], ["--agent_type", "multitask"]),
        _agent(tmp_path / "c", ["ToyGame"], ["--offline_coeff", "0.5"]))] == [(1.0, 0.0), (0.0, 1.0), (1.0, 0.5)]


def test_long_episodes_are_stored_as_snippets(monkeypatch, tmp_path):
    """A 12-step episode with --traj_save_len 5 is learnable from the first epoch (5 + 5 + 2 steps per episode);
    without snippets nothing would be ready before the first episode ends."""
    install_fake_ale(monkeypatch)
    mod = load_example("08_ale")
    argv = TINY + ["--timesteps_per_epoch", "6", "--eval_interval", "0", "--final_eval_timesteps", "1",
                   "--max_seq_len", "4", "--traj_save_len", "5", "--epochs", "1", "--buffer_dir", str(tmp_path),
                   "--run_name", "ale", "--games", "ToyGame"]
    summary = mod.main(argv)
    assert summary["grad_steps"] == 2  # the 6 steps of each env hold a finished 5-step snippet


def test_slots_must_divide_evenly_between_games(monkeypatch, tmp_path):
    install_fake_ale(monkeypatch)
    with pytest.raises(SystemExit, match="multiple of the number of games"):
        _run(tmp_path, ["ToyGame", "OtherToy"], ["--parallel_envs", "3"])


def test_missing_ale_py_names_the_pip_package(monkeypatch, tmp_path):
    assert_missing_package_named(monkeypatch, "ale_py", "pip install ale-py", lambda: _run(tmp_path, ["Pong"]))


def test_real_ale_tiny_run(tmp_path):
    pytest.importorskip("ale_py")
    # a 48-frame time limit makes every trial 12 steps long, truncated
    summary = _run(tmp_path, ["Pong", "Breakout"], ["--time_limit_frames", str(EPISODE_FRAMES)])
    assert summary["env_steps"] == 2 * 2 * STEPS and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    row = _last_eval_row(tmp_path)
    assert float(row["eval/trials/Pong"]) == 1.0 and float(row["eval/trials/Breakout"]) == 1.0
