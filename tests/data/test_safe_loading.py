"""A replay dump, a dataset or a checkpoint is data, never code (issue 32).

Every test plants a payload (an object whose unpickling creates a marker file, tests/payloads.py) in a file a
loader reads, or in a file added beside them, then asserts that the load raised an error naming that file and that
the marker does not exist (nothing ran). The round-trip tests check that the safe format loses nothing."""
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import ReplayBuffer
from torchrl.envs import RewardScaling

from tests.data.test_d4rl_minari import ACT, OBS, REW, TERM, TOUT, _h5, _minari_dataset
from tests.payloads import Marker
from torchrl_amago.data import (MixedReplay, UnsafeFileError, arrays_to_trials, load_d4rl_trials,
                                load_minari_trials, load_offline_trials, load_tensors, make_sequence_replay)
from torchrl_amago.trainers.run.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint

NON_TENSOR_STACK = "<class 'tensordict.tensorclass.NonTensorStack'>"
CAP, T, B = 200, 8, 4  # the issue's buffer: capacity 200 steps, windows of 8, batches of 4


def trials(n=40, offset=0.0):
    """Four offline trials of 10 steps (terminals never, timeouts every 10th step); values differ with offset."""
    return arrays_to_trials(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + offset, torch.arange(n) % 2,
                            torch.arange(n, dtype=torch.float32) + offset, torch.zeros(n),
                            timeouts=torch.arange(n) % 10 == 9, num_actions=2)


def filled(tmp_path, name="a", seed=0, transform=None):
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / name),
                              generator=torch.Generator().manual_seed(seed), transform=transform)
    load_offline_trials(rb, trials())
    return rb


def scaling(loc, scale):
    """A sample-time transform with state (its loc/scale buffers travel in the dump)."""
    return RewardScaling(loc=loc, scale=scale, in_keys=[("next", "reward")])


def fresh(tmp_path, name="b", **kw):
    return make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / name), **kw)


def write_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(Marker(marker), f)


def plant_non_tensor_stack(folder, marker, replace=False):
    """tensordict's memmap layout of a NonTensorStack: a meta.json naming a pickle.pkl beside it (``replace``: in
    place of everything the folder held)."""
    if replace:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"_type": NON_TENSOR_STACK, "data": "pickle.pkl", "device": None,
                                                  "shape": [CAP], "stack_dim": 0}))
    write_pickle(folder / "pickle.pkl", marker)


def refused(load, marker, name):
    """``load()`` raises an error (ValueError family, or CheckpointError) naming ``name``, and nothing ran."""
    with pytest.raises((ValueError, CheckpointError)) as e:
        load()
    assert not marker.exists(), f"loading ran the payload planted in {name}"
    assert name in str(e.value), (name, str(e.value))
    return str(e.value)


# ------------------------------------------------------------------------------------------ the issue's attack
@pytest.mark.parametrize("where", [("storage", "next"), ("rng_state",)])
def test_the_issue_attack_never_runs(tmp_path, where):
    """Issue 32, steps 1-3: dumps, replace out/storage/next/ (or out/rng_state/) by a NonTensorStack whose
    pickle.pkl runs code, loads. Before the fix the payload ran and loads failed with a TypeError afterwards."""
    rb = filled(tmp_path)
    out = tmp_path / "out"
    rb.dumps(out)
    marker = tmp_path / "ran"
    plant_non_tensor_stack(out.joinpath(*where), marker, replace=True)
    refused(lambda: fresh(tmp_path).loads(out), marker, "/".join(where) + "/meta.json")


