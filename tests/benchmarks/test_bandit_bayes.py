"""benchmarks/bandit_bayes.py: each strategy in the env against its value worked out by hand, the regret
decomposition against the return gap, the belief probe on planted data, and the trained-agent report end to end."""
import os
from pathlib import Path

import pytest
import torch

from tests.examples.test_examples_smoke import TINY, load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "bandit_bayes.py", "bandit_bayes")


def _within(rewards: torch.Tensor, value: float, se_mult: float = 4.0):
    r = rewards.double()
    assert abs(r.mean().item() - value) < se_mult * r.std().item() / r.numel() ** 0.5


def test_strategies_earn_their_hand_computed_values():
    play = _script().play
    # 2 arms, pull 2 after one pull of arm a (uniform priors): Thompson pulls a again with P(Beta(2,1) > U) = 2/3
    # after a success (pays 2/3 x 2/3 + 1/3 x 1/2 = 11/18), with P(Beta(1,2) > U) = 1/3 after a failure (4/9)
    ts = play("thompson", 2, 2, 40000, seed=0)["reward"]
    _within(ts[:, 1], 0.5 * 11 / 18 + 0.5 * 4 / 9)  # 19/36
    # UCB1, 2 arms, 3 pulls: each arm once (1/2 each), then the arm that paid; both or neither: either (7/12)
    _within(play("ucb1", 2, 3, 40000, seed=1)["reward"].sum(-1), 0.5 + 0.5 + 7 / 12)
    # greedy = stay after a success, switch after a failure at 2 pulls: 1/2 + 7/12, the Bayes optimum
    _within(play("greedy", 2, 2, 40000, seed=2)["reward"].sum(-1), 0.5 + 7 / 12)
    _within(play("random", 3, 4, 40000, seed=3)["reward"].sum(-1), 2.0)
    with pytest.raises(ValueError, match="unknown strategy"):
        _script().counts_policy("softmax", 2, 2, torch.Generator())


def test_regret_adds_up_to_the_gap_and_is_zero_for_the_bayes_policy():
    from torchrl_amago.envs import BanditBelief

    s = _script()
    dp = BanditBelief(3, 6)
    out, _ = s.choices(s.play("bayes", 3, 6, 4000, seed=0), 3, 6, dp)
    assert out["regret"] == 0.0 and all(x == 1.0 for x in out["bayes_agree"])
    assert abs(out["return"] - dp.value(dp.start)) < 4 * out["return_se"]
    for name in ("thompson", "random"):
        out, _ = s.choices(s.play(name, 3, 6, 8000, seed=1), 3, 6, dp)
        gap = dp.value(dp.start) - out["return"]
        assert out["regret"] > 0.1 and abs(out["regret"] - gap) < 4 * out["return_se"]
        assert sum(out["regret_per_pull"]) == pytest.approx(out["regret"], abs=1e-3)
    rand, _ = s.choices(s.play("random", 3, 6, 8000, seed=2), 3, 6, None)  # no DP: returns and stays only
    assert set(rand) == {"trials", "return", "return_se", "per_pull", "stay_after_win", "stay_after_loss",
                         "greedy_agree"}
    assert rand["stay_after_win"] == pytest.approx(1 / 3, abs=0.02) == rand["stay_after_loss"]  # a uniform arm
    greedy, _ = s.choices(s.play("greedy", 2, 2, 2000, seed=3), 2, 2)  # win: stay (2/3 > 1/2); loss: switch
    assert greedy["stay_after_win"] == 1.0 and greedy["stay_after_loss"] == 0.0


def test_counts_before_each_pull():
    a = torch.tensor([[0, 0, 1, 1, 0, 2]])  # two trials of 3 pulls
    r = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    s, f = _script().counts_before(a, r, 3, 3)
    assert s[0].tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert f[0].tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_probe_reads_a_planted_posterior_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    y = x[:, :3] @ torch.randn(3, 2, generator=g)
    r2 = _script().ridge_r2
    assert r2(x + 0.05 * torch.randn(x.shape, generator=g), y, seed=0) > 0.95
    assert r2(torch.randn(2000, 8, generator=g), y, seed=0) < 0.02


