"""14_offline: --help lists its flags; tiny in-process runs on a small D4RL-format dataset written by the example
itself (--make_dataset; needs h5py): pure offline (no env steps) and offline-to-online (--online_after_epoch)."""
import math

import numpy as np
import pytest

from tests.examples.test_examples_smoke import TINY, load_example
from torchrl_amago.data import load_dataset_trials
from torchrl_amago.envs.libs import gym_action_info



def _argv(tmp_path, *extra):
    return TINY + ["--timesteps_per_epoch", "20", "--buffer_dir", str(tmp_path), "--run_name", "smoke",
                   "--dataset", str(tmp_path / "ds.hdf5"), "--make_dataset", "--dataset_episodes", "6",
                   "--max_episode_steps", "20", "--final_eval_timesteps", "21", *extra]


def test_offline_only_and_the_dataset(tmp_path):
    pytest.importorskip("h5py")
    mod = load_example("14_offline")
    summary = mod.main(_argv(tmp_path))
    assert summary["env_steps"] == 0  # never collects: --online_after_epoch defaults to never
    assert summary["grad_steps"] == 2 * 2 and math.isfinite(summary["eval_return"])
    from torchrl_amago.data.d4rl import load_d4rl_trials, read_d4rl_hdf5

    raw = read_d4rl_hdf5(tmp_path / "ds.hdf5")
    assert raw["observations"].shape[1] == 4 and raw["observations"].dtype == np.float32
    ends = raw["terminals"] | raw["timeouts"]
    assert int(ends.sum()) == 6 and ends[-1]  # 6 episodes, each ends in a terminal or a 20-step timeout
    assert not (raw["terminals"] & raw["timeouts"]).any()
    np.testing.assert_array_equal(raw["observations"][1:][~ends[:-1]], raw["next_observations"][:-1][~ends[:-1]])
    td = load_d4rl_trials(tmp_path / "ds.hdf5", num_actions=2)
    assert int(td["next", "done"].sum()) == 6 and td["time_idx"].max() < 20


def test_offline_then_online(tmp_path):
    pytest.importorskip("h5py")
    summary = load_example("14_offline").main(_argv(tmp_path, "--online_after_epoch", "1"))
    assert summary["env_steps"] == 1 * 2 * 20  # epoch 1 only: parallel_envs * timesteps_per_epoch
    assert summary["grad_steps"] == 2 * 2 and math.isfinite(summary["eval_return"])


def test_missing_dataset_is_a_clear_exit(tmp_path):
    pytest.importorskip("h5py")
    with pytest.raises(SystemExit) as e:
        load_example("14_offline").main(["--dataset", str(tmp_path / "none.hdf5"), "--buffer_dir", str(tmp_path)])
    assert "not found" in str(e.value.code) and "--make_dataset" in str(e.value.code)


def test_continuous_env_with_rescaled_actions(tmp_path):
    """Pendulum (Box [-2, 2]): dataset actions are rescaled to [-1, 1] like the env's RescaleAction; Beta policy."""
    pytest.importorskip("h5py")
    import gymnasium as gym

    from torchrl_amago.data.d4rl import write_d4rl_hdf5

    env = gym.make("Pendulum-v1", max_episode_steps=20)
    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        for t in range(20):
            a = rng.uniform(-2, 2, 1).astype(np.float32)
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(cols, (obs, a, r, term, trunc, nxt)):
                cols[k].append(v)
            obs = nxt
    write_d4rl_hdf5(tmp_path / "pend.hdf5", **{k: np.asarray(v) for k, v in cols.items()})
    mod = load_example("14_offline")
    trials = load_dataset_trials(tmp_path / "pend.hdf5", "d4rl", action_bounds=gym_action_info("Pendulum-v1")[1])
    np.testing.assert_allclose(trials["action"].numpy(), np.asarray(cols["actions"]) / 2, atol=1e-6)
    assert int(trials["next", "truncated"].sum()) == 3 and not trials["next", "terminated"].any()
    argv = TINY + ["--timesteps_per_epoch", "20", "--buffer_dir", str(tmp_path), "--run_name", "pend",
                   "--dataset", str(tmp_path / "pend.hdf5"), "--env", "Pendulum-v1", "--max_episode_steps", "20",
                   "--final_eval_timesteps", "21", "--online_after_epoch", "1"]
    summary = mod.main(argv)
    assert summary["env_steps"] == 2 * 20 and summary["grad_steps"] == 4 and math.isfinite(summary["eval_return"])
