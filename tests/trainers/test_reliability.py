"""Reliability: nothing executed, nothing poisoned, nothing lost (issue 14).

Each test is one hostile input or fault. A case passes only with a clear error naming the flag / key / file,
or with a run whose stored data and counters are exactly what the last durable checkpoint holds.
"""
import os
import pickle

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import Transform

from tests.payloads import Marker
from torchrl_amago.data import make_sequence_replay
from torchrl_amago.data.offline import load_offline_trials
from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, TrainConfig
from torchrl_amago.trainers.run import checkpoint as ckpt_mod
from torchrl_amago.trainers.run.checkpoint import FORMAT, load_checkpoint
from torchrl_amago.trainers.run.guards import NonFiniteError, nonfinite_keys
from torchrl_amago.trainers.run.resume_config import SAFE_ON_RESUME

H = 3  # T-Maze corridor: trials of H + 1 steps


def cfg_(tmp_path, **kw):
    base = dict(run_name="r", buffer_dir=str(tmp_path), epochs=20, timesteps_per_epoch=H + 1, grads_per_epoch=1,
                parallel_envs=2, eval_interval=0, max_seq_len=H + 1, batch_size=2, memory_size=8, memory_layers=1,
                n_heads=1, tstep_hidden=8, tstep_out=8, actor_hidden=8, critic_hidden=8, dset_max_size=400,
                progress_bar=False, ckpt_interval=0, lr_warmup_steps=2, eps_steps_anneal=100, min_trials_to_learn=1,
                num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def env_(n):
    return make_amago_env(TMaze(n, corridor_length=H, passive=True, penalty=-0.1))


def trainer(tmp_path, make_env=env_, **kw):
    return AMAGOTrainer(cfg_(tmp_path, **kw), make_env, None)


def run_dir(tmp_path):
    return tmp_path / "r"


class Killed(Exception):
    """Stands for a SIGKILL: the trainer object is abandoned, only what is on disk survives."""


def snapshot(tr):
    """What a checkpoint of `tr` must reproduce: counters, table, and the stored rows of every live trial."""
    idx = tr.replay._writer.index
    units, lengths = idx.sampleable()
    rows = {}
    for u, n in zip(units.tolist(), lengths.tolist()):
        slots = idx.physical(torch.full((n,), u), torch.arange(n))
        rows[u] = tr.replay.storage[slots].clone()
    return {"counters": (tr.epoch, tr.env_steps, tr.grad_steps), "write_count": idx.write_count,
            "units": units.clone(), "rows": rows}


def assert_same_replay(got, want, allow_dropped=None):
    assert got["counters"] == want["counters"]
    assert got["write_count"] == want["write_count"]
    expected = set(want["units"].tolist()) - set(allow_dropped or ())
    assert set(got["units"].tolist()) == expected
    for u in expected:
        assert (got["rows"][u] == want["rows"][u]).all(), f"unit {u} changed"


def resume_fresh(tmp_path, **kw):
    tr = trainer(tmp_path, **kw)
    assert tr.resume()
    return tr


# ---------------------------------------------------------------- 1. no load path runs code
def test_payload_in_every_file_of_a_run_dir_never_runs(tmp_path):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    tr.close()
    files = [os.path.join(d, f) for d, _, fs in os.walk(run_dir(tmp_path)) for f in fs if not f.endswith(".memmap")]
    assert any(f.endswith("latest.pt") for f in files) and any(f.endswith("metrics.csv") for f in files)
    read_at_resume = {"latest.pt", "metrics.csv", "run.json", "commits.json"}  # + undo files: the wrap-around test
    tried = named = 0
    for f in files:
        with open(f, "rb") as fh:
            original = fh.read()
        marker = tmp_path / "ran"
        if f.endswith(".pt"):
            torch.save({"format": FORMAT, "loss": Marker(marker)}, f)
        else:
            with open(f, "wb") as fh:
                pickle.dump(Marker(marker), fh)
        t = None
        try:
            t = trainer(tmp_path)  # the metrics CSV is read here
            t.resume()
            assert os.path.basename(f) not in read_at_resume, f"{f} was read without an error"
        except (CheckpointError, ValueError) as e:
            assert os.path.basename(f) in str(e), (f, str(e))
            named += 1
        finally:
            if t is not None:
                t.close()
        assert not marker.exists(), f"loading {f} ran code"
        with open(f, "wb") as fh:
            fh.write(original)
        tried += 1
    assert tried >= 5 and named == len(read_at_resume)
    print(f"payload planted in {tried} files; {named} read at resume -> error naming the file; none ran")


# ---------------------------------------------------------------- 2. finite-value guards
def _poison_replay(tr, key=("next", "reward")):
    st = tr.replay.storage._storage
    st.get(key).fill_(float("nan"))


def test_nonfinite_batch_skips_update_counts_and_stops_naming_key(tmp_path):
    tr = trainer(tmp_path)
    tr.learner.guard.max_consecutive = 3
    tr.collection.collect(tr.store)
    before = {k: v.clone() for k, v in tr.loss.state_dict().items()}
    _poison_replay(tr)
    out = tr.learner.update()
    assert float(out["nonfinite_skipped"]) == 1 and tr.learner.guard.skipped == 1 and tr.grad_steps == 0
    for k, v in tr.loss.state_dict().items():
        assert torch.equal(v, before[k]), k  # no optimizer / target / PopArt change
    tr.learner.update()
    with pytest.raises(NonFiniteError, match=r"3 updates in a row.*'next/reward' at grad step 0"):
        tr.learner.update()
    tr.close()


def test_finite_update_resets_the_streak(tmp_path):
    tr = trainer(tmp_path)
    tr.learner.guard.max_consecutive = 2
    tr.collection.collect(tr.store)
    good = tr.replay.storage._storage.get(("next", "reward")).clone()
    _poison_replay(tr)
    tr.learner.update()
    tr.replay.storage._storage.get(("next", "reward")).copy_(good)
    out = tr.learner.update()
    assert float(out["nonfinite_skipped"]) == 0 and tr.learner.guard.streak == 0 and tr.grad_steps == 1
    tr.close()


def test_nonfinite_gradient_is_skipped_and_named(tmp_path):
    tr = trainer(tmp_path)
    tr.learner.guard.max_consecutive = 1
    tr.collection.collect(tr.store)
    name, p = next((n, p) for n, p in tr.loss.named_parameters() if "critic" in n and p.requires_grad)
    p.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match=f"gradient of '{name}'"):
        tr.learner.update()
    assert tr.grad_steps == 0
    tr.close()


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    tr = trainer(tmp_path)
    tr.learner.guard.max_consecutive = 1
    tr.train(epochs=1)
    path = run_dir(tmp_path) / "ckpts" / "latest.pt"
    good = path.read_bytes()
    name, p = next((n, p) for n, p in tr.loss.named_parameters() if p.requires_grad)
    with torch.no_grad():
        p.view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError, match=f"weight '{name}' holds NaN"):
        tr.save()
    assert path.read_bytes() == good
    with pytest.raises(NonFiniteError, match="loss '"):  # the NaN weight also makes the loss non-finite
        tr.learner.update()
    tr.close()