# ------------------------------------------------------------------------------------------ every file of a dump
def test_payload_in_every_file_of_a_dump_never_runs(tmp_path):
    rb = filled(tmp_path, transform=scaling(1.0, 2.0))
    out = tmp_path / "out"
    rb.dumps(out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.relative_to(out).as_posix() for p in files}
    assert "replay_state.pt" in names and "storage/observation.memmap" in names and "storage/next/done.memmap" in names
    assert not [n for n in names if not (n == "replay_state.pt" or n.endswith(".memmap"))]  # no pickle, no meta.json
    marker = tmp_path / "ran"
    for f in files:
        original = f.read_bytes()
        if f.suffix == ".pt":
            torch.save({"format": "torchrl_amago.replay_dump.v1", "writer": Marker(marker)}, f)
        else:
            write_pickle(f, marker)
        refused(lambda: fresh(tmp_path, transform=scaling(0.0, 1.0)).loads(out), marker, f.name)
        f.write_bytes(original)
    fresh(tmp_path, transform=scaling(0.0, 1.0)).loads(out)  # every file restored: it loads again


ADDED = {  # planted file -> how it is written (a payload in each)
    "pickle.pkl": "pickle",
    "prefetch.pkl": "pickle",
    "transform.t": "torch.save",
    "buffer_metadata.json": "pickle",
    "evil.json": "pickle",  # a pickle disguised as JSON
    "writer/trial_writer.pt": "torch.save",
    "sampler/sampler_metadata.json": "pickle",
    "rng_state/meta.json": "non_tensor_stack",
    "storage/next/meta.json": "non_tensor_stack",
    "storage/meta.json": "non_tensor_stack",
    "storage/action/other.pickle": "pickle",  # a tensorclass's pickled fields
    "storage/evil.memmap": "pickle",  # a pickle disguised as a memmap the state does not name
    "storage/x.npy": "npy",  # a numpy object array (np.load(allow_pickle=True) would run it)
}


@pytest.mark.parametrize("rel", sorted(ADDED))
def test_added_file_is_refused_before_anything_is_read(tmp_path, rel):
    rb = filled(tmp_path)
    out = tmp_path / "out"
    rb.dumps(out)
    marker, f = tmp_path / "ran", out / rel
    kind = ADDED[rel]
    f.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        write_pickle(f, marker)
    elif kind == "torch.save":
        torch.save({"state": Marker(marker)}, f)
    elif kind == "npy":
        np.save(f, np.array([Marker(marker)], dtype=object), allow_pickle=True)
    else:
        plant_non_tensor_stack(f.parent, marker)
    target = fresh(tmp_path)
    msg = refused(lambda: target.loads(out), marker, os.path.dirname(rel) or rel)
    planted = [str(f)] + ([str(f.parent / "pickle.pkl")] if kind == "non_tensor_stack" else [])
    assert any(f"{p} is not part of a replay dump" in msg or f"{p} is not named by" in msg for p in planted), msg
    assert len(target) == 0 and target.num_trials() == 0  # refused before anything was copied


def test_state_file_variants_are_refused_before_unpickling(tmp_path):
    """replay_state.pt as a raw pickle, as a legacy (non-zip) torch.save, as a torch.save zip holding an object,
    a numpy array or a tensordict; and as a symlink to a real state file."""
    rb = filled(tmp_path)
    out = tmp_path / "out"
    rb.dumps(out)
    state, marker = out / "replay_state.pt", tmp_path / "ran"
    good = state.read_bytes()
    variants = {
        "raw pickle": lambda: write_pickle(state, marker),
        "legacy torch.save": lambda: torch.save({"x": Marker(marker)}, state, _use_new_zipfile_serialization=False),
        "torch.save zip": lambda: torch.save({"version": 1, "capacity": CAP, "x": Marker(marker)}, state),
        "protocol 4 (STACK_GLOBAL)": lambda: torch.save({"x": Marker(marker)}, state, pickle_protocol=4),
        "numpy array": lambda: torch.save({"x": np.zeros(3)}, state),
        "tensordict": lambda: torch.save({"td": TensorDict(a=torch.zeros(1))}, state),
    }
    for what, plant in variants.items():
        plant()
        msg = refused(lambda: fresh(tmp_path).loads(out), marker, str(state))
        assert any(w in msg for w in ("not a torch.save archive", "other than tensors", "STACK_GLOBAL")), (what, msg)
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(good)
    state.unlink()
    state.symlink_to(elsewhere)
    assert "symlink" in refused(lambda: fresh(tmp_path).loads(out), marker, "replay_state.pt")


