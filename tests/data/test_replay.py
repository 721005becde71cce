"""Sequence replay: windows of one trial, mask, FIFO, snippets, memmap on disk, checkpoint round trip."""
import os

import pytest
import torch
from tensordict import MemoryMappedTensor, TensorDict

from tests.data.toy_envs import CountingEnv, collect
from torchrl_amago.data import make_sequence_replay, plan_pieces


def trials_of(batches):
    """Ground truth: trial id -> (steps [L] TensorDict, finished?) from collector batches [N, T]."""
    full = torch.cat([b if b.batch_dims == 2 else b.unsqueeze(0) for b in batches], 1)
    out = {}
    for row in full.unbind(0):
        ids = row["trial"].reshape(-1)
        for tid in ids.unique().tolist():
            steps = row[ids == tid]
            out[tid] = (steps, bool(steps["next", "done"][-1]))
    return out


def check_windows(s, truth, T):
    """Every valid row step equals the trial's step start+j; mask is False exactly past the trial's end."""
    for b in range(s.batch_size[0]):
        tid = int(s["trial"][b, 0])
        steps, finished = truth[tid]
        assert finished, "an unfinished trial was sampled"
        L = steps.batch_size[0]
        start = int(s["step"][b, 0])  # step counter == offset in the trial (trials start at step 0)
        expect_mask = torch.arange(start, start + T) < L
        assert torch.equal(s["mask"][b], expect_mask)
        n = int(expect_mask.sum())
        assert (s["trial"][b, :n] == tid).all()
        assert torch.equal(s["step"][b, :n, 0], torch.arange(start, start + n))
        assert torch.equal(s["next", "step"][b, :n, 0], torch.arange(start + 1, start + n + 1))
        assert torch.equal(s["next", "reward"][b, :n], steps["next", "reward"][start:start + n])
        assert torch.equal(s["collector", "traj_ids"][b, :n], steps["collector", "traj_ids"][start:start + n])
        assert torch.equal(s["is_init"][b, :n, 0], torch.arange(start, start + n) == 0)


@pytest.mark.parametrize("padded", ["none", "right"])
def test_windows_are_consecutive_steps_of_one_trial(padded):
    batches = collect(lambda: CountingEnv(3, base_len=4), 24, 12)  # [3, 8] batches, trials of 4..17 steps
    truth = trials_of(batches)
    T = 10  # longer than some trials -> padding in both modes
    rb = make_sequence_replay(10_000, T, 64, padded_sampling=padded, generator=torch.Generator().manual_seed(0))
    for d in batches:
        rb.extend(d)
    finished = sorted(t for t, (_, f) in truth.items() if f)
    assert rb.num_trials() == len(finished)
    assert sorted(rb.trial_lengths().tolist()) == sorted(truth[t][0].batch_size[0] for t in finished)
    assert len(rb) == sum(d.numel() for d in batches)
    seen = set()
    for _ in range(10):
        s = rb.sample()
        assert s.batch_size == torch.Size([64, T]) and s["mask"].dtype == torch.bool
        check_windows(s, truth, T)
        seen |= set(s["trial"][:, 0, 0].tolist())
    assert seen == set(finished)
    assert not s["mask"].all(), "expected some padding with trials shorter than T"


def test_unbatched_collector_output():
    batches = collect(lambda: CountingEnv(None, base_len=3), 7, 10)  # [7] batches
    assert batches[0].batch_dims == 1
    truth = trials_of(batches)
    rb = make_sequence_replay(1000, 4, 32)
    for d in batches:
        rb.extend(d)
    assert rb.num_trials() == sum(f for _, f in truth.values())
    check_windows(rb.sample(), truth, 4)


