"""D4RL-format HDF5 and Minari datasets -> trials: hand-built tiny files (h5py), hand-checked keys and values.

Needs h5py (skipped without it, except the missing-package test); the Minari API tests also need minari."""
import json

import numpy as np
import pytest
import torch

from torchrl_amago.data import load_offline_trials, make_sequence_replay
from torchrl_amago.data.d4rl import load_d4rl_trials, read_d4rl_hdf5, rescale_actions, write_d4rl_hdf5
from torchrl_amago.data.minari import load_minari_trials, resolve_minari_data_path
from tests.missing_package import assert_missing_package_named

# 7 transitions: trial A = steps 0-2 (terminal at 2), trial B = steps 3-5 (timeout at 5), trial C = step 6 (data end)
OBS = np.arange(7, dtype=np.float64)[:, None] * 10 + np.array([[0.0, 0.5]])  # float64 on disk -> float32 trials
ACT = np.array([0, 1, 2, 0, 1, 2, 1])
REW = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
TERM = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
TOUT = np.array([0, 0, 0, 0, 0, 1, 0], dtype=bool)


def _h5(tmp_path, name="d.hdf5", **arrays):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def test_d4rl_with_next_observations_splits_at_terminals_and_timeouts(tmp_path):
    path = _h5(tmp_path, observations=OBS, actions=ACT, rewards=REW, terminals=TERM, timeouts=TOUT,
               next_observations=OBS + 1, infos=np.zeros(7))
    td = load_d4rl_trials(path, num_actions=3)
    assert td.batch_size == torch.Size([7]) and td["observation"].dtype == torch.float32
    assert td["observation"][:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60]
    assert td["next", "observation"][:, 0].tolist() == [1, 11, 21, 31, 41, 51, 61]
    assert td["time_idx"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert td["next", "time_idx"][:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert td["is_init"][:, 0].tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert td["action"].tolist() == ACT.tolist() and td["action"].dtype == torch.long
    # prev_action is the previous action one-hot within a trial, zeros at every trial start
    assert td["prev_action"].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0],
                                          [0, 0, 0]]
    assert torch.equal(td["next", "prev_action"], torch.nn.functional.one_hot(torch.as_tensor(ACT), 3).float())
    assert td["prev_reward"][:, 0].tolist() == [0, 1, 2, 0, 4, 5, 0]
    assert td["next", "reward"][:, 0].tolist() == REW.tolist()
    assert td["next", "terminated"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 0]  # terminals -> terminated
    assert td["next", "truncated"][:, 0].tolist() == [0, 0, 0, 0, 0, 1, 1]  # timeouts and the data end -> truncated
    assert td["next", "done"][:, 0].tolist() == [0, 0, 1, 0, 0, 1, 1]
    oh = load_d4rl_trials(path, num_actions=3, one_hot_actions=True)
    assert oh["action"].dtype == torch.bool and oh["action"].long().argmax(-1).tolist() == ACT.tolist()
    rb = make_sequence_replay(100, 4, 8)
    assert load_offline_trials(rb, td) == 3 and rb.trial_lengths().tolist() == [3, 3, 1]


def test_d4rl_without_next_observations_drops_timeout_steps(tmp_path):
    path = _h5(tmp_path, observations=OBS, actions=ACT, rewards=REW, terminals=TERM, timeouts=TOUT)
    td = load_d4rl_trials(path, num_actions=3)
    # the timeout step 5 and the last step 6 have no known successor: dropped; step 4 ends trial B (truncated)
    assert td["observation"][:, 0].tolist() == [0, 10, 20, 30, 40]
    assert td["next", "observation"][:, 0].tolist() == [10, 20, 20, 40, 50]  # a terminal repeats its own obs
    assert td["next", "terminated"][:, 0].tolist() == [0, 0, 1, 0, 0]
    assert td["next", "truncated"][:, 0].tolist() == [0, 0, 0, 0, 1]
    assert td["time_idx"][:, 0].tolist() == [0, 1, 2, 0, 1]
    # the same file with next_observations ignored gives the same trials
    path2 = _h5(tmp_path, "d2.hdf5", observations=OBS, actions=ACT, rewards=REW, terminals=TERM, timeouts=TOUT,
                next_observations=OBS + 1)
    td2 = load_d4rl_trials(path2, num_actions=3, use_next_observations=False)
    assert (td2 == td).all()


