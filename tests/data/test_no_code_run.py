"""No loader of a public data class runs code from a folder it is pointed at (issue 65, item 1).

The probe's case (reliability.md TS1/TS2): TorchRL's ``LazyMemmapStorage.loads`` reads a storage folder with
tensordict's ``load_memmap``, which unpickles the ``other.pickle`` of any ``NonTensorData`` there; ``TrialStorage``
inherited it. Here one hostile folder holds that layout plus a payload under every file name a loader of this package
or of TorchRL looks for; every ``load*`` method of every public class of ``torchrl_amago.data`` (found by walking
``__all__``, so a new class must be listed in FACTORIES) and every public path loader is pointed at it and at its
``storage/`` part. The payload (tests/payloads.py) creates a marker file when unpickled: it must never appear."""
import inspect
import json
import pathlib
import pickle
import shutil

import pytest
import torch
from tensordict import NonTensorData, TensorDict
from torchrl.data import LazyMemmapStorage

import torchrl_amago.data as data
from tests.payloads import Marker
from torchrl_amago.data import (HindsightRelabel, MixedReplay, SequenceReplayBuffer, TrialIndex, TrialStorage,
                                TrialWindowSampler, TrialWriter, make_sequence_replay)

FACTORIES = {
    SequenceReplayBuffer: lambda tmp: make_sequence_replay(16, 4, 2, scratch_dir=str(tmp / "rb")),
    TrialStorage: lambda tmp: TrialStorage(16, scratch_dir=str(tmp / "st")),
    TrialWriter: lambda tmp: TrialWriter(16),
    TrialWindowSampler: lambda tmp: TrialWindowSampler(4),
    TrialIndex: lambda tmp: TrialIndex(16),
    MixedReplay: lambda tmp: MixedReplay([make_sequence_replay(16, 4, 2, scratch_dir=str(tmp / "m0"))], [1.0]),
    HindsightRelabel: lambda tmp: HindsightRelabel(),
}
PATH_LOADERS = ["load_tensors", "load_json", "load_d4rl_trials", "read_d4rl_hdf5", "load_minari_trials",
                "load_dataset_trials"]


class Touch:
    """Like tests/payloads.Marker, but unpickling returns None (tensordict copies a NonTensorData's value when it
    memmaps it, and a Marker would become an open file there)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def torchrl_storage_payload(folder, marker):
    """The probe's TS1 folder: a memmapped TensorDict whose NonTensorData pickles the payload, plus the metadata
    LazyMemmapStorage.loads expects."""
    TensorDict({"observation": torch.zeros(4, 1), "evil": NonTensorData(Touch(marker), batch_size=[4])},
               batch_size=[4]).memmap(folder)
    (folder / "storage_metadata.json").write_text(json.dumps({"is_pytree": False, "len": 4}))
    assert not marker.exists(), "planting ran the payload"


def hostile_folder(root, marker):
    """One folder with a payload under every name a loader looks for: TorchRL's storage layout at its root and in
    storage/, buffer_0/storage/ and rng_state/; pickles as prefetch.pkl, JSON metadata and transform.t; objects
    inside torch.save files named as this package's state files."""
    root.mkdir(parents=True)
    torchrl_storage_payload(root, marker)
    for sub in ("storage", "buffer_0/storage", "rng_state"):
        (root / sub).parent.mkdir(parents=True, exist_ok=True)
        torchrl_storage_payload(root / sub, marker)
    for name in ("prefetch.pkl", "mixed.json", "sampler_metadata.json", "buffer_metadata.json", "metadata.json"):
        (root / name).write_bytes(pickle.dumps(Marker(marker)))
    for name in ("transform.t", "trial_writer.pt", "replay_state.pt", "writer/trial_writer.pt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": "torchrl_amago.replay_dump.v1", "x": Marker(marker)}, root / name)
    return root


def public_classes():
    out = []
    for name in data.__all__:
        obj = getattr(data, name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            out.append(obj)
    return out


def loaders(obj):
    return sorted(n for n in dir(obj) if n.startswith("load") and callable(getattr(obj, n, None)))


def test_the_payload_runs_through_torchrl_own_storage_loads(tmp_path):
    """Control: the planted folder does run code through TorchRL's inherited path (so the test below is not
    vacuous)."""
    marker = tmp_path / "ran"
    torchrl_storage_payload(tmp_path / "p", marker)
    with pytest.warns(FutureWarning, match="pickled"):
        try:
            LazyMemmapStorage(16, scratch_dir=str(tmp_path / "s")).loads(tmp_path / "p")
        except RuntimeError:
            pass
    assert marker.exists()


def test_no_public_loader_runs_a_planted_payload(tmp_path):
    marker = tmp_path / "ran"
    folder = hostile_folder(tmp_path / "hostile", marker)
    classes = public_classes()
    with_loaders = [c for c in classes if loaders(c)]
    missing = [c.__name__ for c in with_loaders if c not in FACTORIES]
    assert not missing, f"add a factory for {missing}: every public class with a load* method is probed"
    calls = 0
    for cls in with_loaders:
        for target in (folder, folder / "storage"):
            for method in loaders(cls):
                obj = FACTORIES[cls](tmp_path / f"{cls.__name__}_{method}_{target.name}")
                try:
                    getattr(obj, method)(target)
                except Exception:  # noqa: BLE001 - refusing is the point; any error is fine, running code is not
                    pass
                calls += 1
                assert not marker.exists(), f"{cls.__name__}.{method}({target}) ran the planted payload"
    for name in PATH_LOADERS:
        for target in (folder, folder / "storage", folder / "replay_state.pt", folder / "metadata.json"):
            try:
                getattr(data, name)(target)
            except Exception:  # noqa: BLE001
                pass
            calls += 1
            assert not marker.exists(), f"{name}({target}) ran the planted payload"
    assert calls >= 2 * sum(len(loaders(c)) for c in with_loaders)
    # the storage and the buffer's own storage refuse TorchRL's format by name, before reading anything
    for storage in (TrialStorage(16, scratch_dir=str(tmp_path / "x")),
                    make_sequence_replay(16, 4, 2, scratch_dir=str(tmp_path / "y")).storage):
        for method in ("loads", "load"):
            with pytest.raises(data.UnsafeFileError, match="SequenceReplayBuffer.loads"):
                getattr(storage, method)(folder / "storage")
    assert not marker.exists()


def test_shared_init_is_refused(tmp_path):
    """shared_init=True makes other processes load_memmap the scratch folder: refused."""
    with pytest.raises(ValueError, match="shared_init"):
        TrialStorage(16, scratch_dir=str(tmp_path), shared_init=True)


def test_a_dump_still_loads_after_the_hostile_probe(tmp_path):
    """The refusals above do not cost the safe path anything: a dump of ours loads, and the same buffer's storage
    dumps TorchRL's format (writing runs nothing)."""
    rb = make_sequence_replay(16, 4, 2, scratch_dir=str(tmp_path / "a"))
    rb.extend(TensorDict({"observation": torch.arange(6.0).reshape(1, 6, 1),
                          ("next", "done"): (torch.arange(6) % 3 == 2).reshape(1, 6, 1)}, [1, 6]))
    rb.dumps(tmp_path / "dump")
    got = make_sequence_replay(16, 4, 2, scratch_dir=str(tmp_path / "b"))
    got.loads(tmp_path / "dump")
    assert got.trial_lengths().tolist() == [3, 3]
    rb.storage.dumps(tmp_path / "torchrl_format")
    assert (tmp_path / "torchrl_format" / "storage_metadata.json").exists()
    shutil.rmtree(tmp_path / "torchrl_format")