def test_plan_pieces_hand_computed():
    # env0 continues open unit 5 (length 2) and ends at t=1; env1 has no open unit and is_init at t=2
    done = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    init = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    p = plan_pieces(done, init, torch.tensor([5, -1]), torch.tensor([2, 0]), None)
    assert p["pos"].tolist() == [0, 2, 4, 6]
    assert p["length"].tolist() == [2, 2, 2, 2]
    assert p["is_new"].tolist() == [False, True, True, True]
    assert p["ends_done"].tolist() == [True, False, False, False]
    assert p["cut"].tolist() == [True, False, True, False]
    assert p["closes_open"].tolist() == [False, False]
    # snippets of 3: open unit of length 2 gets 1 more step, then a new unit every 3 steps
    p = plan_pieces(torch.zeros(1, 7, dtype=torch.bool), None, torch.tensor([5]), torch.tensor([2]), 3)
    assert p["pos"].tolist() == [0, 1, 4] and p["length"].tolist() == [1, 3, 3]
    assert p["is_new"].tolist() == [False, True, True]


def manual_batch(trial, step, done, init):
    n, t = len(trial), len(trial[0])
    f = lambda x, dt: torch.tensor(x, dtype=dt).reshape(n, t, 1)  # noqa: E731
    return TensorDict({"trial": f(trial, torch.long), "step": f(step, torch.long), "is_init": f(init, torch.bool),
                       ("next", "done"): f(done, torch.bool), ("next", "step"): f(step, torch.long) + 1},
                      [n, t])


def test_is_init_without_done_starts_a_new_trial():
    rb = make_sequence_replay(100, 3, 8)
    rb.extend(manual_batch([[1, 1, 1, 2]], [[0, 1, 2, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 1]]))
    assert rb.trial_lengths().tolist() == [3]  # trial 1 was closed by the reset at t=3
    rb.extend(manual_batch([[2, 2]], [[1, 2]], [[0, 1]], [[0, 0]]))
    assert rb.trial_lengths().tolist() == [3, 3]  # trial 2 spans both batches
    s = rb.sample()
    for b in range(8):
        assert (s["trial"][b] == s["trial"][b, 0]).all() and (s["step"][b, :, 0] == torch.arange(3)).all()


def test_fifo_eviction_by_timesteps():
    rb = make_sequence_replay(10, 2, 16)
    # one env; trials (ids 0..): lengths 4, 3, 5, then 4 -> total 16 > capacity 10
    lens = [4, 3, 5, 4]
    trial = sum(([i] * L for i, L in enumerate(lens)), [])
    step = sum((list(range(L)) for L in lens), [])
    done = sum(([0] * (L - 1) + [1] for L in lens), [])
    init = sum(([1] + [0] * (L - 1) for L in lens), [])
    rb.extend(manual_batch([trial[:7]], [step[:7]], [done[:7]], [init[:7]]))
    assert rb.trial_lengths().tolist() == [4, 3]
    rb.extend(manual_batch([trial[7:12]], [step[7:12]], [done[7:12]], [init[7:12]]))  # 12 steps written
    assert rb.trial_lengths().tolist() == [3, 5]  # trial 0 (steps 0-3) partly overwritten -> dropped
    rb.extend(manual_batch([trial[12:14]], [step[12:14]], [done[12:14]], [init[12:14]]))  # 14 written
    assert rb.trial_lengths().tolist() == [3, 5]  # steps 4.. are all still stored
    rb.extend(manual_batch([trial[14:15]], [step[14:15]], [done[14:15]], [init[14:15]]))  # 15 written
    assert rb.trial_lengths().tolist() == [5]  # trial 1 (steps 4-6) lost step 4; trial 3 in progress
    for _ in range(5):
        assert (rb.sample()["trial"] == 2).all()
    rb.extend(manual_batch([trial[15:]], [step[15:]], [done[15:]], [init[15:]]))  # 16 written
    assert rb.trial_lengths().tolist() == [5, 4]
    assert len(rb) == 10


