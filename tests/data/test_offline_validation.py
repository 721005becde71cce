"""Offline datasets are checked against the action space and the flag format (issue 65, item 4).

The probe's cases (reliability.md H12, H13, H23, H17-H19, H30, M03-M06): continuous actions of 1e30 stored as they
were; float64 action indices with num_actions=3 stored as continuous [N, 1] floats; terminals of 0.3 read as True;
a dataset id '../outside' read from outside the Minari root; h5py's bare errors; a 32 GB declared array allocated.
Each is planted in a real file; the error must name the file (or dataset), the key and the first bad row."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from tests.data.test_d4rl_minari import ACT, OBS, REW, TERM, TOUT, _h5, _minari_dataset
from tests.payloads import Marker
from torchrl_amago.data import UnsafeFileError, arrays_to_trials, load_d4rl_trials, load_dataset_trials
from torchrl_amago.data.minari import load_minari_trials, resolve_minari_data_path
from torchrl_amago.data.safe_files import read_hdf5

N = 20


def _file(tmp_path, **override):
    arrays = dict(observations=np.zeros((N, 3), np.float32), actions=np.zeros((N, 2), np.float32),
                  rewards=np.ones(N, np.float32), terminals=np.zeros(N, bool), timeouts=np.arange(N) % 5 == 4)
    arrays.update(override)
    return _h5(tmp_path, "d.hdf5", **arrays)


def test_continuous_actions_outside_the_action_range_are_refused(tmp_path):
    path = _file(tmp_path, actions=np.where(np.arange(N)[:, None] == 7, 1e30, 0.5).astype(np.float32) * [1, 0])
    with pytest.raises(ValueError, match=r"d\.hdf5: actions: row 7 holds \[1e\+30, 0\], outside the action "
                                         r"range \[-1, 1\].*action_bounds"):
        load_d4rl_trials(path)
    with pytest.raises(ValueError, match=r"actions: row 7 .* outside the action range \[\[-2, -2\], \[2, 2\]\]"):
        load_d4rl_trials(path, action_bounds=([-2.0, -2.0], [2.0, 2.0]))  # checked before rescaling, not clipped
    ok = load_d4rl_trials(_file(tmp_path, actions=np.full((N, 2), 1.0, np.float32)))  # the range's edge is fine
    assert ok["action"].max() == 1.0


def test_float_action_indices_become_indices_or_are_refused(tmp_path):
    idx = np.arange(N) % 3
    td = load_d4rl_trials(_file(tmp_path, actions=idx.astype(np.float64)), num_actions=3)
    assert td["action"].dtype == torch.long  # indices, not [N, 1] floats
    assert td["action"].tolist() == idx[np.arange(N) % 5 != 4].tolist()  # the 4 timeout steps are dropped
    assert td["prev_action"].shape[-1] == 3
    same = load_d4rl_trials(_h5(tmp_path, "i.hdf5", observations=np.zeros((N, 3), np.float32), actions=idx,
                                rewards=np.ones(N), terminals=np.zeros(N, bool), timeouts=np.arange(N) % 5 == 4),
                            num_actions=3)
    assert torch.equal(td["action"], same["action"])  # float64 indices load like int64 ones
    column = load_d4rl_trials(_file(tmp_path, actions=idx[:, None].astype(np.float32)), num_actions=3)
    assert torch.equal(column["action"], same["action"])  # [N, 1] too
    one_hot = load_d4rl_trials(_file(tmp_path, actions=np.eye(3, dtype=np.float32)[idx]), num_actions=3)
    assert torch.equal(one_hot["action"], same["action"])
    half = idx.astype(np.float64)
    half[5] = 1.5
    with pytest.raises(ValueError, match=r"d\.hdf5: actions: num_actions=3 makes them discrete indices, but row 5 "
                                         r"holds 1\.5, not an integer"):
        load_d4rl_trials(_file(tmp_path, actions=half), num_actions=3)
    with pytest.raises(ValueError, match=r"discrete actions must be in \[0, num_actions=3\): actions row 2 holds 5"):
        arrays_to_trials(np.zeros((4, 1)), np.array([0.0, 1.0, 5.0, 0.0]), np.zeros(4), np.zeros(4), num_actions=3)
    with pytest.raises(ValueError, match=r"must be one-hot rows; row 1"):
        arrays_to_trials(np.zeros((2, 1)), np.array([[1, 0, 0], [0.5, 0.5, 0]]), np.zeros(2), np.zeros(2),
                         num_actions=3)


@pytest.mark.parametrize("key", ["terminals", "timeouts"])
def test_flags_must_be_0_or_1(tmp_path, key):
    flags = np.where(np.arange(N) % 3 == 0, 0.3, 0.0)
    with pytest.raises(ValueError, match=rf"d\.hdf5: {key} must hold flags \(bool or 0/1\): row 0 holds 0\.3"):
        load_d4rl_trials(_file(tmp_path, **{key: flags}))
    ok = load_d4rl_trials(_file(tmp_path, **{key: (np.arange(N) % 5 == 4).astype(np.float64)}))  # 0.0 / 1.0 fine
    assert int(ok["next", "done"].sum()) == 4


def test_files_that_are_not_hdf5_are_named(tmp_path):
    marker = tmp_path / "ran"
    good = _file(tmp_path).read_bytes()
    cases = {"truncated.hdf5": good[: len(good) // 2], "empty.hdf5": b"", "pickle.hdf5": pickle.dumps(Marker(marker))}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnsafeFileError, match=rf"{name} is not a readable HDF5 file"):
            load_d4rl_trials(tmp_path / name)
    assert not marker.exists()


def test_a_declared_size_beyond_memory_is_refused_before_reading(tmp_path, monkeypatch):
    """H30: observations declared [2e9, 4] float32 (32 GB) in a file of a few KB; refused from the declared size."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "big.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", shape=(2_000_000_000, 4), dtype=np.float32, chunks=(1024, 4))
        for k, v in dict(actions=np.zeros(3), rewards=np.zeros(3), terminals=np.zeros(3, bool)).items():
            f.create_dataset(k, data=v)
    assert os.path.getsize(path) < 100_000
    import torchrl_amago.data.safe_files as safe_files

    monkeypatch.setattr(safe_files, "available_memory", lambda: 3 * 2**30)  # the probe's RLIMIT_AS of 3 GB
    with pytest.raises(UnsafeFileError, match=r"big\.hdf5: /observations declares shape \[2000000000, 4\] of float32 "
                                              r"\(32000000000 bytes\), more than the 3221225472 bytes"):
        load_d4rl_trials(path)
    with h5py.File(path, "r") as f:
        assert read_hdf5(f, "actions", path, max_bytes=24).shape == (3,)
        with pytest.raises(UnsafeFileError, match="more than the 23 bytes"):
            read_hdf5(f, "actions", path, max_bytes=23)