def test_symlinks_and_pipes_in_the_dump_are_refused(tmp_path):
    rb = filled(tmp_path)
    out = tmp_path / "out"
    rb.dumps(out)
    obs = out / "storage" / "observation.memmap"
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\0" * obs.stat().st_size)  # same size: only the link gives it away
    obs.unlink()
    obs.symlink_to(outside)
    marker = tmp_path / "ran"
    refused(lambda: fresh(tmp_path).loads(out), marker, "observation.memmap")
    obs.unlink()
    obs.write_bytes(outside.read_bytes())
    nxt = out / "storage" / "next"
    nxt.rename(tmp_path / "next_elsewhere")
    nxt.symlink_to(tmp_path / "next_elsewhere", target_is_directory=True)
    refused(lambda: fresh(tmp_path).loads(out), marker, "storage/next")
    nxt.unlink()
    (tmp_path / "next_elsewhere").rename(nxt)
    os.mkfifo(out / "storage" / "pipe.memmap")  # reading a pipe would block: refused before any read
    refused(lambda: fresh(tmp_path).loads(out), marker, "pipe.memmap is not a regular file")


def test_memmap_named_outside_the_dump_or_of_the_wrong_size_is_refused(tmp_path):
    """A state file edited by hand (tensors and plain values only) that names a file outside the folder, or a
    memmap whose size does not match its dtype x shape."""
    rb = filled(tmp_path)
    out = tmp_path / "out"
    rb.dumps(out)
    state = load_tensors(out / "replay_state.pt")
    state["storage"]["leaves"][0]["file"] = "../../a/observation.memmap"
    torch.save(state, out / "replay_state.pt")
    refused(lambda: fresh(tmp_path).loads(out), tmp_path / "ran", "lies outside")
    out = tmp_path / "out2"  # (dumps refuses to replace `out`: its state no longer names its memmaps)
    rb.dumps(out)
    with open(out / "storage" / "next" / "reward.memmap", "ab") as f:
        f.write(b"\0" * 4)
    refused(lambda: fresh(tmp_path).loads(out), tmp_path / "ran", "reward.memmap")


def test_torchrl_format_dump_is_refused(tmp_path):
    """TorchRL's own ReplayBuffer.dumps layout (storage/meta.json walked by tensordict's load_memmap) is never
    loaded, even unmodified; planted, its NonTensorStack does not run."""
    rb = filled(tmp_path)
    out = tmp_path / "torchrl_dump"
    ReplayBuffer.dumps(rb, out)
    assert (out / "storage" / "meta.json").exists()
    marker = tmp_path / "ran"
    refused(lambda: fresh(tmp_path).loads(out), marker, "replay_state.pt")
    plant_non_tensor_stack(out / "storage" / "next", marker, replace=True)
    refused(lambda: fresh(tmp_path).loads(out), marker, "replay_state.pt")


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_gives_the_same_windows_and_contents(tmp_path):
    rb = filled(tmp_path, transform=scaling(1.0, 2.0))
    out = tmp_path / "out"
    rb.dumps(out)
    got = fresh(tmp_path, generator=torch.Generator().manual_seed(99), transform=scaling(0.0, 1.0))
    got.loads(out)
    n = len(rb)
    # 4 trials of 10 rows; without next_observations each trial's last (timeout) row is dropped (arrays_to_trials)
    assert len(got) == n == 36 and got.trial_lengths().tolist() == rb.trial_lengths().tolist() == [9] * 4
    assert (got.storage[:n] == rb.storage[:n]).all()
    a, b = rb._writer.state_dict()["index"], got._writer.state_dict()["index"]
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    assert got._transform.state_dict().keys() == rb._transform.state_dict().keys()
    assert all(torch.equal(v, got._transform.state_dict()[k]) for k, v in rb._transform.state_dict().items())
    for _ in range(3):  # the sampling RNG came with the dump: the same windows, after the same transform
        s, t = rb.sample(), got.sample()
        assert s.batch_size == t.batch_size == torch.Size([B, T]) and (s == t).all()
    # the dump is a copy: writing to the loaded buffer leaves the dump as it was
    before = (out / "storage" / "observation.memmap").read_bytes()
    load_offline_trials(got, trials(offset=1000.0))
    assert (out / "storage" / "observation.memmap").read_bytes() == before


