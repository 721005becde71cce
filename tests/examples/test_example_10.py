"""10_babyai: --help lists its flags; a tiny in-process run on the minigrid stand-in (the adapter's env_factory);
train layouts come from [0, train_seeds] and eval layouts from above it; a missing minigrid names the pip package."""
import csv
import math

from tests.envs.libs.test_babyai import FakeMiniGrid
from tests.examples.test_examples_smoke import TINY, help_text, load_example
from torchrl_amago.envs.libs.babyai import make_babyai_env
from tests.missing_package import assert_missing_package_named


def test_help_shows_the_cpu_defaults(capsys):
    out = " ".join(help_text("10_babyai", capsys).split())
    assert "10 — Multi-task meta-RL BabyAI" in out
    assert "(default: agent)" in out and "(default: 10.0)" in out  # agent_type, reward_multiplier


def test_tiny_run_on_the_stand_in(monkeypatch, tmp_path):
    FakeMiniGrid.resets.clear()
    mod = load_example("10_babyai")
    monkeypatch.setattr(mod, "require", lambda *a, **k: None)
    monkeypatch.setattr("torchrl_amago.envs.libs.make_babyai_env",
                        lambda tasks, n, **kw: make_babyai_env(tasks, n, env_factory=FakeMiniGrid, **kw))
    trial = 2 * 5 + 1  # k = 2 attempts of at most 5 steps + the dummy step between them
    argv = TINY + ["--timesteps_per_epoch", str(trial), "--buffer_dir", str(tmp_path), "--run_name", "smoke",
                   "--tasks", "FakeGoTo-v0", "FakePick-v0", "--attempt_steps", "5", "--k_episodes", "2",
                   "--train_seeds", "100", "--test_mult", "2"]
    summary = mod.main(argv)
    assert summary["env_steps"] == 2 * 2 * trial and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    for k in ("eval_episode_0_success", "eval_episode_1_success"):
        assert 0.0 <= summary[k] <= 1.0
    tasks = {t for t, _ in FakeMiniGrid.resets}
    assert tasks <= {"BabyAI-FakeGoTo-v0", "BabyAI-FakePick-v0"}
    seeds = [s for _, s in FakeMiniGrid.resets]
    assert any(s <= 100 for s in seeds) and any(s > 100 for s in seeds)  # train and unseen eval layouts
    with open(tmp_path / "smoke" / "logs" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert any(h.startswith("eval/return/BabyAI-Fake") for h in header)  # per-task eval returns
    assert "eval/episode_1_success" in header


def test_hide_mission_reaches_train_and_eval_envs(monkeypatch, tmp_path):
    mod = load_example("10_babyai")
    made = []

    def make(tasks, n, **kw):
        made.append(kw["hide_mission"])
        return make_babyai_env(tasks, n, env_factory=FakeMiniGrid, **kw)

    monkeypatch.setattr(mod, "require", lambda *a, **k: None)
    monkeypatch.setattr("torchrl_amago.envs.libs.make_babyai_env", make)
    argv = TINY + ["--timesteps_per_epoch", "11", "--buffer_dir", str(tmp_path), "--run_name", "hidden",
                   "--tasks", "FakeGoTo-v0", "--attempt_steps", "5", "--test_mult", "1"]
    mod.main(argv + ["--hide_mission"])
    assert len(made) >= 2 and all(made)  # train and eval envs


def test_missing_minigrid(monkeypatch, tmp_path):
    assert_missing_package_named(monkeypatch, "minigrid", "pip install minigrid",
                                 lambda: load_example("10_babyai").main(["--buffer_dir", str(tmp_path), "--run_name", "x"]))
