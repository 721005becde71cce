"""Example 02 (gymnax): `--help`, the KEY=VALUE params, and a tiny in-process run on a numpy stand-in with gymnax's
env API batched by the JAX bridge (no jax needed); the run on the real MemoryChain skips without gymnax."""
import math

import pytest

from tests.envs.libs.test_gymnax import ToyMemory
from tests.examples.test_examples_smoke import TINY, load_example
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.gymnax import GymnaxFunctionalEnv
from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
from torchrl_amago.trainers import parse_key_values
from tests.missing_package import assert_missing_package_named


def _stand_in(n):
    return make_amago_env(JaxBatchedEnv(GymnaxFunctionalEnv(ToyMemory(), backend="numpy"), n, backend="numpy"))



def test_env_params_parse_values():
    assert parse_key_values("env_param", ["memory_length=10", "name=abc", "x=0.5"]) == {
        "memory_length": 10, "name": "abc", "x": 0.5}
    with pytest.raises(SystemExit, match="--env_param wants KEY=VALUE"):
        load_example("02_gymnax").main(["--env_param", "memory_length"])


def test_tiny_run_on_the_stand_in(tmp_path):
    argv = TINY + ["--timesteps_per_epoch", "8", "--max_seq_len", "8", "--final_eval_timesteps", "8",
                   "--buffer_dir", str(tmp_path), "--run_name", "smoke"]
    summary = load_example("02_gymnax").main(argv, make_env=_stand_in)
    assert summary["env_steps"] == 2 * 2 * 8 and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"]) and -1.0 <= summary["eval_return"] <= 1.0


def test_missing_gymnax_is_a_clear_error(monkeypatch, tmp_path):
    assert_missing_package_named(monkeypatch, "gymnax", "pip install (gymnax|jax)",
                                 lambda: load_example("02_gymnax").main(TINY + ["--buffer_dir", str(tmp_path)]))


def test_tiny_run_on_real_memory_chain(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    argv = TINY + ["--env_param", "memory_length=3", "--timesteps_per_epoch", "8", "--final_eval_timesteps", "8",
                   "--buffer_dir", str(tmp_path), "--run_name", "smoke"]
    summary = load_example("02_gymnax").main(argv)
    assert summary["env_steps"] == 2 * 2 * 8 and summary["grad_steps"] == 2 * 2
    assert -1.0 <= summary["eval_return"] <= 1.0