def test_dump_over_an_earlier_dump_and_refusal_of_a_foreign_folder(tmp_path):
    rb = filled(tmp_path)
    out = tmp_path / "out"
    make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "e")).dumps(out)  # an empty buffer first
    rb.dumps(out)  # replaces it
    got = fresh(tmp_path)
    got.loads(out)
    assert got.trial_lengths().tolist() == [9] * 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a replay dump"):
        rb.dumps(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------ MixedReplay
def test_mixed_replay_dump_refuses_planted_files(tmp_path):
    mixed = MixedReplay([filled(tmp_path, "a"), filled(tmp_path, "b")], [0.5, 0.5], batch_size=4)
    out = tmp_path / "mixed"
    mixed.dumps(out)
    marker = tmp_path / "ran"
    restored = lambda: MixedReplay([fresh(tmp_path, "c"), fresh(tmp_path, "d")], [1.0, 0.0])  # noqa: E731
    write_pickle(out / "state.pkl", marker)
    refused(lambda: restored().loads(out), marker, "state.pkl")
    (out / "state.pkl").unlink()
    original = (out / "mixed.json").read_bytes()
    write_pickle(out / "mixed.json", marker)
    refused(lambda: restored().loads(out), marker, "mixed.json")
    (out / "mixed.json").write_bytes(original)
    plant_non_tensor_stack(out / "buffer_1" / "storage" / "next", marker, replace=True)
    refused(lambda: restored().loads(out), marker, "buffer_1/storage/next/meta.json")


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("name", ["latest.pt", "epoch_3.pt", "best.pt", "replay_rank1_e3_g9.pt"])
def test_checkpoint_variants_never_run(tmp_path, name):
    """The run-checkpoint loader (resume, --branch_from, epoch snapshots, other ranks' replay files) goes through
    the same safe reader: raw pickle, legacy torch.save, torch.save zip with an object, a numpy array inside."""
    path, marker = tmp_path / name, tmp_path / "ran"
    good = {"loss": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "counters": {"epoch": 3}, "config": {}}
    plants = [lambda: write_pickle(path, marker),
              lambda: torch.save({"format": FORMAT, "loss": Marker(marker)}, path, _use_new_zipfile_serialization=False),
              lambda: torch.save({"format": FORMAT, **good, "loss": Marker(marker)}, path),
              lambda: torch.save({"format": FORMAT, **good, "loss": {"w": np.ones(2)}}, path)]
    for plant in plants:
        plant()
        refused(lambda: load_checkpoint(str(path)), marker, name)
    save_checkpoint(str(path), good)
    assert load_checkpoint(str(path))["counters"] == {"epoch": 3}


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning")  # built on purpose
def test_a_torchscript_or_multi_record_archive_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeFileError, match="x.pt is not a plain torch.save archive"):
        load_tensors(path)
    torch.save({"a": torch.ones(1)}, path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("x/extra.pkl", pickle.dumps(Marker(tmp_path / "ran")))
    with pytest.raises(UnsafeFileError, match="x.pt is not a plain torch.save archive"):
        load_tensors(path)
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------------------------ HDF5 datasets
def _d4rl(tmp_path, name="d.hdf5", **override):
    arrays = dict(observations=OBS, actions=ACT, rewards=REW, terminals=TERM, timeouts=TOUT)
    arrays.update(override)
    return _h5(tmp_path, name, **arrays)


def test_d4rl_object_and_string_datasets_are_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    marker = tmp_path / "ran"
    blob = np.frombuffer(pickle.dumps(Marker(marker)), dtype=np.uint8)
    path = _d4rl(tmp_path, observations=OBS)
    with h5py.File(path, "r+") as f:  # observations: one pickled object per row, as variable-length bytes
        del f["observations"]
        f.create_dataset("observations", (7,), dtype=h5py.vlen_dtype(np.uint8))[...] = [blob] * 7
    refused(lambda: load_d4rl_trials(path, num_actions=3), marker, f"{path}: /observations")
    path2 = _d4rl(tmp_path, "s.hdf5", rewards=np.array([b"cos\nsystem\n"] * 7, dtype=object))
    refused(lambda: load_d4rl_trials(path2, num_actions=3), marker, f"{path2}: /rewards")
    path3 = _d4rl(tmp_path, "c.hdf5", actions=np.zeros(7, dtype=[("a", "i8"), ("b", "f4")]))
    refused(lambda: load_d4rl_trials(path3, num_actions=3), marker, f"{path3}: /actions")


def test_d4rl_attributes_are_never_read(tmp_path):
    """A payload in HDF5 attributes (of the file and of a dataset): the file loads, the values are the same, and
    nothing ran (attributes are not read at all)."""
    h5py = pytest.importorskip("h5py")
    marker = tmp_path / "ran"
    path = _d4rl(tmp_path, next_observations=OBS + 1)
    clean = load_d4rl_trials(path, num_actions=3)
    with h5py.File(path, "r+") as f:
        f.attrs["payload"] = np.void(pickle.dumps(Marker(marker)))
        f["observations"].attrs["payload"] = np.void(pickle.dumps(Marker(marker)))
        f.create_dataset("infos/pickled", data=np.void(pickle.dumps(Marker(marker))))  # a member not read either
    assert (load_d4rl_trials(path, num_actions=3) == clean).all()
    assert not marker.exists()


def test_d4rl_links_external_storage_and_cycles_are_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    marker = tmp_path / "ran"
    other = _h5(tmp_path, "other.hdf5", observations=OBS)
    raw = tmp_path / "raw.bin"
    OBS.astype(np.float64).tofile(raw)
    cases = {
        "external link": lambda f: f.__setitem__("observations", h5py.ExternalLink(str(other), "/observations")),
        "soft link": lambda f: f.__setitem__("observations", h5py.SoftLink("/rewards")),
        "external storage": lambda f: f.create_dataset("observations", shape=OBS.shape, dtype=OBS.dtype,
                                                       external=[(str(raw), 0, h5py.h5f.UNLIMITED)]),
        "group cycle": lambda f: f.create_group("observations").__setitem__("loop", f["observations"]),
    }
    for i, (what, make) in enumerate(cases.items()):
        path = _d4rl(tmp_path, f"{i}.hdf5")
        with h5py.File(path, "r+") as f:
            del f["observations"]
            make(f)
        refused(lambda: load_d4rl_trials(path, num_actions=3), marker, f"{path}: /observations")


def test_minari_metadata_and_episode_payloads_are_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    marker = tmp_path / "ran"
    data = _minari_dataset(tmp_path)
    meta = data / "metadata.json"
    original = meta.read_bytes()
    write_pickle(meta, marker)  # a pickle where the JSON metadata belongs
    for backend in ("auto", "hdf5"):
        refused(lambda: load_minari_trials(data, backend=backend), marker, str(meta))
    spaces = json.loads(original)
    spaces["action_space"] = pickle.dumps(Marker(marker)).decode("latin1")
    meta.write_text(json.dumps(spaces))
    refused(lambda: load_minari_trials(data, backend="hdf5"), marker, str(meta))
    meta.write_bytes(original)
    with h5py.File(data / "main_data.hdf5", "r+") as f:
        del f["episode_1/actions"]
        f["episode_1"].create_dataset("actions", (2,), dtype=h5py.vlen_dtype(np.uint8))[...] = [
            np.frombuffer(pickle.dumps(Marker(marker)), dtype=np.uint8)] * 2
    refused(lambda: load_minari_trials(data, backend="hdf5"), marker, "main_data.hdf5: /episode_1/actions")
