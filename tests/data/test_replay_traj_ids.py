"""Sequence replay keyed by the collector's trajectory id: trials of interleaved worker batches stored whole.

The ground truth is the generated stream itself (hand-built worker batches with known trials), or, for a real
``MultiAsyncCollector``, the collected batches regrouped by the env's own trial id.
"""
import functools
import warnings

import pytest
import torch
from tensordict import TensorDict

from tests.data.toy_envs import make_counting_env
from torchrl_amago.data import load_tensors, make_sequence_replay

TRAJ = ("collector", "traj_ids")


def stored_units(rb):
    """Every sampleable unit of ``rb`` read whole through the trial table: a list of [L] TensorDicts."""
    idx = rb.writer.index
    ids, lengths = idx.sampleable()
    if not ids.numel():
        return []
    unit = torch.repeat_interleave(ids, lengths)
    offset = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    return list(rb.storage.get(idx.physical(unit, offset)).split(lengths.tolist()))


def worker_batches(n_env, n_batches, T, gen, next_id, abandon=True):
    """One worker's [n_env, T] batches with trials of 1..14 steps (many span 3+ batches of T=4).

    Every trial has its own trajectory id (a TorchRL collector gives a new id at every reset, unique across
    workers), its own trial id (== its trajectory id here) and a random payload. With ``abandon``, some trials
    end without ``done`` where the next trial's ``is_init`` falls inside a row (a reset in the middle of a
    batch). Returns the batches and the truth: trial id -> (payload [L, 2], finished).
    """
    total = n_batches * T
    cols = {k: torch.zeros(n_env, total, dtype=torch.long) for k in ("trial", "step")}
    init = torch.zeros(n_env, total, dtype=torch.bool)
    done = torch.zeros(n_env, total, dtype=torch.bool)
    value = torch.rand(n_env, total, 2, generator=gen)
    truth = {}
    for e in range(n_env):
        t = 0
        while t < total:
            L = int(torch.randint(1, 15, (1,), generator=gen))
            tid = next_id[0]
            next_id[0] += 1
            end = min(t + L, total)
            cols["trial"][e, t:end] = tid
            cols["step"][e, t:end] = torch.arange(end - t)
            init[e, t] = True
            finished = end == t + L
            if finished:  # abandoned (no done) only when the next trial starts inside a row
                cut = abandon and end % T != 0 and end < total and bool(torch.rand(1, generator=gen) < 0.3)
                done[e, end - 1] = not cut
            truth[tid] = (value[e, t:end], finished)
            t = end
    batches = []
    for b in range(n_batches):
        s = slice(b * T, (b + 1) * T)
        batches.append(TensorDict({
            "trial": cols["trial"][:, s, None], "step": cols["step"][:, s, None], "value": value[:, s],
            "is_init": init[:, s, None], ("next", "done"): done[:, s, None], TRAJ: cols["trial"][:, s],
        }, [n_env, T]))
    return batches, truth


def interleave(order, a, b, gen):
    """The two workers' batches in one arrival order (each worker's own order kept)."""
    if order == "alternate":
        picks = [0, 1] * max(len(a), len(b))
    elif order == "runs":  # runs of 1-4 batches of the same worker
        picks, w = [], 0
        while len(picks) < 2 * (len(a) + len(b)):
            picks += [w] * int(torch.randint(1, 5, (1,), generator=gen))
            w = 1 - w
    else:
        picks = torch.randint(0, 2, (4 * (len(a) + len(b)),), generator=gen).tolist()
    queues, out = [list(a), list(b)], []
    for w in picks:
        if queues[w]:
            out.append(queues[w].pop(0))
    return out + queues[0] + queues[1]


def write_stream(rb, stream):
    """Extend ``rb`` with every batch; returns trial id -> (first gpos, end gpos of the last write holding it)."""
    g, span = 0, {}
    for d in stream:
        rb.extend(d)
        n_env, T = d.batch_size
        pos = g + torch.arange(n_env * T).reshape(n_env, T)
        for tid in d["trial"].unique().tolist():
            first = int(pos[d["trial"][..., 0] == tid].min())
            span[tid] = (min(first, span.get(tid, (first, 0))[0]), g + n_env * T)
        g += n_env * T
    return span


def check_whole(units, truth):
    """Each stored unit is one whole trial of the truth, step for step."""
    for u in units:
        tid = int(u["trial"][0])
        payload, finished = truth[tid]
        assert finished, f"trial {tid} is stored as finished but had not ended"
        assert (u["trial"] == tid).all()
        assert torch.equal(u["step"][:, 0], torch.arange(payload.shape[0])), f"trial {tid} is not whole"
        assert torch.equal(u["value"], payload)
        assert bool(u["is_init"][0])