class NaNObservationAfter(Transform):
    def __init__(self, step):
        super().__init__()
        self.step, self.count = step, 0

    def _call(self, td):
        self.count += 1
        if self.count == self.step:
            obs = td["observation"].clone()
            obs.view(-1)[0] = float("nan")
            td["observation"] = obs
        return td


def test_env_nan_observation_is_reported_by_key_and_not_stored(tmp_path):
    def make(n):
        env = env_(n)
        env.append_transform(NaNObservationAfter(3))
        return env

    tr = trainer(tmp_path, make_env=make)
    with pytest.raises(NonFiniteError, match=r"training env returned NaN/inf at its step.*'observation': 1"):
        tr.collection.collect(tr.store)
    assert len(tr.replay) == 0 and tr.env_steps == 0
    tr.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nonfinite_keys_on_a_step_that_mixes_cpu_and_cuda():
    """An env on the CPU stepped with a CUDA policy sees both devices in one TensorDict (examples/03 on --device
    cuda crashed here once)."""
    td = TensorDict({"observation": torch.zeros(2, 3), "logits": torch.zeros(2, 4, device="cuda")}, [2])
    assert nonfinite_keys(td) == {}
    td["logits"][0, 1] = float("inf")
    td["observation"][1] = float("nan")
    assert nonfinite_keys(td) == {"observation": 3, "logits": 1}


