"""Data flows one way (issue 64, item 5): the sampler owns its windowing, and writes call registered hooks.

Before: with a trial transform the buffer redid the sampler's windowing from its private ``_rng``,
``padded_sampling`` and ``trim`` (and the writer's ``index.physical``); the undo log registers a write hook."""
import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.data import TrialWindowSampler, make_sequence_replay
from torchrl_amago.data.replay_persist import UndoLog


def batch(offset=0.0, n_env=3, steps=12):
    obs = offset + torch.arange(n_env * steps, dtype=torch.float32).reshape(n_env, steps, 1)
    done = torch.rand(n_env, steps, 1, generator=torch.Generator().manual_seed(int(offset))) < 0.25
    return TensorDict({"observation": obs, ("next", "done"): done}, [n_env, steps])


@pytest.mark.parametrize("padded_sampling", ["none", "right"])
@pytest.mark.parametrize("trim", [True, False])
def test_both_sampling_paths_window_through_the_sampler(padded_sampling, trim, monkeypatch):
    """An identity trial transform gives the same batches as no transform, for the same generator, and both paths
    call TrialWindowSampler.windows (the buffer reads no sampler or writer internals)."""
    calls = []
    real = TrialWindowSampler.windows

    def spy(self, lengths):
        calls.append(lengths.clone())
        return real(self, lengths)

    monkeypatch.setattr(TrialWindowSampler, "windows", spy)
    out = []
    for transform in (None, lambda trial: trial):
        rb = make_sequence_replay(200, 6, 8, padded_sampling=padded_sampling, trim=trim, trial_transform=transform,
                                  generator=torch.Generator().manual_seed(4))
        for k in range(4):
            rb.extend(batch(100.0 * k))
        out.append([rb.sample() for _ in range(3)])
    assert len(calls) == 6
    for a, b in zip(*out):
        assert a.batch_size == b.batch_size and (a["observation"] == b["observation"]).all()
        assert (a["mask"] == b["mask"]).all()


def test_windows_follow_the_sampler_settings():
    s = TrialWindowSampler(4, padded_sampling="none", trim=True)
    s._rng = torch.Generator().manual_seed(0)
    starts, offsets, mask = s.windows(torch.tensor([2, 10, 4]))
    assert offsets.shape == (3, 4) and mask.sum(1).tolist() == [2, 4, 4]
    assert starts[0] == 0 and starts[2] == 0 and 0 <= int(starts[1]) <= 6
    assert offsets[0].tolist() == [0, 1, 1, 1]  # past the end: the last step repeats, masked


def test_write_hooks_are_registered_called_in_order_and_removable():
    rb = make_sequence_replay(30, 4, 4)
    seen = []
    h1 = rb.register_write_hook(lambda first, n: seen.append(("a", first, n)))
    rb.register_write_hook(lambda first, n: seen.append(("b", first, n)))
    rb.extend(batch(n_env=2, steps=5))
    rb.extend(batch(n_env=2, steps=5))
    assert seen == [("a", 0, 10), ("b", 0, 10), ("a", 10, 10), ("b", 10, 10)]
    h1.remove()
    rb.extend(batch(n_env=2, steps=5))
    assert seen[-1] == ("b", 20, 10) and len(seen) == 5

    def refuse(first, n):
        raise OSError("disk full")

    rb.register_write_hook(refuse)
    before = rb.storage[:30]["observation"].clone()
    with pytest.raises(OSError, match="disk full"):
        rb.extend(batch(500.0, n_env=2, steps=5))
    assert (rb.storage[:30]["observation"] == before).all()  # a failing hook stops the write before storage


def test_an_undo_log_registers_itself_and_replaces_the_previous_one(tmp_path):
    rb = make_sequence_replay(20, 4, 4, scratch_dir=str(tmp_path / "gen" / "storage"))
    first = UndoLog(rb, tmp_path / "gen").install()
    second = UndoLog(rb, tmp_path / "gen2").install()  # the trainer re-attaches on resume: one log at a time
    rb.extend(batch(n_env=2, steps=10))
    first.protect(20)
    second.protect(20)
    rb.extend(batch(50.0, n_env=2, steps=10))
    assert not first.files() and len(second.files()) == 1
    second.remove()
    second.protect(40)
    rb.extend(batch(90.0, n_env=2, steps=10))
    assert len(second.files()) == 1  # removed: nothing more saved
