"""examples/09_multitask_procgen.py: `--help`, and a tiny in-process run on the procgen stand-in (no procgen needed;
the real-package run skips without `procgen`)."""
import math

import pytest

from tests.envs.libs.test_procgen import FakeLevel
from tests.examples.test_examples_smoke import TINY, load_example
from tests.missing_package import hide_modules

NAME = "09_multitask_procgen"



def test_missing_procgen_exits_naming_the_pip_package(monkeypatch, tmp_path):
    hide_modules(monkeypatch, "procgen")
    with pytest.raises(SystemExit) as e:
        load_example(NAME).main(["--games", "coinrun", "--buffer_dir", str(tmp_path)])
    assert "pip install procgen-mirror" in str(e.value.code)


def _tiny(tmp_path, extra):
    return TINY + ["--timesteps_per_epoch", "12", "--buffer_dir", str(tmp_path), "--run_name", "p09",
                   "--max_seq_len", "8", "--train_seeds", "20", "--horizon", "12", "--eval_timesteps", "12",
                   "--final_eval_timesteps", "24"] + extra


def test_tiny_multitask_run_on_the_standin(tmp_path):
    FakeLevel.log = []
    summary = load_example(NAME).main(_tiny(tmp_path, ["--games", "coinrun", "maze", "--cnn", "nature"]),
                                      game_factory=FakeLevel)
    assert summary["env_steps"] == 2 * 2 * 12 and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    assert math.isfinite(summary["eval_episode_0_return"]) and math.isfinite(summary["eval_episode_1_return"])
    makes = [e for e in FakeLevel.log if e[0] == "make"]
    train = [m for m in makes if m[2] <= 20]
    test = [m for m in makes if m[2] > 20]
    assert train and test and all(m[1] in ("coinrun", "maze") for m in makes)  # unseen eval levels
    cfg = (tmp_path / "p09" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/return/coinrun" in cfg or "eval/return/maze" in cfg  # per-game eval returns (task_id)


def test_one_game_uses_the_single_task_agent_and_rescaled_rewards(tmp_path):
    mod = load_example(NAME)
    seen = {}

    class Spy(FakeLevel):
        def __init__(self, *a):
            super().__init__(*a)
            seen.setdefault("games", set()).add(a[0])

    summary = mod.main(_tiny(tmp_path, ["--distribution", "easy-rescaled", "--games", "coinrun", "--cnn", "impala",
                                        "--epochs", "1"]), game_factory=Spy)
    assert seen["games"] == {"coinrun"}
    # coinrun x100 in easy-rescaled: unscaled, a fake trial pays at most 2 attempts x 4 steps x action 14 = 112
    assert summary["eval_return"] > 200


def test_real_procgen_tiny_run(tmp_path):
    pytest.importorskip("procgen")
    flags = ["--games", "dodgeball", "--horizon", "30", "--eval_timesteps", "30", "--final_eval_timesteps", "60"]
    summary = load_example(NAME).main(_tiny(tmp_path, flags))
    assert math.isfinite(summary["eval_return"])


class BestActionLevel(FakeLevel):
    """The stand-in level, paying action / 14 per step: the best policy always plays action 14."""

    def act(self, ac):
        super().act(ac)
        self.rew = float(ac[0]) / 14.0


@pytest.mark.slow
def test_learns_the_best_action_on_the_standin(tmp_path):
    """The whole pipeline (adapter, CNN encoder, trainer) learns from 64x64 frames: a uniform policy earns about
    half of the best return; after 300 updates the policy is close to always playing the best action."""
    argv = ["--games", "coinrun", "--horizon", "30", "--epochs", "12", "--timesteps_per_epoch", "30",
            "--grads_per_epoch", "25",
            "--eval_interval", "3", "--eval_timesteps", "30", "--final_eval_timesteps", "60",
            "--eps_steps_anneal", "100", "--buffer_dir", str(tmp_path), "--run_name", "best", "--no-progress_bar",
            "--seed", "0"]
    summary = load_example(NAME).main(argv, game_factory=BestActionLevel)
    rows = (tmp_path / "best" / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = float(rows[1].split(",")[header.index("eval/return")])
    # a trial is 2 attempts of 2..4 steps; the best policy earns ~1 per step, a uniform one ~0.5
    assert first < 4.5 and summary["eval_return"] > 5.5