def _offline_trials(n=4):
    ro = env_(n).rollout(H + 1, break_when_any_done=False)
    return [ro[i] for i in range(n)]


def test_offline_nan_reward_errors_by_key_or_drops_and_counts(tmp_path):
    trials = _offline_trials()
    trials[2][("next", "reward")][1] = float("inf")
    rb = make_sequence_replay(100, 4, 2, scratch_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"'next/reward': 1.*first in trial 2 of 4"):
        load_offline_trials(rb, trials)
    assert rb.num_trials() == 0
    report = {}
    assert load_offline_trials(rb, trials, nonfinite="drop", report=report) == 3
    assert report == {"dropped_trials": 1, "bad_keys": {"next/reward": 1}} and rb.num_trials() == 3


def test_trainer_offline_data_with_nan_observation(tmp_path):
    trials = _offline_trials()
    trials[0]["observation"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="'observation'"):
        AMAGOTrainer(cfg_(tmp_path), env_, None, offline_data=trials)
    tr = AMAGOTrainer(cfg_(tmp_path, nonfinite_data="drop"), env_, None, offline_data=trials)
    assert tr.offline_report["dropped_trials"] == 1 and tr.offline_replay.num_trials() == 3
    tr.close()


# ---------------------------------------------------------------- 3. crash-consistent checkpoints
SAVE_POINTS_BEFORE_COMMIT = ("replay_before_sync", "replay_synced", "checkpoint_tmp_written",
                             "checkpoint_tmp_synced")
SAVE_POINTS_AFTER_COMMIT = ("checkpoint_renamed", "undo_discarded", "generation_removed")


def _kill_at(monkeypatch, point):
    def fault(name):
        if name == point:
            raise Killed(name)

    monkeypatch.setattr(ckpt_mod, "fault_point", fault)


@pytest.mark.parametrize("point", SAVE_POINTS_BEFORE_COMMIT + SAVE_POINTS_AFTER_COMMIT)
def test_kill_at_every_write_step_of_save(tmp_path, monkeypatch, point):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    if point == "generation_removed":  # needs a generation to remove (e.g. left by an older layout)
        os.makedirs(run_dir(tmp_path) / "buffer" / "7" / "storage")
    committed = snapshot(tr)
    _kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        tr.train(epochs=3)
    in_flight = snapshot(tr)
    tr.close()
    monkeypatch.undo()
    assert not list((run_dir(tmp_path) / "ckpts").glob("latest.pt.tmp")) or point in SAVE_POINTS_BEFORE_COMMIT
    r = resume_fresh(tmp_path)
    got = snapshot(r)
    assert_same_replay(got, committed if point in SAVE_POINTS_BEFORE_COMMIT else in_flight)
    assert r.env_steps == r.replay._writer.index.write_count  # counters equal the stored data
    r.train(epochs=4)
    epochs = [rec["epoch"] for rec in r.logger.records]
    assert epochs == [0, 1, 2, 3]  # no metrics row lost or duplicated
    r.close()