def test_d4rl_continuous_actions_are_rescaled_and_shifted(tmp_path):
    act = np.stack([np.linspace(-2, 2, 7), np.linspace(0, 6, 7)], -1)  # env bounds [-2, 2] x [0, 6]
    path = _h5(tmp_path, observations=OBS, actions=act, rewards=REW, terminals=TERM, timeouts=TOUT,
               next_observations=OBS + 1)
    td = load_d4rl_trials(path, action_bounds=([-2.0, 0.0], [2.0, 6.0]))
    expect = np.stack([np.linspace(-1, 1, 7)] * 2, -1).astype(np.float32)
    np.testing.assert_allclose(td["action"].numpy(), expect, atol=1e-6)
    assert td["action"].dtype == torch.float32
    np.testing.assert_allclose(td["prev_action"][4].numpy(), expect[3], atol=1e-6)  # a_{t-1} inside trial B
    assert (td["prev_action"][3] == 0).all()  # zeros at the start of trial B
    np.testing.assert_allclose(rescale_actions([[3.0]], [-1.0], [1.0]), [[1.0]])  # clipped
    with pytest.raises(ValueError, match="action_bounds"):
        rescale_actions(act, [0.0, 0.0], [0.0, 1.0])


def test_d4rl_round_trip_dict_observations_and_errors(tmp_path):
    pytest.importorskip("h5py")
    obs = {"pos": OBS, "goal": np.ones((7, 3), np.float32)}
    path = write_d4rl_hdf5(tmp_path / "sub" / "w.hdf5", obs, ACT, REW, TERM, TOUT,
                           next_observations={k: v + 1 for k, v in obs.items()})
    raw = read_d4rl_hdf5(path)
    assert set(raw) == {"observations", "actions", "rewards", "terminals", "timeouts", "next_observations"}
    td = load_d4rl_trials(path, num_actions=3)
    assert set(td.keys()) >= {"pos", "goal"} and td["next", "goal"][0].tolist() == [2, 2, 2]
    assert td["next", "done"][:, 0].tolist() == [0, 0, 1, 0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_d4rl_trials(tmp_path / "nope.hdf5", num_actions=3)
    bad = _h5(tmp_path, "bad.hdf5", observations=OBS, actions=ACT)
    with pytest.raises(KeyError, match="rewards"):
        load_d4rl_trials(bad, num_actions=3)
    with pytest.raises(ValueError, match="num_actions"):
        load_d4rl_trials(path)


def test_missing_h5py_names_the_pip_package(monkeypatch, tmp_path):
    (tmp_path / "x.hdf5").write_bytes(b"")
    assert_missing_package_named(monkeypatch, "h5py", "pip install h5py",
                                 lambda: load_d4rl_trials(tmp_path / "x.hdf5", num_actions=3))


# ---------------------------------------------------------------------------------------------- Minari
# three episodes: 3 steps ending in a termination, 2 steps ending in a truncation, 2 steps that just stop
EPISODES = [(3, "term"), (2, "trunc"), (2, "none")]


def _minari_dataset(root, dataset_id="toy/cart-v0", discrete_start=1):
    h5py = pytest.importorskip("h5py")
    data = root / dataset_id / "data"
    data.mkdir(parents=True)
    total = 0
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, (n, end) in enumerate(EPISODES):
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            g.attrs["total_steps"] = n
            g.create_dataset("observations", data=(100 * i + np.arange(n + 1, dtype=np.float32))[:, None])
            g.create_dataset("actions", data=discrete_start + (np.arange(n) + i) % 2)
            g.create_dataset("rewards", data=np.full(n, float(i + 1)))
            g.create_dataset("terminations", data=np.arange(n) == n - 1 if end == "term" else np.zeros(n, bool))
            g.create_dataset("truncations", data=np.arange(n) == n - 1 if end == "trunc" else np.zeros(n, bool))
            total += n
    meta = {"dataset_id": dataset_id, "minari_version": "0.5.0", "data_format": "hdf5", "total_episodes": 3,
            "total_steps": total,
            "observation_space": json.dumps({"type": "Box", "dtype": "float32", "shape": [1], "low": [-1e9],
                                             "high": [1e9]}),
            "action_space": json.dumps({"type": "Discrete", "dtype": "int64", "start": discrete_start, "n": 2})}
    (data / "metadata.json").write_text(json.dumps(meta))
    return data


def _check_minari_trials(td):
    assert td.batch_size == torch.Size([7])
    assert td["observation"][:, 0].tolist() == [0, 1, 2, 100, 101, 200, 201]
    assert td["next", "observation"][:, 0].tolist() == [1, 2, 3, 101, 102, 201, 202]  # observations[1:]
    assert td["action"].tolist() == [0, 1, 0, 1, 0, 0, 1]  # Discrete(2, start=1) shifted to indices
    assert td["prev_action"].argmax(-1).tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert td["prev_action"].sum(-1).tolist() == [0, 1, 1, 0, 1, 0, 1]
    assert td["next", "terminated"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert td["next", "truncated"][:, 0].tolist() == [0, 0, 0, 0, 1, 0, 1]  # truncation, and an open episode end
    assert td["time_idx"][:, 0].tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert td["prev_reward"][:, 0].tolist() == [0, 1, 1, 0, 2, 0, 3]


def test_minari_layout_read_directly(tmp_path, monkeypatch):
    data = _minari_dataset(tmp_path)
    _check_minari_trials(load_minari_trials(data, backend="hdf5"))
    _check_minari_trials(load_minari_trials(data.parent, backend="hdf5"))  # the dataset folder
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert resolve_minari_data_path("toy/cart-v0") == data  # a dataset id under $MINARI_DATASETS_PATH
    _check_minari_trials(load_minari_trials("toy/cart-v0", backend="hdf5"))
    oh = load_minari_trials(data, backend="hdf5", one_hot_actions=True)
    assert oh["action"].shape == (7, 2)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_minari_trials("toy/missing-v0")
    with pytest.raises(ValueError, match="backend"):
        load_minari_trials(data, backend="arrow")


def test_minari_api_reads_the_same_trials(tmp_path):
    pytest.importorskip("minari")
    data = _minari_dataset(tmp_path)
    a = load_minari_trials(data, backend="minari")
    _check_minari_trials(a)
    assert (a == load_minari_trials(data, backend="hdf5")).all()


def test_real_minari_dataset_from_buffers(tmp_path, monkeypatch):
    """A dataset written by minari itself (create_dataset_from_buffers; DataCollector would need jax)."""
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("CartPole-v1", max_episode_steps=15)
    buffers, lengths = [], []
    for ep in range(4):
        obs, _ = env.reset(seed=ep)
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            obs, rew, term, trunc, _ = env.step(ep % 2)  # always left or always right
            o.append(obs), a.append(ep % 2), r.append(rew), te.append(term), tr.append(trunc)
            if term or trunc:
                break
        lengths.append(len(a))
        buffers.append(EpisodeBuffer(id=ep, observations=np.stack(o), actions=np.array(a), rewards=r,
                                     terminations=te, truncations=tr))
    minari.create_dataset_from_buffers("cartpole/test-v0", buffers, env=env, algorithm_name="fixed", author="t",
                                       author_email="t@t.t", code_permalink="-")
    td = load_minari_trials("cartpole/test-v0")
    assert td.batch_size[0] == sum(lengths) and int(td["next", "done"].sum()) == 4
    ends = td["next", "done"][:, 0].nonzero().squeeze(-1) + 1
    assert torch.diff(ends, prepend=torch.tensor([0])).tolist() == lengths
    assert td["observation"].shape == (sum(lengths), 4) and td["action"].dtype == torch.long
    assert td["action"][: lengths[0]].eq(0).all() and td["action"][lengths[0]: sum(lengths[:2])].eq(1).all()
    assert torch.equal(td["next", "terminated"][:, 0] | td["next", "truncated"][:, 0], td["next", "done"][:, 0])
    first = next(iter(minari.load_dataset("cartpole/test-v0").iterate_episodes()))
    np.testing.assert_allclose(td["observation"][: lengths[0]].numpy(), first.observations[:-1])
    np.testing.assert_allclose(td["next", "observation"][: lengths[0]].numpy(), first.observations[1:])
    assert (load_minari_trials("cartpole/test-v0", backend="hdf5") == td).all()  # direct reader agrees
