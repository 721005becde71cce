"""TorchRL's stock SliceSampler on the sequence replay's storage.

The replay writes every collector batch at once, so a trial of one env is stored as one segment per batch,
interleaved with the other envs' segments. The ground truth is the env itself: ``CountingEnv`` writes a globally
unique ``"trial"`` id and the step since the hard reset ``"step"`` into every observation, so a window is right iff
its ``"trial"`` is constant and its ``"step"`` counts up by one.
"""
import pytest
import torch
from torchrl.data import SliceSampler, SliceSamplerWithoutReplacement, TensorDictReplayBuffer

from tests.data.toy_envs import CountingEnv, collect
from torchrl_amago import keys as K
from torchrl_amago.data import make_sequence_replay

N, T_BATCH, SLICE = 4, 5, 8  # 4 envs, 5 steps per env per collector batch, windows of 8 (> one batch)


@pytest.fixture(scope="module")
def replay():
    batches = collect(lambda: CountingEnv(N, base_len=6), N * T_BATCH, 12)  # trials of 6..21 steps
    rb = make_sequence_replay(10_000, SLICE, 16)
    for d in batches:
        rb.extend(d)
    return rb


def bad_windows(windows):
    """Number of [S, L] windows that mix trials or skip steps (from the env's own trial id and step counter)."""
    trial, step = windows["trial"][..., 0], windows["step"][..., 0]
    return int(((trial != trial[:, :1]).any(1) | (step.diff(dim=1) != 1).any(1)).sum())


def test_trial_keys_are_stored(replay):
    """Every stored step carries its trial's id and its offset in the trial: the sequence replay's own windows
    show them constant / counting up, in step with the env's counters."""
    s = replay.sample()
    tid, step = s[K.TRIAL_ID], s[K.TRIAL_STEP]
    assert tid.shape == step.shape == s.batch_size and tid.dtype == step.dtype == torch.long
    m = s["mask"]
    assert ((tid == tid[:, :1]) | ~m).all()
    assert ((step == step[:, :1] + torch.arange(step.shape[1])) | ~m).all()
    assert torch.equal(step[m], s["step"][..., 0][m])  # the trials start at a hard reset: offset == env step


def test_slice_sampler_on_trial_ids_never_straddles(replay):
    """traj_key on the trial ids (with step_key, fragmented=True) gives windows of consecutive steps of one trial,
    many of them spanning two or more collector batches (non-adjacent storage slots)."""
    assert replay.trial_lengths().max() > 2 * T_BATCH  # trials cross collector batches
    rb = TensorDictReplayBuffer(storage=replay.storage, batch_size=64 * SLICE,
                                sampler=SliceSampler(slice_len=SLICE, traj_key=K.TRIAL_ID, step_key=K.TRIAL_STEP,
                                                     fragmented=True))
    w = rb.sample().reshape(64, SLICE)
    assert bad_windows(w) == 0
    crossing = (w["index"].reshape(64, SLICE).diff(dim=1) != 1).any(1)
    assert crossing.sum() > 16  # most windows of 8 steps cross a 5-step batch boundary
    assert set((w["trial"][:, 0, 0] % 10).tolist()) == set(range(N))  # every env is sampled (trial id = k*10 + env)


def test_slice_sampler_sees_new_writes(replay):
    """The replay tells a SliceSampler that shares its storage about every write (no stale trial table)."""
    batches = collect(lambda: CountingEnv(N, base_len=6, seed=1), N * T_BATCH, 4, seed=1)
    rb = make_sequence_replay(10_000, SLICE, 16)
    L = T_BATCH - 1  # windows that fit in the first batch
    reader = TensorDictReplayBuffer(storage=rb.storage, batch_size=64 * L,
                                    sampler=SliceSampler(slice_len=L, traj_key=K.TRIAL_ID, step_key=K.TRIAL_STEP,
                                                         fragmented=True))
    rb.extend(batches[0])
    assert int(reader.sample()["index"].max()) < N * T_BATCH
    for d in batches[1:]:
        rb.extend(d)
    w = reader.sample().reshape(64, L)
    assert bad_windows(w) == 0 and int(w["index"].max()) >= 3 * N * T_BATCH  # steps of the last batch are read
    assert (w["index"].diff(dim=1) != 1).any(1).sum() > 8  # and windows across batches


@pytest.mark.parametrize("sampler", [
    lambda: SliceSampler(slice_len=SLICE, end_key=("next", "done")),
    lambda: SliceSampler(slice_len=SLICE, traj_key=("collector", "traj_ids")),
    lambda: SliceSampler(slice_len=SLICE, traj_key=K.TRIAL_ID),
    lambda: SliceSampler(slice_len=SLICE),
    lambda: SliceSamplerWithoutReplacement(slice_len=SLICE, end_key=("next", "done")),
])
def test_slice_sampler_by_storage_order_is_refused(replay, sampler):
    """A SliceSampler that finds trials by storage order (end_key, or traj_key without fragmented=True) would
    return windows that straddle trials and envs (end_key) or stop at every collector batch (traj_key): refused,
    and the error names the sampler that works."""
    with pytest.raises(ValueError, match=r"fragmented=True") as err:
        TensorDictReplayBuffer(storage=replay.storage, sampler=sampler(), batch_size=64 * SLICE)
    assert "traj_key=" in str(err.value) and "step_key=" in str(err.value)


def test_end_key_would_straddle(replay):
    """Why end_key is refused: the same stock sampler on a plain copy of the storage (not refused) returns windows
    that straddle trials or envs: every one here, as a window of 8 steps cannot fit in one 5-step segment and the
    next segment in storage belongs to another env."""
    from torchrl.data import LazyTensorStorage

    copy = LazyTensorStorage(replay.storage.max_size)
    copy.set(torch.arange(len(replay.storage)), replay.storage[: len(replay.storage)])
    rb = TensorDictReplayBuffer(storage=copy, sampler=SliceSampler(slice_len=SLICE, end_key=("next", "done")),
                                batch_size=64 * SLICE)
    assert bad_windows(rb.sample().reshape(64, SLICE)) == 64