def test_kill_between_log_and_save_does_not_duplicate_metrics(tmp_path, monkeypatch):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    committed = snapshot(tr)

    def killed_save(self, tag="latest"):
        raise Killed("save")

    monkeypatch.setattr(AMAGOTrainer, "save", killed_save)
    with pytest.raises(Killed):
        tr.train(epochs=3)
    tr.close()
    monkeypatch.undo()
    r = resume_fresh(tmp_path)
    assert_same_replay(snapshot(r), committed)
    r.train(epochs=3)
    assert [rec["epoch"] for rec in r.logger.records] == [0, 1, 2]
    with open(r.logger.csv_path) as f:
        assert len(f.readlines()) == 1 + 3
    r.close()


def test_kill_in_the_middle_of_a_replay_write(tmp_path, monkeypatch):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    committed = snapshot(tr)
    storage = tr.replay.storage
    real_set = storage.set

    def half_set(cursor, data, *a, **k):  # half of the rows land, then the process dies
        real_set(cursor[: len(cursor) // 2], data[: len(cursor) // 2], *a, **k)
        raise Killed("storage.set")

    monkeypatch.setattr(storage, "set", half_set)
    with pytest.raises(Killed):
        tr.collection.collect(tr.store)
    tr.close()
    r = resume_fresh(tmp_path)
    assert_same_replay(snapshot(r), committed)
    r.train(epochs=3)
    assert r.env_steps == r.replay._writer.index.write_count == 3 * 2 * (H + 1)
    r.close()


def test_checkpointed_rows_overwritten_after_the_checkpoint_are_restored(tmp_path, monkeypatch):
    cap = 24  # 8 steps per epoch: the buffer wraps from epoch 3 on
    tr = trainer(tmp_path, dset_max_size=cap)
    tr.train(epochs=4)
    committed = snapshot(tr)
    _kill_at(monkeypatch, "replay_before_sync")  # epoch 5's rows overwrote checkpointed slots, then a kill
    with pytest.raises(Killed):
        tr.train(epochs=5)
    after_kill = tr.replay.storage._storage.clone()
    tr.close()
    monkeypatch.undo()
    undo = list((run_dir(tmp_path) / "buffer").rglob("undo/*.pt"))
    assert undo, "the kill must come after checkpointed rows were overwritten"
    r = resume_fresh(tmp_path, dset_max_size=cap)
    assert_same_replay(snapshot(r), committed)  # every checkpointed trial is back, bit for bit
    assert not (r.replay.storage._storage == after_kill).all()  # (the rows had really changed on disk)
    r.train(epochs=6)
    assert r.env_steps == r.replay._writer.index.write_count == 6 * 2 * (H + 1)
    assert not list((run_dir(tmp_path) / "buffer").rglob("undo/*.pt"))  # obsolete once a newer checkpoint is durable
    r.close()


def test_payload_in_an_undo_file_never_runs(tmp_path, monkeypatch):
    cap = 24
    tr = trainer(tmp_path, dset_max_size=cap)
    tr.train(epochs=4)
    _kill_at(monkeypatch, "replay_before_sync")
    with pytest.raises(Killed):
        tr.train(epochs=5)
    tr.close()
    monkeypatch.undo()
    f = next((run_dir(tmp_path) / "buffer").rglob("undo/*.pt"))
    torch.save({"protects": 32, "gpos": Marker(tmp_path / "ran")}, f)
    t = trainer(tmp_path, dset_max_size=cap)
    with pytest.raises(CheckpointError, match=f"undo file {f} cannot be applied"):
        t.resume()
    t.close()
    assert not (tmp_path / "ran").exists() and f.exists()


def test_truncated_memmap_is_named_and_its_generation_kept(tmp_path):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    tr.close()
    obs = next((run_dir(tmp_path) / "buffer").rglob("observation.memmap"))
    with open(obs, "r+b") as f:
        f.truncate(obs.stat().st_size // 2)
    for _ in range(2):  # a second attempt finds the same data: nothing was deleted
        t = trainer(tmp_path)
        with pytest.raises(CheckpointError, match=f"{obs}.*bytes, expected"):
            t.resume()
        with pytest.raises(CheckpointError, match="was not resumed"):
            t.save()  # a trainer that failed to resume cannot overwrite the run
        t.close()
        assert obs.exists() and (run_dir(tmp_path) / "ckpts" / "latest.pt").exists()


def test_missing_memmap_key_is_named(tmp_path):
    tr = trainer(tmp_path)
    tr.train(epochs=1)
    tr.close()
    f = next((run_dir(tmp_path) / "buffer").rglob("prev_reward.memmap"))
    f.unlink()
    t = trainer(tmp_path)
    with pytest.raises(CheckpointError, match=r"prev_reward.memmap \(key 'prev_reward'\) is missing"):
        t.resume()
    t.close()


# ---------------------------------------------------------------- 4. resume without disk leaks
def _disk(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_three_resumes_use_the_disk_of_one_run_and_copy_nothing(tmp_path):
    tr = trainer(tmp_path)
    tr.train(epochs=2)
    tr.close()
    buf = run_dir(tmp_path) / "buffer"
    one_run = _disk(buf)
    obs = next(buf.rglob("observation.memmap"))
    inode = obs.stat().st_ino
    for e in (3, 4, 4):  # the last one re-runs a finished run
        r = resume_fresh(tmp_path)
        r.train(epochs=e)
        r.close()
    assert sorted(os.listdir(buf)) == [obs.relative_to(buf).parts[0]]  # one generation
    assert _disk(buf) == one_run and obs.stat().st_ino == inode  # attached in place, never copied
    r = resume_fresh(tmp_path)
    assert r.epoch == 4 and r.env_steps == r.replay._writer.index.write_count == 4 * 2 * (H + 1)
    r.close()


# ---------------------------------------------------------------- 5. honest resume
def test_safe_change_is_applied_and_recorded(tmp_path):
    tr = trainer(tmp_path, learning_rate=1e-3)
    tr.train(epochs=2)
    tr.close()
    r = resume_fresh(tmp_path, learning_rate=4e-4, epochs=30, grad_clip=0.5)
    lam = r.learner.scheduler.lr_lambdas[0](r.learner.scheduler.last_epoch)
    assert r.learner.scheduler.base_lrs == [4e-4]
    assert r.learner.optimizer.param_groups[0]["lr"] == pytest.approx(4e-4 * lam)
    r.train(epochs=3)
    r.close()
    stored = load_checkpoint(str(run_dir(tmp_path) / "ckpts" / "latest.pt"))["config"]
    assert (stored["learning_rate"], stored["epochs"], stored["grad_clip"]) == (4e-4, 30, 0.5)


def test_unsafe_changes_are_refused_and_listed(tmp_path):
    tr = trainer(tmp_path)
    tr.train(epochs=1)
    tr.close()
    t = trainer(tmp_path, gamma=0.9, multigammas=[0.5], dset_max_size=500)
    with pytest.raises(CheckpointError) as e:
        t.resume()
    msg = str(e.value)
    for flag in ("--gamma: checkpoint 0.999 -> now 0.9", "--multigammas: checkpoint None -> now [0.5]",
                 "--dset_max_size: checkpoint 400 -> now 500"):
        assert flag in msg
    t.close()
    assert "gamma" not in SAFE_ON_RESUME and "learning_rate" in SAFE_ON_RESUME


# ---------------------------------------------------------------- 6. flags and inputs
@pytest.mark.parametrize("kw,flag", [
    (dict(grad_clip=-1.0), "--grad_clip"),
    (dict(tau=2.0), "--tau"),
    (dict(tau=float("nan")), "--tau"),
    (dict(start_learning_at_epoch=5, epochs=2), "--start_learning_at_epoch=5 is not below --epochs=2"),
    (dict(dset_max_size=7), "--dset_max_size=7 is smaller than one epoch"),
    (dict(traj_save_len=500), "--traj_save_len=500 exceeds --dset_max_size=400"),
    (dict(nonfinite_data="ignore"), "--nonfinite_data"),
    (dict(learning_rate=-1e-3), "--learning_rate"),
    (dict(entropy_coeff=-0.1), "--entropy_coeff"),
])
def test_bad_flags_name_the_flag(tmp_path, kw, flag):
    with pytest.raises(ValueError, match=flag.replace("[", r"\[")):
        cfg_(tmp_path, **kw)


def test_trial_longer_than_the_replay_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--dset_max_size=400 is smaller than one trial"):
        AMAGOTrainer(cfg_(tmp_path), env_, None, rollout_horizon=1000)


def test_loss_batch_without_mask_is_an_error(tmp_path):
    tr = trainer(tmp_path)
    tr.collection.collect(tr.store)
    batch = tr.sampler.sample()
    del batch["mask"]  # the replay writes the mask twice: the loss reads TorchRL's ("collector", "mask") too
    assert tr.loss(batch.clone())["valid_steps"] == batch["collector", "mask"].sum()
    del batch["collector", "mask"]
    with pytest.raises(ValueError, match="no key 'mask'"):
        tr.loss(batch)
    tr.close()


def test_gymnasium_dict_action_space_is_named(tmp_path):
    gym = pytest.importorskip("gymnasium")
    import numpy as np
    from torchrl.envs import GymWrapper

    class DictActions(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.Dict({"move": gym.spaces.Discrete(3), "speed": gym.spaces.Box(-1, 1, (1,))})

        def reset(self, seed=None, options=None):
            return np.zeros(3, np.float32), {}

        def step(self, a):
            return np.zeros(3, np.float32), 0.0, False, False, {}

    with pytest.raises(ValueError, match=r"no action key 'action' \(its action keys: \['move', 'speed'\]\)"):
        make_amago_env(GymWrapper(DictActions()))


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    state = ckpt_mod.rng_state()
    ckpt_mod.save_checkpoint(str(tmp_path / "x.pt"), {"rng": state, "loss": {}, "optimizer": {}, "scheduler": {},
                                                      "counters": {}, "config": {}})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_mod.set_rng_state(load_checkpoint(str(tmp_path / "x.pt"))["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expect[0]) and (got[1] == expect[1]).all() and got[2] == expect[2]


def test_unused_tensordict_in_checkpoint_is_refused(tmp_path):
    path = tmp_path / "td.pt"
    torch.save({"format": FORMAT, "loss": TensorDict({"a": torch.zeros(1)}, [])}, path)
    with pytest.raises(CheckpointError, match="td.pt is corrupt or holds objects other than tensors"):
        load_checkpoint(str(path))


def test_d4rl_file_with_nan_observation_is_named_or_dropped(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    from torchrl_amago.data.d4rl import load_d4rl_trials

    n = 12  # three trials of 4 steps; a NaN observation in the second
    obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    obs[5, 1] = np.nan
    term = np.zeros(n, bool)
    term[[3, 7, 11]] = True
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        f["observations"], f["next_observations"] = obs, obs + 1
        f["actions"], f["rewards"] = np.zeros(n, np.int64), np.ones(n, np.float32)
        f["terminals"], f["timeouts"] = term, np.zeros(n, bool)
    trials = load_d4rl_trials(tmp_path / "d.hdf5", num_actions=2)
    rb = make_sequence_replay(100, 4, 2, scratch_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"'observation': 1.*first in trial 1 of 3"):
        load_offline_trials(rb, trials)
    report = {}
    assert load_offline_trials(rb, trials, nonfinite="drop", report=report) == 2 and report["dropped_trials"] == 1
    assert torch.isfinite(rb.storage[: len(rb)]["observation"]).all() and len(rb) == 8
