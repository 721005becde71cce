"""Batches as long as their longest trial: the sampler trims [B, T] windows to the longest valid one."""
import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.data import MixedReplay, load_offline_trials, make_sequence_replay
from torchrl_amago.data.sampler import window_offsets


def _buffer(lengths, seq_len, trim=True, padded="none", value=0.0):
    rb = make_sequence_replay(1000, seq_len, 64, trim=trim, padded_sampling=padded,
                              generator=torch.Generator().manual_seed(0))
    trials = [TensorDict({"x": torch.full((L, 1), value), "step": torch.arange(L)[:, None],
                          ("next", "done"): (torch.arange(L) == L - 1)[:, None]}, [L]) for L in lengths]
    load_offline_trials(rb, trials)
    return rb


def test_window_offsets_trim_hand_computed():
    lengths, starts = torch.tensor([3, 5, 9]), torch.tensor([0, 0, 6])
    offsets, mask = window_offsets(lengths, starts, 10, trim=True)
    # valid steps per row: 3, 5, 3 -> T = 5; offsets clamp to each trial's last step
    assert offsets.tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 3, 4], [6, 7, 8, 8, 8]]
    assert mask.sum(1).tolist() == [3, 5, 3] and mask.shape == (3, 5)
    full_offsets, full_mask = window_offsets(lengths, starts, 10)
    assert full_mask.shape == (3, 10) and torch.equal(full_offsets[:, :5], offsets)
    assert not full_mask[:, 5:].any()  # what trimming drops is padding only
    # a trial longer than seq_len keeps T = seq_len
    assert window_offsets(torch.tensor([40]), torch.tensor([3]), 10, trim=True)[0].shape == (1, 10)


@pytest.mark.parametrize("padded", ["none", "right"])
def test_sample_is_trimmed_to_the_longest_valid_window(padded):
    rb = _buffer([3, 5], seq_len=10, padded=padded)
    for _ in range(5):
        s = rb.sample()
        n_valid = s["mask"].sum(1)
        assert s.batch_size == torch.Size([64, int(n_valid.max())])  # no all-padding column
        assert s["mask"][:, 0].all() and s["mask"].any(0).all()
        for b in range(64):  # still consecutive steps of one trial, mask a prefix
            n = int(n_valid[b])
            assert torch.equal(s["step"][b, :n, 0], s["step"][b, 0, 0] + torch.arange(n))
            assert not s["mask"][b, n:].any()
    assert int(rb.sample()["mask"].sum(1).max()) <= 5
    fixed = _buffer([3, 5], seq_len=10, trim=False, padded=padded).sample()
    assert fixed.batch_size == torch.Size([64, 10])  # trim=False: always seq_len (fixed shapes)


def test_long_trials_keep_seq_len():
    s = _buffer([30, 4], seq_len=10).sample()
    assert s.batch_size == torch.Size([64, 10])


def test_mixed_replay_pads_sources_of_different_lengths():
    short, long_ = _buffer([2], 10, value=0.0), _buffer([7], 10, value=1.0)
    mixed = MixedReplay([short, long_], [0.5, 0.5], batch_size=200, generator=torch.Generator().manual_seed(0))
    s = mixed.sample()
    assert s.batch_size == torch.Size([200, 7])
    from_short = s["x"][:, 0, 0] == 0
    assert 0 < int(from_short.sum()) < 200
    assert (s["mask"][from_short].sum(1) == 2).all() and (s["mask"][~from_short].sum(1) == 7).all()
    # padding repeats the last valid step (the replay's own convention)
    assert (s["step"][from_short][:, 2:, 0] == 1).all()
