"""`examples/03_popgym.py --multidomain` (AMAGO-2 multi-domain POPGym): its defaults and flags, a missing popgym
is a clear error, and a tiny in-process run over two fast games reports finite returns, per game and per episode."""
import csv
import math

import pytest
import torch

from tests.examples.test_examples_smoke import TINY, example_config, load_example
from tests.missing_package import assert_missing_package_named


def test_missing_popgym_is_a_clear_error(monkeypatch, tmp_path):
    assert_missing_package_named(
        monkeypatch, "popgym", "pip install popgym",
        lambda: load_example("03_popgym").main(["--multidomain", "--buffer_dir", str(tmp_path)] + TINY
                                               + ["--dset_max_size", "8000"]))  # one epoch (2 x 2000 steps) must fit


def _config_and_env(argv):
    """The example's config, trainer kwargs and one built train env (2 slots), without training."""
    mod, cfg, kw, make_train = example_config("03_popgym", argv)
    return mod, cfg, kw, make_train(2)


def test_multidomain_defaults_original_and_cpu_choices():
    pytest.importorskip("popgym")
    games = ["RepeatPreviousEasy", "MineSweeperEasy"]
    mod, cfg, kw, env = _config_and_env(["--multidomain", "--games", *games, "--warmup_episodes", "2"])
    trial = 3 * (51 + 1)  # 2 warm-up + 1 scored RepeatPreviousEasy episodes, each with its dummy step
    assert kw["task_names"] == games and kw["rollout_horizon"] == trial
    assert cfg.max_seq_len == trial + 1 and cfg.max_time_idx >= trial + 1
    # CPU choices measured in docs/domains/popgym.md (the original: learnable positions, a GPU update ratio)
    assert cfg.pos_emb == "rope" and cfg.grads_per_epoch == 300 and cfg.eps_steps_anneal == 800
    assert cfg.agent_type == "multitask" and cfg.reward_multiplier == 200.0 and cfg.two_hot_bins == 64
    assert cfg.tau == 0.0025 and cfg.multigammas is None  # the usual 6 (+ gamma); the original's 18 are opt-in
    assert env.batch_size == torch.Size([2]) and env.observation_spec["observation"].shape == (2, 30)
    assert env.base_env.warmup_episodes == 2 and env.base_env.games == games
    assert env.action_spec.shape == (2, 26)  # the original's shared action space
    env.close()


def test_num_actions_zero_is_the_largest_game_action_space():
    pytest.importorskip("popgym")
    games = ["RepeatPreviousEasy", "HigherLowerEasy"]  # 4 and 2 actions
    _, _, _, env = _config_and_env(["--multidomain", "--games", *games, "--num_actions", "0"])
    assert env.action_spec.shape == (2, 4) and env.base_env.game_num_actions == [4, 2]
    env.close()
    _, _, _, env = _config_and_env(["--multidomain", "--games", *games, "--num_actions", "7"])
    assert env.action_spec.shape == (2, 7)
    env.close()


def test_tiny_multidomain_run(tmp_path):
    pytest.importorskip("popgym")
    games = ["MineSweeperEasy", "RepeatPreviousEasy"]
    steps = 104  # the longest trial (RepeatPreviousEasy: 2 x (51 + 1)), so every env finishes one in epoch 0
    argv = TINY + ["--multidomain", "--games", *games, "--timesteps_per_epoch", str(steps), "--max_seq_len", "32",
                   "--final_eval_timesteps", "110", "--eval_interval", "1", "--eval_timesteps", "110",
                   "--buffer_dir", str(tmp_path), "--run_name", "md"]
    summary = load_example("03_popgym").main(argv)
    assert summary["env_steps"] == 2 * 2 * steps and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    for k in ("eval_episode_0_return", "eval_episode_1_return"):  # warm-up and scored episodes
        assert math.isfinite(summary[k]) and -1.01 <= summary[k] <= 1.01
    with open(tmp_path / "md" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    per_game = [f"eval/return/{g}" for g in games]
    assert any(any(r.get(k) not in (None, "") for k in per_game) for r in rows)  # eval returns per game
    for r in rows:
        vals = [float(r[k]) for k in per_game if r.get(k) not in (None, "")]
        trials = [float(r[f"eval/trials/{g}"]) for g in games if r.get(f"eval/trials/{g}") not in (None, "")]
        if vals:
            assert all(math.isfinite(v) for v in vals) and sum(trials) == float(r["eval/trials"])