def test_the_task_is_read_from_the_env_id():
    task = _script().agent_task
    assert task(["--env", "torchrl_amago/BernoulliBandit-k5-n20-v0", "--seed", "1"]) == ("01_basic_gym", 5, 20)
    assert task(["--seed", "1", "--env", "MultiarmedBanditEasy"]) == ("03_popgym", 10, 200)
    with pytest.raises(ValueError, match="BernoulliBandit"):
        task(["--env", "CartPole-v1"])


@pytest.mark.slow  # trains example 01 for 4 updates first (about 20 s)
def test_agent_report_of_a_tiny_run(tmp_path):
    import argparse

    tiny = [x for i, x in enumerate(TINY) if "--eval_envs" not in TINY[max(i - 1, 0):i + 1]]  # the report sets it
    flags = ["--env", "torchrl_amago/BernoulliBandit-k2-n10-v0", *tiny, "--timesteps_per_epoch", "20",
             "--max_seq_len", "12", "--final_eval_timesteps", "20"]
    load_module(Path(ROOT) / "examples" / "01_basic_gym.py", "ex01").main(
        [*flags, "--buffer_dir", str(tmp_path), "--run_name", "bandit"])
    args = argparse.Namespace(run=str(tmp_path / "bandit"), ckpt="latest", eval_envs=4, trials_per_env=2, seed=0,
                              actor_gamma=-1)
    lines = list(_script().agent_lines(args, flags))
    assert [line["greedy"] for line in lines] == [False, True]
    for line in lines:
        assert line["trials"] == 8 and len(line["per_pull"]) == len(line["entropy_per_pull"]) == 10
        assert len(line["critic_bayes_agree"]) == 5  # example 01's 4 multigammas and the acting gamma
        assert 0 <= line["entropy_per_pull"][0] <= line["uniform_entropy"] + 1e-6
        assert line["regret"] >= 0 and line["probe_r2"] <= 1


def test_popgym_strategies_on_the_same_episodes():
    pytest.importorskip("popgym")
    lines = {(x["popgym"], x["strategy"]): x for x in _script().popgym_lines(100, seed=0)}
    # MultiarmedBanditEasy: 2 x pays / 200 - 1; Thompson pays about 0.82 of its pulls (0.64; 5,000 trials of
    # BernoulliBandit(10, 200) in benchmarks/bandit_bayes.py), a uniform arm 0.5 (0.0)
    assert 0.55 < lines["MultiarmedBanditEasy", "thompson"]["return"] < 0.75
    # HigherLowerEasy, the same 100 decks (seeded resets): counting beats the memoryless guess on every deck size
    # of effect (0.53 against 0.50 over 20,000 simulated decks)
    counting, memoryless = lines["HigherLowerEasy", "counting"], lines["HigherLowerEasy", "memoryless"]
    assert counting["return"] - memoryless["return"] > 0.01 and counting["return"] < 0.6


@pytest.mark.slow  # trains example 03 for 4 updates on 200-pull trials first
def test_agent_report_of_a_tiny_popgym_run(tmp_path):
    import argparse

    pytest.importorskip("popgym")
    tiny = [x for i, x in enumerate(TINY) if "--eval_envs" not in TINY[max(i - 1, 0):i + 1]]
    flags = ["--env", "MultiarmedBanditEasy", *tiny, "--timesteps_per_epoch", "201", "--max_seq_len", "16",
             "--final_eval_timesteps", "20"]
    load_module(Path(ROOT) / "examples" / "03_popgym.py", "ex03").main(
        [*flags, "--buffer_dir", str(tmp_path), "--run_name", "mab"])
    args = argparse.Namespace(run=str(tmp_path / "mab"), ckpt="latest", eval_envs=2, trials_per_env=1, seed=0,
                              actor_gamma=-1)
    for line in _script().agent_lines(args, flags):
        assert line["trials"] == 2 and len(line["per_pull"]) == 200 and "regret" not in line
        assert line["popgym_return"] == pytest.approx(2 * line["return"] / 200 - 1, abs=1e-3)
        assert "critic_greedy_agree" in line and "critic_bayes_agree" not in line