# ------------------------------------------------------------------------------------------------- Minari
def test_a_dataset_id_is_a_name_under_the_root(tmp_path, monkeypatch):
    """M06: MINARI_DATASETS_PATH=<root>, id '../outside' read the dataset beside the root. An id is a name: '..',
    '.', absolute ids and symlinks out of the root are refused; paths to a dataset folder still work as paths."""
    root = tmp_path / "root"
    root.mkdir()
    outside = _minari_dataset(tmp_path, "outside")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    (root / "work").mkdir()
    monkeypatch.chdir(root / "work")  # the probe's setting: '../outside' is no folder relative to the working folder
    for bad in ("../outside", "toy/../../outside", "./x", str(outside.parent)[1:] + "/../../.."):
        with pytest.raises(ValueError, match="is not a name under the datasets root"):
            load_minari_trials(bad, backend="hdf5")
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ValueError, match="leads outside the datasets root"):
        load_minari_trials("link", backend="hdf5")
    inside = _minari_dataset(root, "toy/cart-v0")
    assert resolve_minari_data_path("toy/cart-v0") == inside
    assert load_minari_trials(str(outside), backend="hdf5").batch_size[0] == 7  # an explicit path is a path


def test_minari_flags_actions_and_metadata_are_checked(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _minari_dataset(tmp_path)
    with h5py.File(data / "main_data.hdf5", "r+") as f:
        del f["episode_1/terminations"]
        f["episode_1"].create_dataset("terminations", data=np.array([0.0, 0.3]))
    with pytest.raises(ValueError, match=r"Minari dataset .*data: episode 1: terminations must hold flags \(bool or "
                                         r"0/1\): row 1 holds 0\.3"):
        load_minari_trials(data, backend="hdf5")
    data = _minari_dataset(tmp_path, "toy/other-v0")  # Discrete(2, start=1): stored actions 1..2
    with h5py.File(data / "main_data.hdf5", "r+") as f:
        del f["episode_2/actions"]
        f["episode_2"].create_dataset("actions", data=np.array([1, 0]))
    with pytest.raises(ValueError, match=r"episode 2: actions \(Discrete\(n=2, start=1\)\): row 1 holds \[0\], "
                                         r"outside the action range \[1, 2\]"):
        load_minari_trials(data, backend="hdf5")
    meta = json.loads((data / "metadata.json").read_text())
    for n, msg in (("abc", "action_space.n must be a positive integer, got 'abc'"),
                   (-1, "action_space.n must be a positive integer, got -1")):
        meta["action_space"] = json.dumps({"type": "Discrete", "n": n, "start": 1})
        (data / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=rf"metadata\.json: {msg}"):
            load_minari_trials(data, backend="hdf5")


def test_load_dataset_trials_passes_num_actions_to_minari(tmp_path):
    data = _minari_dataset(tmp_path)
    td = load_dataset_trials(data, "minari", num_actions=2)
    assert td["action"].tolist() == [0, 1, 0, 1, 0, 0, 1]
    with pytest.raises(ValueError, match=r"Discrete\(n=1, start=1\)"):
        load_dataset_trials(data, "minari", num_actions=1)


def test_the_clean_files_still_load(tmp_path):
    td = load_d4rl_trials(_h5(tmp_path, "c.hdf5", observations=OBS, actions=ACT, rewards=REW, terminals=TERM,
                              timeouts=TOUT, next_observations=OBS + 1), num_actions=3)
    assert td["action"].tolist() == ACT.tolist() and int(td["next", "done"].sum()) == 3
