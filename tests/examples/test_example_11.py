"""Example 11 (XLand-MiniGrid): `--help` and a tiny in-process run on a numpy stand-in with xminigrid's Environment
API (k-episode trials, per-attempt returns in the summary); the run on the real package is slow and skips without
xminigrid."""
import math

import pytest

from tests.envs.libs.test_xland import Params, ToyXLand, sample_ruleset
from tests.examples.test_examples_smoke import TINY, load_example
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
from torchrl_amago.envs.libs.xland import XLandTrialEnv
from tests.missing_package import assert_missing_package_named


def _stand_in(a):
    def make(n):
        fenv = XLandTrialEnv(ToyXLand(), Params(max_steps=a.max_steps), sample_ruleset, a.k_episodes, backend="numpy")
        return make_amago_env(JaxBatchedEnv(fenv, n, backend="numpy"))

    return make, make, a.max_steps



def test_tiny_run_on_the_stand_in(tmp_path):
    argv = TINY + ["--k_episodes", "2", "--max_steps", "3", "--final_eval_timesteps", "12",
                   "--buffer_dir", str(tmp_path), "--run_name", "smoke"]
    summary = load_example("11_xland_minigrid").main(argv, make_envs=_stand_in)
    assert summary["env_steps"] == 2 * 2 * 6  # timesteps_per_epoch defaults to the longest trial, k * max_steps
    assert summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"]) and 0.0 <= summary["eval_return"] <= 2.0
    for k in ("eval_episode_0_return", "eval_episode_1_return"):
        assert k in summary and 0.0 <= summary[k] <= 1.0


def test_missing_xminigrid_is_a_clear_error(monkeypatch, tmp_path):
    assert_missing_package_named(monkeypatch, "xminigrid", "pip install (xminigrid|jax)",
                                 lambda: load_example("11_xland_minigrid").main(TINY + ["--buffer_dir", str(tmp_path)]))


@pytest.mark.slow  # compiles XLand twice (train + eval env), ~3 min on a busy CPU
def test_tiny_run_on_real_xland(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("xminigrid")
    argv = TINY + ["--benchmark", "local-trivial", "--grid_size", "7", "--k_episodes", "2", "--max_steps", "4",
                   "--final_eval_timesteps", "8", "--buffer_dir", str(tmp_path), "--run_name", "smoke"]
    summary = load_example("11_xland_minigrid").main(argv)
    assert summary["env_steps"] == 2 * 2 * 8 and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