def test_long_trials_become_snippets_with_global_step():
    # env trials of 8..17 steps, snippets of at most 5
    batches = collect(lambda: CountingEnv(2, base_len=8), 10, 20)
    truth = trials_of(batches)
    rb = make_sequence_replay(10_000, 3, 256, max_trial_len=5)
    for d in batches:
        rb.extend(d)
    expect = []
    for steps, fin in truth.values():
        L = steps.batch_size[0]
        full, rest = divmod(L, 5)
        expect += [5] * full + ([rest] if (rest and fin) else [])
    assert sorted(rb.trial_lengths().tolist()) == sorted(expect)
    s = rb.sample()
    first = s["step"][:, 0, 0]
    assert set((first % 5).tolist()) <= {0, 1, 2}  # a window of 3 never crosses a multiple of 5
    m = s["mask"]
    assert ((s["step"][:, :, 0] // 5)[m] == (first // 5)[:, None].expand_as(m)[m]).all()
    assert (first >= 5).any(), "time_idx-like counters stay trial-global in later snippets"


def test_memmap_on_disk_larger_than_ram_budget(tmp_path):
    budget = 4 * 2**20  # a 4 MiB "RAM budget"
    cap, dim = 8192, 256  # observation + next observation: 2 x 8 MiB on disk
    rb = make_sequence_replay(cap, 16, 8, scratch_dir=str(tmp_path))
    for i in range(8):  # 8 batches of [4 envs, 256 steps], written with no copy kept around
        n, t = 4, 256
        step = (torch.arange(t) + i * t).expand(n, t)
        done = (torch.arange(t) % 64 == 63).expand(n, t)
        td = TensorDict({"observation": torch.randn(n, t, dim), ("next", "observation"): torch.randn(n, t, dim),
                         "step": step[..., None], ("next", "done"): done[..., None]}, [n, t])
        rb.extend(td)
        del td
    obs = rb.storage._storage["observation"]
    assert isinstance(obs, MemoryMappedTensor) and isinstance(rb.storage._storage["next", "observation"],
                                                              MemoryMappedTensor)
    assert obs.filename is not None and obs.filename.startswith(str(tmp_path))
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(tmp_path) for f in fs)
    assert on_disk > 4 * budget
    assert rb.num_trials() == 8 * 4 * 4
    s = rb.sample()
    assert s.batch_size == torch.Size([8, 16]) and s["mask"].all()
    assert isinstance(s["observation"], torch.Tensor) and not isinstance(s["observation"], MemoryMappedTensor)
    assert (s["step"][:, :, 0].diff(dim=1) == 1).all()


def test_one_storage_read_per_sample():
    batches = collect(lambda: CountingEnv(3), 24, 6)
    rb = make_sequence_replay(1000, 6, 24)
    for d in batches:
        rb.extend(d)
    calls = []
    get = rb.storage.get
    rb.storage.get = lambda index: calls.append(tuple(index.shape)) or get(index)
    rb.sample()
    assert calls == [(24, 6)]  # one vectorised gather with a [B, T] index


def test_dumps_loads_round_trip_with_in_progress_trials(tmp_path):
    batches = collect(lambda: CountingEnv(3, base_len=5), 30, 8)
    first, rest = batches[:5], batches[5:]
    kw = dict(padded_sampling="right")
    rb = make_sequence_replay(500, 6, 16, scratch_dir=str(tmp_path / "a"),
                              generator=torch.Generator().manual_seed(3), **kw)
    for d in first:
        rb.extend(d)
    assert (rb.writer.index.env_unit >= 0).any(), "test needs trials in progress at the checkpoint"
    rb.dumps(tmp_path / "ckpt")
    rb2 = make_sequence_replay(500, 6, 16, scratch_dir=str(tmp_path / "b"),
                               generator=torch.Generator().manual_seed(99), **kw)
    rb2.loads(tmp_path / "ckpt")
    assert len(rb2) == len(rb) and rb2.num_trials() == rb.num_trials()
    assert (rb2.storage[: len(rb2)] == rb.storage[: len(rb)]).all()
    a, b = rb.writer.state_dict()["index"], rb2.writer.state_dict()["index"]
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    assert (rb.sample() == rb2.sample()).all()  # the RNG state was restored too
    for d in rest:  # resume collection: in-progress trials continue in both buffers identically
        rb.extend(d)
        rb2.extend(d)
    truth = trials_of(batches)
    assert rb2.num_trials() == sum(f for _, f in truth.values())
    torch.manual_seed(0)
    rb2.set_rng(torch.Generator().manual_seed(5))
    rb.set_rng(torch.Generator().manual_seed(5))
    s1, s2 = rb.sample(), rb2.sample()
    assert (s1 == s2).all()
    check_windows(s2, truth, 6)


def trial_steps(lengths):
    """One env, trials of the given lengths, as one [1, sum] batch with trial ids 0.."""
    trial = sum(([i] * L for i, L in enumerate(lengths)), [])
    step = sum((list(range(L)) for L in lengths), [])
    done = sum(([0] * (L - 1) + [1] for L in lengths), [])
    init = sum(([1] + [0] * (L - 1) for L in lengths), [])
    return manual_batch([trial], [step], [done], [init])


@pytest.mark.parametrize("sampling", ["trial", "timestep"])
def test_trial_choice_frequencies(sampling):
    lengths = [4, 8, 16, 32]
    rb = make_sequence_replay(1000, 4, 4000, sampling=sampling, generator=torch.Generator().manual_seed(1))
    rb.extend(trial_steps(lengths))
    n = 20_000
    counts = torch.cat([rb.sample()["trial"][:, 0, 0] for _ in range(n // 4000)]).bincount(minlength=4).double()
    w = torch.ones(4) if sampling == "trial" else torch.tensor(lengths, dtype=torch.float64)
    p = w / w.sum()
    chi2 = (((counts - n * p) ** 2) / (n * p)).sum()
    assert chi2 < 16.3  # chi-square, 3 dof, p = 0.001
    other = torch.tensor(lengths, dtype=torch.float64) if sampling == "trial" else torch.ones(4)
    q = other / other.sum()
    assert (((counts - n * q) ** 2) / (n * q)).sum() > 100  # and it is not the other distribution


@pytest.mark.parametrize("padded", ["none", "right"])
def test_window_start_distribution(padded):
    L, T = 12, 5
    rb = make_sequence_replay(100, T, 6000, padded_sampling=padded, generator=torch.Generator().manual_seed(2))
    rb.extend(trial_steps([L]))
    s = rb.sample()
    starts = s["step"][:, 0, 0]
    k = L - T + 1 if padded == "none" else L
    counts = starts.bincount(minlength=L).double()
    assert counts[k:].sum() == 0 and (counts[:k] > 0).all()
    exp = 6000 / k
    assert (((counts[:k] - exp) ** 2) / exp).sum() < 33  # chi-square, <= 11 dof, p = 0.0005
    assert torch.equal(s["mask"].sum(1), (L - starts).clamp(max=T))


def test_bad_input_errors():
    rb = make_sequence_replay(20, 4, 8)
    with pytest.raises(ValueError, match="next.*done"):
        rb.extend(TensorDict({"x": torch.zeros(2, 3)}, [2, 3]))
    with pytest.raises(ValueError, match="exceeds capacity_steps"):
        rb.extend(manual_batch([[0] * 21], [list(range(21))], [[0] * 21], [[0] * 21]))
    rb.extend(manual_batch([[0, 0], [1, 1]], [[0, 1], [0, 1]], [[0, 0], [0, 0]], [[1, 0], [1, 0]]))
    with pytest.raises(ValueError, match="3 envs"):
        rb.extend(manual_batch([[0], [1], [2]], [[2], [2], [0]], [[0], [0], [0]], [[0], [0], [1]]))
    with pytest.raises(RuntimeError, match="no finished trial"):
        rb.sample()
    rb.end_trials()
    assert rb.trial_lengths().tolist() == [2, 2]
    with pytest.raises(ValueError, match="sampling"):
        make_sequence_replay(10, 2, 2, sampling="episode")
    with pytest.raises(ValueError, match="padded_sampling"):
        make_sequence_replay(10, 2, 2, padded_sampling="both")


def test_checkpoint_of_empty_buffer_and_restore_to_temp_dir(tmp_path):
    rb = make_sequence_replay(100, 3, 4)
    rb.dumps(tmp_path / "empty")
    rb2 = make_sequence_replay(100, 3, 4)
    rb2.loads(tmp_path / "empty")
    assert len(rb2) == 0 and rb2.num_trials() == 0
    rb.extend(trial_steps([3, 4]))
    rb.dumps(tmp_path / "full")
    rb3 = make_sequence_replay(100, 3, 4)  # scratch_dir=None: a temp folder, so the restored data is on disk
    rb3.loads(tmp_path / "full")
    assert rb3.trial_lengths().tolist() == [3, 4]
    assert rb3.storage._storage["step"].filename is not None
    with pytest.raises(ValueError, match="capacity_steps"):
        make_sequence_replay(50, 3, 4).loads(tmp_path / "full")


def test_alternating_collector_workers_never_mix_trials():
    """An async multi-worker collector yields [N, T] batches from different envs in turn: the collector's
    trajectory ids join each worker's trial across the other worker's batches (never to another's trial)."""
    wa = collect(lambda: CountingEnv(2, base_len=6, seed=1), 8, 6, seed=1)
    wb = collect(lambda: CountingEnv(2, base_len=6, seed=2), 8, 6, seed=2)
    for d in wb:  # distinct trajectory ids and trial ids per worker, as a multi-worker collector provides
        d["collector", "traj_ids"] += 1000
        d["trial"] += 100_000
        d["next", "trial"] += 100_000
    rb = make_sequence_replay(1000, 3, 256)
    for a, b in zip(wa, wb):
        rb.extend(a)
        rb.extend(b)
    s = rb.sample()
    m = s["mask"]
    assert ((s["trial"][..., 0] == s["trial"][:, :1, 0]) | ~m).all()
    assert ((s["step"][:, 1:, 0] - s["step"][:, :-1, 0] == 1) | ~m[:, 1:]).all()
    truth = {**trials_of(wa), **trials_of(wb)}
    assert sorted(rb.trial_lengths().tolist()) == sorted(st.batch_size[0] for st, f in truth.values() if f)
    rb2 = make_sequence_replay(1000, 3, 8, traj_key=None)  # without ids the layout change is only caught by N
    rb2.extend(wa[0])
    with pytest.raises(ValueError, match="envs have trials in progress"):
        rb2.extend(collect(lambda: CountingEnv(3), 9, 1)[0].exclude(("collector", "traj_ids")))
    n_open = int((rb.writer.index.env_unit >= 0).sum())
    assert n_open == rb.num_open_trials() == 4  # one per env of both workers
    before = rb.num_trials()
    rb.end_trials()  # a new collector restarts its ids at 0: close the old trials first
    assert rb.num_trials() == before + n_open and rb.num_open_trials() == 0
    rb.extend(collect(lambda: CountingEnv(3, seed=5), 9, 1)[0])
    assert rb.num_open_trials() == 3


def test_first_write_logs_no_torchrl_info_line_and_keeps_its_warnings():
    """TorchRL logs "Initialized LazyMemmapStorage with ... shape" (INFO, coloured, on stdout) when a storage first
    allocates: every run printed it. The replay's storage allocates without it; the torchrl logger keeps its level,
    so TorchRL's warnings still show."""
    import logging

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    seen, torchrl_log, handler = [], logging.getLogger("torchrl"), Keep()
    level = torchrl_log.level
    torchrl_log.addHandler(handler)
    try:
        rb = make_sequence_replay(1000, 4, 2)
        for d in collect(lambda: CountingEnv(2, base_len=3), 2 * 4, 2):
            rb.extend(d)
        assert len(rb) == 16 and not any("Initialized" in m for m in seen), seen
        assert torchrl_log.level == level
        torchrl_log.warning("a TorchRL warning")
        assert seen[-1:] == ["a TorchRL warning"]
    finally:
        torchrl_log.removeHandler(handler)
