"""HindsightRelabel as a stock replay-buffer transform: a batch of several slices (TorchRL's SliceSampler, flat
``[num_slices * slice_len]``) or of windows (``[B, T]``) is relabeled slice by slice, keeps its shape, and masks the
steps after a relabeled terminal (TorchRL's ``("collector", "mask")``, and ``"mask"`` where present). It used to treat
the whole batch as one trial and cut it (48 -> 37 steps).

Ground truth: the env itself, replayed from the trial's start with the relabeled goals and the window's actions.
A slice that does not start at a trial start (``time_idx`` != 0; SliceSampler marks every slice start ``is_init``)
cannot be relabeled from its first goal and must come back unchanged.
"""
import pytest
import torch
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

from tests.data.test_relabel import replay_env, whole_trials
from torchrl_amago import keys as K
from torchrl_amago.data import HindsightRelabel, make_sequence_replay

SLICES, SLICE_LEN = 4, 12
# what relabeling may change (SliceSampler itself rewrites is_init, ("next", "truncated") and ("next", "done"))
RELABELED = ("goals", ("next", "goals"), ("next", "reward"), "prev_reward", ("next", "prev_reward"),
             ("next", "terminated"), "action")


def with_time(trials):
    for tr in trials:
        L = tr.batch_size[0]
        tr["time_idx"] = torch.arange(L).unsqueeze(-1)
        tr["next", "time_idx"] = torch.arange(1, L + 1).unsqueeze(-1)
    return trials


def check_slice(new, old, valid):
    """`new`: one slice after the transform, `old`: the same steps as stored, `valid`: its mask."""
    if int(old["time_idx"][0]) != 0:  # mid-trial: left as it was
        assert valid.all() and (new.select(*RELABELED) == old.select(*RELABELED)).all()
        return False
    n = int(valid.sum())
    assert torch.equal(valid, torch.arange(valid.numel()) < n)  # valid steps are a prefix (cut after a terminal)
    env = replay_env(new["goals"][0], new["action"][:n])
    assert torch.equal(new["next", "reward"][:n], env["next", "reward"])
    assert torch.equal(new["goals"][:n], env["goals"]) and torch.equal(new["next", "goals"][:n], env["next", "goals"])
    assert torch.equal(new["next", "terminated"][:n], env["next", "terminated"])
    assert not env["next", "terminated"][:n - 1].any()
    assert torch.equal(new["action"], old["action"])  # actions and positions are untouched
    return True


def slice_buffer(flat, truncated_key=None):
    """TorchRL's TensorDictReplayBuffer with a SliceSampler and HindsightRelabel as its transform. The buffer writes
    the sampler's truncated / done / terminated after the transform, over relabeled terminals, unless the sampler
    has truncated_key=None (docs/api/data.md)."""
    gen = torch.Generator().manual_seed(0)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(flat.batch_size[0]), batch_size=SLICES * SLICE_LEN,
                                sampler=SliceSampler(num_slices=SLICES, end_key=("next", "done"),
                                                     truncated_key=truncated_key),
                                transform=HindsightRelabel(strategy="all", generator=gen))
    rb.extend(flat)
    return rb


def test_stock_slice_batch_is_relabeled_slice_by_slice():
    flat = torch.cat(with_time(whole_trials()), 0)
    rb = slice_buffer(flat)
    torch.manual_seed(0)
    relabeled = cut = 0
    for _ in range(40):  # slices of 12 in trials of mostly 20 steps: about 1 in 9 starts a trial
        s = rb.sample()
        assert s.batch_size == torch.Size([SLICES * SLICE_LEN])  # not one trial cut short
        stored = flat[s["index"].reshape(-1)].reshape(SLICES, SLICE_LEN)
        s = s.reshape(SLICES, SLICE_LEN)
        for i in range(SLICES):
            valid = s[K.TORCHRL_MASK][i].reshape(-1)
            relabeled += check_slice(s[i], stored[i], valid)
            cut += int((~valid).sum()) > 0
    assert relabeled >= 5 and cut >= 2  # the test saw trial starts relabeled and trials cut at a new terminal


def test_sampler_truncation_keys_overwrite_relabeled_terminals():
    """Why the recipe sets truncated_key=None: with TorchRL's default, the buffer writes the stored terminated flags
    back after the transform, so a relabeled terminal (the last valid step of a cut slice) reads False again."""
    flat = torch.cat(with_time(whole_trials()), 0)
    rb = slice_buffer(flat, truncated_key=("next", "truncated"))
    torch.manual_seed(0)
    lost = 0
    for _ in range(10):
        s = rb.sample().reshape(SLICES, SLICE_LEN)
        valid = s[K.TORCHRL_MASK].reshape(SLICES, SLICE_LEN)
        for i in range(SLICES):
            n = int(valid[i].sum())
            lost += n < SLICE_LEN and not bool(s["next", "terminated"][i, n - 1])
    assert lost >= 2


def test_window_batch_keeps_its_shape_and_both_masks():
    """The sequence replay's own sample-time transform: [B, T] windows, each relabeled from its trial start."""
    trials = with_time(whole_trials())
    T = 16  # windows of trials of mostly 20 steps: about 1 in 5 starts at the trial's start
    rb = make_sequence_replay(10_000, T, 32, transform=HindsightRelabel(
        strategy="all", generator=torch.Generator().manual_seed(0)), generator=torch.Generator().manual_seed(1))
    rb.extend_trials(torch.cat(trials, 0), torch.tensor([t.batch_size[0] for t in trials]))
    plain = make_sequence_replay(10_000, T, 32, generator=torch.Generator().manual_seed(1))
    plain.extend_trials(torch.cat(trials, 0), torch.tensor([t.batch_size[0] for t in trials]))
    s, ref = rb.sample(), plain.sample()  # the same windows, before and after the transform
    assert s.batch_size == ref.batch_size and torch.equal(s[K.TORCHRL_MASK], s["mask"])
    assert (s["mask"] <= ref["mask"]).all()  # only ever masks more
    relabeled = sum(check_slice(s[b], ref[b], s["mask"][b]) if ref["mask"][b].all() or
                    int(ref["time_idx"][b, 0]) == 0 else 0 for b in range(32))
    assert relabeled >= 3


def test_several_slices_without_time_idx_is_an_error():
    """Without time_idx a slice start (marked is_init by SliceSampler) cannot be told from a trial start."""
    flat = torch.cat(whole_trials()[:6], 0)
    two = torch.cat([flat[:10], flat[3:13]], 0)
    two["is_init"][10] = True
    with pytest.raises(ValueError, match="time_idx"):
        HindsightRelabel(strategy="all")(two)
