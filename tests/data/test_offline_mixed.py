"""Offline trials from flat arrays, loading them into the sequence replay, and mixing buffers by weight."""
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tests.data.toy_envs import CountingEnv, collect
from torchrl_amago.data import MixedReplay, arrays_to_trials, load_offline_trials, make_sequence_replay

# 7 transitions: trial A = steps 0-2 (terminal at 2), trial B = steps 3-5 (timeout at 5), trial C = step 6 (data end)
OBS = np.arange(7, dtype=np.float32)[:, None] * 10
ACT = np.array([0, 1, 2, 0, 1, 2, 1])
REW = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype=np.float32)
TERM = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
TOUT = np.array([0, 0, 0, 0, 0, 1, 0], dtype=bool)


def test_arrays_to_trials_with_next_observations():
    nxt = OBS + 1
    td = arrays_to_trials(OBS, ACT, REW, TERM, TOUT, next_observations=nxt, num_actions=3)
    assert td.batch_size == torch.Size([7])
    assert td["time_idx"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert td["next", "time_idx"][:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert td["is_init"][:, 0].tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert td["prev_reward"][:, 0].tolist() == [0, 1, 2, 0, 4, 5, 0]
    assert td["next", "prev_reward"][:, 0].tolist() == REW.tolist() == td["next", "reward"][:, 0].tolist()
    assert td["prev_action"].argmax(-1).tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert td["prev_action"].sum(-1).tolist() == [0, 1, 1, 0, 1, 1, 0]  # zeros at trial starts
    assert torch.equal(td["next", "prev_action"], torch.nn.functional.one_hot(torch.as_tensor(ACT), 3).float())
    assert td["action"].tolist() == ACT.tolist() and td["action"].dtype == torch.long
    assert td["next", "terminated"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert td["next", "truncated"][:, 0].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert td["next", "done"][:, 0].tolist() == [0, 0, 1, 0, 0, 1, 1]
    assert torch.equal(td["next", "observation"], torch.as_tensor(nxt))


def test_arrays_to_trials_without_next_observations_drops_unknown_successors():
    act = np.random.RandomState(0).uniform(-1, 1, (7, 2)).astype(np.float32)
    td = arrays_to_trials({"pos": OBS}, act, REW, TERM, TOUT)
    # step 5 (timeout) and step 6 (data end) have unknown successors -> dropped; step 4 ends trial B
    assert td.batch_size == torch.Size([5])
    assert td["pos"][:, 0].tolist() == [0, 10, 20, 30, 40]
    assert td["next", "pos"][:, 0].tolist() == [10, 20, 20, 40, 50]  # terminal repeats its own obs
    assert td["next", "terminated"][:, 0].tolist() == [0, 0, 1, 0, 0]
    assert td["next", "truncated"][:, 0].tolist() == [0, 0, 0, 0, 1]
    assert td["time_idx"][:, 0].tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(td["prev_action"][4], torch.as_tensor(act[3]))
    assert torch.equal(td["next", "prev_action"], torch.as_tensor(act[:5]))


def test_arrays_to_trials_errors():
    with pytest.raises(ValueError, match="num_actions"):
        arrays_to_trials(OBS, ACT, REW, TERM, TOUT)
    with pytest.raises(ValueError, match="terminals"):
        arrays_to_trials(OBS, ACT, REW, TERM[:3], TOUT, num_actions=3)
    with pytest.raises(ValueError, match="observations"):
        arrays_to_trials(OBS[:5], ACT, REW, TERM, TOUT, num_actions=3)


def test_load_offline_trials_list_and_flat():
    td = arrays_to_trials(OBS, ACT, REW, TERM, TOUT, next_observations=OBS + 1, num_actions=3)
    rb = make_sequence_replay(100, 4, 64, generator=torch.Generator().manual_seed(0))
    assert load_offline_trials(rb, td) == 3
    assert rb.trial_lengths().tolist() == [3, 3, 1]
    rb2 = make_sequence_replay(100, 4, 64, generator=torch.Generator().manual_seed(0))
    assert load_offline_trials(rb2, [td[:3], td[3:6], td[6:]]) == 3
    s, s2 = rb.sample(), rb2.sample()
    assert (s == s2).all()
    for b in range(64):  # windows start at 0 ("none" padding, trials <= T) and stop at the trial end
        n = int(s["mask"][b].sum())
        assert s["time_idx"][b, 0, 0] == 0 and n == int(s["next", "time_idx"][b, n - 1, 0])
        assert s["next", "done"][b, n - 1] and not s["next", "done"][b, : n - 1].any()
    with pytest.raises(ValueError, match="capacity_steps"):
        load_offline_trials(make_sequence_replay(5, 4, 8), td)


def test_offline_loading_keeps_online_trials_in_progress():
    batches = collect(lambda: CountingEnv(2), 10, 2)
    rb = make_sequence_replay(1000, 3, 8)
    rb.extend(batches[0])
    open_before = rb.writer.index.env_unit.clone()
    offline = batches[0][0].clone()
    offline["next", "done"][-1] = True
    load_offline_trials(rb, offline)
    assert torch.equal(rb.writer.index.env_unit, open_before)
    rb.extend(batches[1])
    full = torch.cat(batches, 1)
    n_online = int(full["next", "done"].sum())
    n_offline = int(offline["next", "done"].sum())
    assert rb.num_trials() == n_online + n_offline
    for _ in range(5):
        s = rb.sample()
        m = s["mask"]
        assert ((s["trial"] == s["trial"][:, :1]) | ~m[..., None]).all()


def constant_buffer(value, n_trials, L=6, T=4, B=16):
    rb = make_sequence_replay(1000, T, B)
    trials = [TensorDict({"x": torch.full((L, 1), float(value)), ("next", "done"): torch.arange(L)[:, None] == L - 1,
                          ("extra", "only_here"): torch.zeros(L, 1)}, [L]) for _ in range(n_trials)]
    if n_trials:
        load_offline_trials(rb, trials)
    return rb


def test_mixed_replay_weights():
    a, b, empty = constant_buffer(0, 3), constant_buffer(1, 5), constant_buffer(2, 0)
    mixed = MixedReplay([a, b, empty], [0.8, 0.2, 5.0], batch_size=2000, generator=torch.Generator().manual_seed(0))
    s = mixed.sample()
    assert s.batch_size == torch.Size([2000, 4]) and "mask" in s.keys()
    frac_b = s["x"][:, 0, 0].mean().item()  # the empty buffer is skipped and weights renormalised
    assert abs(frac_b - 0.2) < 0.03
    assert mixed.last_counts.tolist()[2] == 0 and sum(mixed.last_counts.tolist()) == 2000
    assert not (s["x"][:, 0, 0][:1000] == 0).all()  # sources are shuffled
    calls = []
    sched = lambda step: calls.append(step) or ([1.0, 0.0, 0.0] if step == 0 else [0.0, 1.0, 0.0])  # noqa: E731
    mixed = MixedReplay([a, b, empty], [0.5, 0.5, 0.0], batch_size=64, schedule=sched)
    assert (mixed.sample()["x"] == 0).all() and (mixed.sample()["x"] == 1).all() and calls == [0, 1]
    with pytest.raises(RuntimeError, match="no buffer"):
        MixedReplay([empty, a], [1.0, 0.0]).sample(4)
    with pytest.raises(ValueError, match="weights"):
        MixedReplay([a, b], [1.0, -1.0])
    with pytest.raises(ValueError, match="seq_len"):
        MixedReplay([a, make_sequence_replay(100, 7, 4)], [1.0, 1.0])


def test_mixed_replay_common_keys_and_checkpoint(tmp_path):
    a = constant_buffer(0, 3)
    online = make_sequence_replay(1000, 4, 16)
    done = (torch.arange(6) == 5).expand(2, 6)[..., None]
    online.extend(TensorDict({"x": torch.ones(2, 6, 1), ("next", "done"): done}, [2, 6]))
    mixed = MixedReplay([a, online], [0.5, 0.5], batch_size=32)
    s = mixed.sample()
    assert ("extra", "only_here") not in s.keys(True) and "x" in s.keys()
    mixed.dumps(tmp_path)
    a2, online2 = constant_buffer(5, 0), make_sequence_replay(1000, 4, 16)
    restored = MixedReplay([a2, online2], [0.0, 1.0])
    restored.loads(tmp_path)
    assert restored.num_batches == 1 and restored.weights.tolist() == [0.5, 0.5]
    assert a2.num_trials() == 3 and online2.num_trials() == 2
