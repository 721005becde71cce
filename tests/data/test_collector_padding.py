"""Padded collector batches store exactly their real steps (issue 65, item 5).

The probe's case (interop.md seam T): ``Collector(split_trajs=True)`` yields one trajectory per row, right-padded with
zeros and marked by ``("collector", "mask")``; the replay refused it with a message suggesting ``traj_key=None``,
and following it stored the padding as valid steps (104 stored for 72 real). Here a real TorchRL Collector on the
builtin T-Maze (trials of 5 steps) collects the same rollouts with and without ``split_trajs``: both buffers must
hold the same steps, grouped into the same trials, in trial order."""
import tempfile
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector

from torchrl_amago import keys as K
from torchrl_amago.data import make_sequence_replay
from torchrl_amago.envs import TMaze, make_amago_env


def collect(split_trajs: bool, steps_per_env: int, batches: int = 6):
    torch.manual_seed(0)
    env = make_amago_env(TMaze(2, corridor_length=4, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # split_trajs' advice to use a SliceSampler
        col = Collector(env, None, frames_per_batch=2 * steps_per_env, total_frames=2 * steps_per_env * batches,
                        split_trajs=split_trajs)
        rb = make_sequence_replay(2000, seq_len=5, batch_size=64, scratch_dir=tempfile.mkdtemp())
        real = 0
        for x in col:
            real += int(x["collector", "mask"].sum()) if split_trajs else x.numel()
            rb.extend(x)
        col.shutdown()
    return rb, real


def trials(rb):
    """Every stored trial as a tuple of (time_idx, observation..., action) rows, in the order of its steps."""
    data = rb.storage[: len(rb)]
    out = {}
    for tid in data[K.TRIAL_ID].unique().tolist():
        steps = data[data[K.TRIAL_ID] == tid]
        steps = steps[steps[K.TRIAL_STEP].argsort()]
        assert steps[K.TRIAL_STEP].tolist() == list(range(steps.shape[0]))
        rows = torch.cat([steps["time_idx"].float(), steps["observation"].float().reshape(steps.shape[0], -1),
                          steps["action"].float().reshape(steps.shape[0], -1)], -1)
        out[tid] = tuple(map(tuple, rows.tolist()))
    return out


@pytest.mark.parametrize("steps_per_env", [6, 7])
def test_split_trajs_batches_store_exactly_the_real_steps_in_trial_order(steps_per_env):
    padded, real = collect(True, steps_per_env)
    plain, plain_real = collect(False, steps_per_env)
    assert real == plain_real == 2 * steps_per_env * 6
    assert len(padded) == real  # the probe: 104 stored for 72 real (the padding stored as valid steps)
    assert padded.num_trials() == plain.num_trials() and padded.num_open_trials() == plain.num_open_trials() == 2
    assert sorted(padded.trial_lengths().tolist()) == sorted(plain.trial_lengths().tolist())
    assert set(trials(padded).values()) == set(trials(plain).values())  # the same trials, each in step order
    assert all(row[0] == t for tr in trials(padded).values() for t, row in enumerate(tr))  # time_idx 0, 1, ...
    assert "mask" not in padded.storage[0].get("collector").keys()  # the padding mask is not stored
    s = padded.sample()
    ti = s["time_idx"].squeeze(-1)
    assert bool(((ti == torch.arange(ti.shape[1])) | ~s["mask"]).all())  # no padding sampled as a valid step


def test_padded_rows_are_read_by_their_mask():
    """Hand-built: two rows, the second padded after 2 steps with the id 0 of the first row (as split_trajs pads)."""
    rb = make_sequence_replay(100, 4, 4)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    data = TensorDict({"observation": torch.tensor([[1.0, 2.0, 3.0], [7.0, 8.0, 0.0]]).unsqueeze(-1),
                       ("collector", "traj_ids"): torch.tensor([[0, 0, 0], [5, 5, 0]]),
                       ("collector", "mask"): valid,
                       ("next", "done"): torch.tensor([[False, False, True], [False, False, False]]).unsqueeze(-1)},
                      [2, 3])
    rb.extend(data)
    assert len(rb) == 5 and rb.trial_lengths().tolist() == [3] and rb.num_open_trials() == 1
    assert rb.storage[:5]["observation"].squeeze(-1).tolist() == [1, 2, 3, 7, 8]
    more = TensorDict({"observation": torch.tensor([[9.0, 0.0]]).unsqueeze(-1),
                       ("collector", "traj_ids"): torch.tensor([[5, 0]]),
                       ("collector", "mask"): torch.tensor([[True, False]]),
                       ("next", "done"): torch.tensor([[True, False]]).unsqueeze(-1)}, [1, 2])
    rb.extend(more)  # trajectory 5 continues in the next batch, in another row
    assert rb.trial_lengths().tolist() == [3, 3] and rb.num_open_trials() == 0
    gap = data.clone()
    gap["collector", "mask"] = torch.tensor([[True, False, True], [True, True, True]])
    with pytest.raises(ValueError, match=r"marks row 0 valid again at step 2 after padding"):
        rb.extend(gap)
    by_row = make_sequence_replay(100, 4, 4, traj_key=None)
    with pytest.raises(ValueError, match=r"padded batch .* without trajectory ids"):
        by_row.extend(data)
    bad = data.clone()
    bad["collector", "mask"] = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"must hold flags \(bool or 0/1\), got 0.5 at step \(0, 1\)"):
        rb.extend(bad)