@pytest.mark.parametrize("order", ["alternate", "runs", "random"])
def test_interleaved_workers_store_whole_trials(order):
    gen = torch.Generator().manual_seed(["alternate", "runs", "random"].index(order))
    next_id = [0]
    a, truth_a = worker_batches(2, 14, 4, gen, next_id)
    b, truth_b = worker_batches(3, 14, 4, gen, next_id)
    truth = {**truth_a, **truth_b}
    C = 140  # 280 steps in all: the buffer wraps twice
    rb = make_sequence_replay(C, 6, 64, padded_sampling="right", generator=torch.Generator().manual_seed(0))
    span = write_stream(rb, interleave(order, a, b, gen))
    W = rb.writer.index.write_count
    assert W == 280
    # test precondition: no trial was still being written when its first step was overwritten
    assert all(end - first <= C for first, end in span.values())
    expected = {t for t, (_, f) in truth.items() if f and span[t][0] >= W - C}
    units = stored_units(rb)
    assert sorted(int(u["trial"][0]) for u in units) == sorted(expected)
    check_whole(units, truth)
    assert any(truth[t][0].shape[0] > 8 for t in expected), "expected trials spanning 3+ batches"
    # windows across segment boundaries read the right physical slots
    for _ in range(5):
        s = rb.sample()
        for r in range(s.batch_size[0]):
            tid, start = int(s["trial"][r, 0, 0]), int(s["step"][r, 0, 0])
            n = int(s["mask"][r].sum())
            assert torch.equal(s["value"][r, :n], truth[tid][0][start:start + n])
            assert n == min(6, truth[tid][0].shape[0] - start)
    # the per-row writer (no trajectory ids) cannot join these trials: the layouts differ (2 vs 3 envs)
    rb_rows = make_sequence_replay(C, 6, 8, traj_key=None)
    with pytest.raises(ValueError, match="envs have trials in progress"):
        for d in interleave("alternate", a, b, gen):
            rb_rows.extend(d.exclude(TRAJ))


def test_snippets_of_interleaved_trials_tile_each_trial():
    gen = torch.Generator().manual_seed(7)
    next_id = [0]
    a, truth_a = worker_batches(2, 8, 4, gen, next_id)
    b, truth_b = worker_batches(2, 8, 4, gen, next_id)
    truth = {**truth_a, **truth_b}
    rb = make_sequence_replay(1000, 4, 8, max_trial_len=5)
    write_stream(rb, interleave("random", a, b, gen))
    pieces = {}
    for u in stored_units(rb):
        assert u.batch_size[0] <= 5 and (u["trial"] == u["trial"][0]).all()
        pieces.setdefault(int(u["trial"][0]), []).append(u)
    for tid, (payload, finished) in truth.items():
        got = sorted(pieces.get(tid, []), key=lambda u: int(u["step"][0]))
        steps = torch.cat([u["step"][:, 0] for u in got]) if got else torch.zeros(0, dtype=torch.long)
        L = payload.shape[0]
        n_stored = L if finished else (L // 5) * 5  # an unfinished trial: only its full snippets are sampleable
        assert torch.equal(steps, torch.arange(n_stored)), tid
        if got:
            assert torch.equal(torch.cat([u["value"] for u in got]), payload[: steps.numel()])


def test_is_init_at_row_start_closes_a_stale_trial_with_the_same_id():
    def batch(step, init, done, tid):
        T = len(step)
        return TensorDict({"trial": torch.tensor(tid).expand(1, T, 1).clone(),
                           "step": torch.tensor(step).reshape(1, T, 1), "value": torch.zeros(1, T, 2),
                           "is_init": torch.tensor(init).reshape(1, T, 1),
                           ("next", "done"): torch.tensor(done).reshape(1, T, 1),
                           TRAJ: torch.full((1, T), 7)}, [1, T])

    rb = make_sequence_replay(100, 3, 4)
    rb.extend(batch([0, 1, 2], [True, False, False], [False] * 3, 1))
    assert rb.num_open_trials() == 1 and rb.num_trials() == 0
    rb.extend(batch([0, 1], [True, False], [False, True], 2))  # id 7 again, after a reset (e.g. a new collector)
    assert rb.trial_lengths().tolist() == [3, 2] and rb.num_open_trials() == 0
    with pytest.raises(ValueError, match="share a trajectory id"):
        rb.extend(torch.cat([batch([0], [True], [False], 3)] * 2, 0))


def test_switching_between_keyed_and_per_row_data_needs_end_trials():
    stream, _ = _half_stream(8)
    rb = make_sequence_replay(1000, 5, 16)
    rb.extend(stream[0])
    with pytest.raises(ValueError, match="without trajectory ids .* call end_trials"):
        rb.extend(stream[1].exclude(TRAJ))
    rb.end_trials()
    rb.extend(stream[1].exclude(TRAJ))  # now per row
    assert rb.writer.index.env_traj is None and rb.num_open_trials() > 0
    with pytest.raises(ValueError, match="with trajectory ids .* call end_trials"):
        rb.extend(stream[2])


def _half_stream(seed):
    gen = torch.Generator().manual_seed(seed)
    next_id = [0]
    a, truth_a = worker_batches(2, 10, 4, gen, next_id)
    b, truth_b = worker_batches(3, 10, 4, gen, next_id)
    return interleave("runs", a, b, gen), {**truth_a, **truth_b}


def test_state_dict_round_trip_keeps_the_open_map(tmp_path):
    stream, truth = _half_stream(3)
    half = len(stream) // 2
    rb = make_sequence_replay(1000, 5, 16, scratch_dir=str(tmp_path / "a"))
    for d in stream[:half]:
        rb.extend(d)
    assert rb.num_open_trials() >= 4, "test needs trials in flight at the checkpoint"
    rb.dumps(tmp_path / "ckpt")
    saved = load_tensors(tmp_path / "ckpt" / "replay_state.pt")["writer"]["index"]
    assert torch.equal(saved["env_traj"], rb.writer.index.env_traj)  # the open map is plain tensors
    assert torch.equal(saved["env_unit"], rb.writer.index.env_unit)
    rb2 = make_sequence_replay(1000, 5, 16, scratch_dir=str(tmp_path / "b"))
    rb2.loads(tmp_path / "ckpt")
    assert rb2.num_open_trials() == rb.num_open_trials()
    for d in stream[half:]:
        rb2.extend(d)
    units = stored_units(rb2)
    assert sorted(int(u["trial"][0]) for u in units) == sorted(t for t, (_, f) in truth.items() if f)
    check_whole(units, truth)  # trials in flight at the checkpoint were joined after loads()


def test_end_trials_closes_trials_keyed_by_trajectory_id():
    stream, truth = _half_stream(4)
    half = len(stream) // 2
    rb = make_sequence_replay(1000, 5, 16)
    for d in stream[:half]:
        rb.extend(d)
    seen = torch.cat([d["trial"].reshape(-1) for d in stream[:half]]).unique().tolist()
    last_step = {}
    for d in stream[:half]:
        for tid, st in zip(d["trial"].reshape(-1).tolist(), d["step"].reshape(-1).tolist()):
            last_step[tid] = st
    in_flight = [t for t in seen if last_step[t] + 1 < truth[t][0].shape[0]]
    assert rb.num_open_trials() == len(in_flight) > 0
    n_before = rb.num_trials()
    assert rb.end_trials() == len(in_flight)
    assert rb.num_open_trials() == 0 and rb.num_trials() == n_before + len(in_flight)
    assert rb.end_trials() == 0
    partial = {int(u["trial"][0]): u for u in stored_units(rb) if int(u["trial"][0]) in in_flight}
    for t in in_flight:  # kept as shorter finished trials: the prefix collected so far
        assert torch.equal(partial[t]["value"], truth[t][0][: last_step[t] + 1])
    # a new collector (ids restart at 0, every env at a hard reset) after end_trials(): whole trials again
    gen = torch.Generator().manual_seed(5)
    next_id = [0]
    a, truth_a = worker_batches(2, 6, 4, gen, next_id)
    for d in a:
        d["trial"] += 10_000
    truth_new = {t + 10_000: v for t, v in truth_a.items()}
    rb_new = make_sequence_replay(1000, 5, 16)
    for d in stream[:half]:
        rb_new.extend(d)
    rb_new.end_trials()
    n_old = rb_new.num_trials()
    for d in a:
        rb_new.extend(d)
    new_units = [u for u in stored_units(rb_new) if int(u["trial"][0]) >= 10_000]
    assert len(new_units) == rb_new.num_trials() - n_old == sum(f for _, f in truth_new.values())
    check_whole(new_units, truth_new)


def test_real_multi_async_collector_stores_only_whole_trials():
    """Two spawned workers with different env counts and trial lengths: every stored trial is whole."""
    from torchrl.collectors import MultiAsyncCollector

    factories = [functools.partial(make_counting_env, 2, 3, 1, 0),
                 functools.partial(make_counting_env, 3, 5, 2, 1_000_000)]
    rb = make_sequence_replay(100_000, 8, 16)
    batches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = MultiAsyncCollector(factories, None, frames_per_batch=12, total_frames=12 * 40)
        try:
            for d in collector:
                batches.append(d.clone())
                rb.extend(d)
        finally:
            collector.shutdown()
    shapes = [tuple(d.batch_size) for d in batches]
    switches = sum(x != y for x, y in zip(shapes, shapes[1:]))
    assert switches >= 5, f"the workers' batches should interleave, got layouts {shapes}"
    # the truth, from the data: every step of every trial, in time order
    flat = torch.cat([d.reshape(-1) for d in batches])
    trial, step = flat["trial"][:, 0], flat["step"][:, 0]
    finished = trial[flat["next", "done"][:, 0]].unique().tolist()
    assert len(finished) >= 20
    units = stored_units(rb)
    assert sorted(int(u["trial"][0]) for u in units) == sorted(finished)  # every finished trial, once
    for u in units:
        tid = int(u["trial"][0])
        mine = flat[trial == tid]
        mine = mine[torch.argsort(mine["step"][:, 0])]
        L = mine.batch_size[0]
        assert torch.equal(mine["step"][:, 0], torch.arange(L))  # the data holds the whole trial
        assert u.batch_size[0] == L and torch.equal(u["step"][:, 0], torch.arange(L))
        assert bool(u["is_init"][0]) and bool(u["next", "done"][-1]) and not u["next", "done"][:-1].any()
        assert torch.equal(u["next", "reward"], mine["next", "reward"])
        assert torch.equal(u["action"], mine["action"])
        assert (u[TRAJ] == u[TRAJ][0]).all()


def test_tables_written_before_trajectory_keys_load():
    """Older trial tables held one open unit and one trajectory id per row (-1 ids: data without ids)."""
    stream, truth = _half_stream(6)
    rb = make_sequence_replay(1000, 5, 16)
    rb.extend(stream[0])
    state = rb.writer.state_dict()
    keys, units = state["index"]["env_traj"], state["index"]["env_unit"]
    assert units.numel() == keys.numel() >= 2
    old = {**state, "index": {**state["index"], "env_traj": keys.flip(0), "env_unit": units.flip(0)}}
    rb2 = make_sequence_replay(1000, 5, 16)
    rb2.writer.load_state_dict(old)  # per-row layout, in another order: the same map once sorted
    assert torch.equal(rb2.writer.index.env_traj, keys) and torch.equal(rb2.writer.index.env_unit, units)
    rows = {**state, "index": {**state["index"], "env_traj": torch.full((3,), -1),
                               "env_unit": torch.tensor([0, -1, 1])}}
    rb3 = make_sequence_replay(1000, 5, 16, traj_key=None)
    rb3.writer.load_state_dict(rows)
    assert rb3.writer.index.env_traj is None and rb3.num_open_trials() == 2
    with pytest.raises(ValueError, match="trials written without them are in progress"):
        rb4 = make_sequence_replay(1000, 5, 16)
        rb4.writer.load_state_dict(rows)
        rb4.extend(stream[1])


def test_sampling_while_another_thread_extends():
    """An async trainer extends the replay from a feed thread while the learner samples: every window drawn
    meanwhile is consecutive steps of one finished trial, and the final table holds every trial whole."""
    import threading

    gen = torch.Generator().manual_seed(11)
    next_id = [0]
    a, truth_a = worker_batches(3, 30, 4, gen, next_id)
    b, truth_b = worker_batches(3, 30, 4, gen, next_id)
    truth = {**truth_a, **truth_b}
    stream = interleave("random", a, b, gen)
    rb = make_sequence_replay(100_000, 6, 32, padded_sampling="right")
    rb.extend(stream[0])
    while rb.num_trials() == 0:
        rb.extend(stream.pop(1))
    errors = []

    def feed():
        try:
            for d in stream[1:]:
                rb.extend(d)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=feed)
    thread.start()
    n_samples = 0
    while thread.is_alive() or n_samples < 5:
        s = rb.sample()
        for r in range(s.batch_size[0]):
            tid, start, n = int(s["trial"][r, 0, 0]), int(s["step"][r, 0, 0]), int(s["mask"][r].sum())
            assert truth[tid][1] and torch.equal(s["value"][r, :n], truth[tid][0][start:start + n])
        n_samples += 1
    thread.join()
    assert not errors, errors
    units = stored_units(rb)
    assert sorted(int(u["trial"][0]) for u in units) == sorted(t for t, (_, f) in truth.items() if f)
    check_whole(units, truth)
