"""Loads check a replay state for consistency before anything is written into the buffer (issue 65, item 3).

The probe's cases (reliability.md D15-D31, R40): an edited trial table (u_first + 40, u_len x 50, s_gpos + 1000), a
storage length of 1e6 in a buffer of 64, a write count of 1e9, a key ['..', '..', 'evil'], float32 relabelled int32
(same byte size), a batch size of -3 or 'abc' all loaded (some failed later inside sample(), some silently). Each is
planted by editing ``replay_state.pt`` of a real dump (a file of tensors and plain values, as the probe did); the load
must raise an error naming the file and the field, and leave the buffer as it was."""
import os

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.data import TrialWriter, load_tensors, make_sequence_replay
from torchrl_amago.data.replay_persist import (DUMP_STATE_FILE, STORAGE_DIR, ReplayStateError, UndoLog, leaf_check,
                                               replay_state, restore_replay, sync_storage)

CAP, T, B = 64, 8, 4


def batch(offset=0.0, steps=10):
    """Two envs x `steps` steps, trial ends at steps 4 and 9 (the probe's buffer)."""
    obs = offset + torch.arange(steps, dtype=torch.float32).expand(2, steps).unsqueeze(-1)
    return TensorDict({"observation": obs.clone(), ("next", "done"): (torch.arange(steps) % 5 == 4).expand(
        2, steps).unsqueeze(-1).clone()}, [2, steps])


@pytest.fixture
def dump(tmp_path):
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "src"))
    rb.extend(batch())
    rb.dumps(tmp_path / "dump")
    return tmp_path / "dump"


def _leaf(state, name):
    return next(leaf for leaf in state["storage"]["leaves"] if leaf["key"] == [name])


def _index(state):
    return state["writer"]["index"]


EDITS = {  # what the probe (or a damaged file) changes -> the field the error must name
    "u_first + 40": (lambda s: _index(s).update(u_first=_index(s)["u_first"] + 40), "writer.index.u_first"),
    "u_len x 50": (lambda s: _index(s).update(u_len=_index(s)["u_len"] * 50), "writer.index.u_len"),
    "s_gpos + 1000": (lambda s: _index(s).update(s_gpos=_index(s)["s_gpos"] + 1000), "writer.index.s_gpos"),
    "s_off + 1": (lambda s: _index(s).update(s_off=_index(s)["s_off"] + 1), "writer.index.s_off"),
    "unit ids shifted": (lambda s: _index(s).update(unit_base=7), "writer.index.s_unit"),
    "open unit 99": (lambda s: _index(s).update(env_unit=torch.tensor([-1, 99])), "writer.index.env_unit"),
    "u_first a float tensor": (lambda s: _index(s).update(u_first=_index(s)["u_first"].float()),
                               "writer.index.u_first"),
    "write count 1e9": (lambda s: s["writer"].update(_write_count=10**9), "writer._write_count"),
    "index write count + 5": (lambda s: _index(s).update(write_count=25), "writer._write_count"),
    "capacity 128": (lambda s: _index(s).update(capacity=128), "capacity_steps"),
    "storage len 1e6": (lambda s: s["storage"].update(len=10**6), "storage.len"),
    "storage len -5": (lambda s: s["storage"].update(len=-5), "storage.len"),
    "key ../../evil": (lambda s: s["storage"]["leaves"][0].update(key=["..", "..", "evil"]), "storage.leaves[0].key"),
    "observation float32 -> int32": (lambda s: _leaf(s, "observation").update(dtype="torch.int32"),
                                     "storage.leaves"),
    "observation shape [64, 2]": (lambda s: _leaf(s, "observation").update(shape=[CAP, 2]), "storage.leaves"),
    "batch size -3": (lambda s: s.update(batch_size=-3), "batch_size"),
    "batch size 'abc'": (lambda s: s.update(batch_size="abc"), "batch_size"),
    "rng 3 bytes": (lambda s: s.update(rng=torch.zeros(3, dtype=torch.uint8)), "rng"),
    "transform state of another transform": (lambda s: s.update(transform={"evil": torch.ones(1)}), "transform"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_an_inconsistent_state_is_refused_naming_file_and_field(tmp_path, dump, what):
    edit, field = EDITS[what]
    state = load_tensors(dump / DUMP_STATE_FILE)
    edit(state)
    torch.save(state, dump / DUMP_STATE_FILE)
    fresh = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "fresh"))
    with pytest.raises(ReplayStateError) as e:
        fresh.loads(dump)
    msg = str(e.value)
    assert str(dump / DUMP_STATE_FILE) in msg and field in msg, msg
    assert len(fresh) == 0 and fresh.num_trials() == 0 and not fresh.storage.initialized  # nothing was written
    held = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "held"))  # a buffer holding data already
    held.extend(batch(offset=100.0))
    before = held.storage[:20].clone()
    with pytest.raises(ReplayStateError):
        held.loads(dump)
    assert (held.storage[:20] == before).all() and held.trial_lengths().tolist() == [5, 5, 5, 5]


def test_a_relabelled_dtype_is_named_against_the_buffer_own_layout(tmp_path, dump):
    """An older dump has no layout checksums; a buffer that holds data compares the declared dtype with its own."""
    state = load_tensors(dump / DUMP_STATE_FILE)
    for leaf in state["storage"]["leaves"]:
        leaf.pop("check")
    _leaf(state, "observation")["dtype"] = "torch.int32"
    torch.save(state, dump / DUMP_STATE_FILE)
    held = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "held"))
    held.extend(batch(offset=100.0))
    with pytest.raises(ReplayStateError, match=r"key 'observation'.*torch\.int32.*this buffer's stored data.*float32"):
        held.loads(dump)


def test_the_untouched_dump_loads_and_samples(tmp_path, dump):
    got = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "ok"))
    got.loads(dump)
    assert got.trial_lengths().tolist() == [5, 5, 5, 5] and got.sample().batch_size[0] == B


def test_a_declared_size_is_checked_before_anything_is_allocated(tmp_path, dump, monkeypatch):
    """A consistent state (checksums recomputed) declaring observation [64, 2**32] float32 = 1 TiB, with a sparse file
    of that size: the fresh buffer would allocate 1 TiB in its folder. Refused from the declared size, before any
    memmap is made there."""
    state = load_tensors(dump / DUMP_STATE_FILE)
    leaf = _leaf(state, "observation")
    leaf["shape"] = [CAP, 2**32]
    leaf["check"] = leaf_check(leaf["key"], leaf["dtype"], leaf["shape"], leaf["file"])
    torch.save(state, dump / DUMP_STATE_FILE)
    os.truncate(dump / STORAGE_DIR / "observation.memmap", CAP * 2**32 * 4)  # sparse: no disk used
    fresh = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "fresh"))
    with pytest.raises(ReplayStateError, match=r"storage.leaves: the dump's layout needs \d+ bytes"):
        fresh.loads(dump)
    assert not fresh.storage.initialized
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").rglob("*.memmap"))


def test_restore_in_place_checks_the_checkpoint_state(tmp_path):
    """The trainer's resume path (restore_replay) runs the same checks (reliability.md R40: len 1e7 was accepted)."""
    gen = tmp_path / "gen"
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(gen / STORAGE_DIR))
    rb.extend(batch())
    sync_storage(rb)
    state = replay_state(rb)
    state["storage"]["len"] = 10**7
    with pytest.raises(ReplayStateError, match="storage.len: 10000000 stored steps"):
        restore_replay(make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "x")), state, gen)
    state = replay_state(rb)
    restored = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "y"))
    restore_replay(restored, state, gen)
    assert restored.trial_lengths().tolist() == [5, 5, 5, 5]


def test_an_undo_file_is_checked_before_a_row_is_written_back(tmp_path):
    gen = tmp_path / "gen"
    rb = make_sequence_replay(20, T, B, scratch_dir=str(gen / STORAGE_DIR))
    undo = UndoLog(rb, gen).install()
    rb.extend(batch())  # 20 steps: full
    sync_storage(rb)
    state = replay_state(rb)
    undo.protect(20)
    rb.extend(batch(offset=50.0))  # overwrites every checkpointed row: saved to the undo log first
    files = undo.files()
    assert len(files) == 1
    entry = load_tensors(files[0])
    entry["gpos"] = entry["gpos"] + 1000
    torch.save(entry, files[0])
    with pytest.raises(ReplayStateError, match=f"{files[0].name}.*gpos: positions outside"):
        restore_replay(make_sequence_replay(20, T, B, scratch_dir=str(tmp_path / "z")), state, gen)
    entry["gpos"] = entry["gpos"] - 1000
    entry["values"][0] = entry["values"][0].double()
    torch.save(entry, files[0])
    with pytest.raises(ReplayStateError, match="values: key"):
        restore_replay(make_sequence_replay(20, T, B, scratch_dir=str(tmp_path / "w")), state, gen)
    entry["values"][0] = entry["values"][0].float()
    torch.save(entry, files[0])
    again = make_sequence_replay(20, T, B, scratch_dir=str(tmp_path / "v"))
    assert restore_replay(again, state, gen)["restored_rows"] == 20


def test_trial_writer_loads_names_the_file_and_field(tmp_path):
    writer = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "a"))._writer
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "b"))
    rb.extend(batch())
    rb._writer.dumps(tmp_path / "w")
    state = TrialWriter.read(tmp_path / "w")
    state["index"]["s_gpos"] = state["index"]["s_gpos"] + 1000
    torch.save(state, tmp_path / "w" / "trial_writer.pt")
    with pytest.raises(ValueError, match=r"trial_writer.pt: index.s_gpos: entry 0"):
        writer.loads(tmp_path / "w")
    assert writer.index.num_units == 0


def test_a_pickle_record_beyond_the_cap_is_refused_from_its_declared_size(tmp_path, monkeypatch):
    """Z01/Z02: a torch.save zip whose data.pkl is 64 MiB of NONE opcodes (stored: 67 MB; deflated: ~66 KB) cost
    load_tensors 77 s and 1 GB before it returned None. The declared sizes are now checked before anything is read
    (a record over MAX_PICKLE_BYTES; a compressed record declaring more than the file holds, which torch.save never
    writes), and a record under the cap is refused once its stack holds MAX_PICKLE_STACK values."""
    import zipfile

    import torchrl_amago.data.safe_files as safe_files

    def bomb(name, n, compression):
        with zipfile.ZipFile(tmp_path / name, "w", compression=compression) as z:
            z.writestr("bomb/data.pkl", b"\x80\x02" + b"N" * n + b".")
            z.writestr("bomb/version", b"3\n")
        return tmp_path / name

    deflated = bomb("deflated.pt", 2**26, zipfile.ZIP_DEFLATED)
    assert deflated.stat().st_size < 100_000
    with pytest.raises(safe_files.UnsafeFileError, match=r"deflated\.pt declares 67108869 bytes \(67108867 of pickle "
                                                         r"record, at most MAX_PICKLE_BYTES=2097152\) in a \d+-byte "
                                                         r"file; refused before reading it"):
        load_tensors(deflated)
    with pytest.raises(safe_files.UnsafeFileError, match=r"compressed records declaring more than the file holds"):
        load_tensors(bomb("small_deflated.pt", 2**20, zipfile.ZIP_DEFLATED))
    stored = bomb("stored.pt", safe_files.MAX_PICKLE_BYTES - 3, zipfile.ZIP_STORED)  # just under the cap
    with pytest.raises(safe_files.UnsafeFileError, match=r"stored\.pt: its pickle stream holds more than "
                                                         r"MAX_PICKLE_STACK=100000 values at once"):
        load_tensors(stored)
    monkeypatch.setattr(safe_files, "available_memory", lambda: 2**20)  # records must fit in memory
    with pytest.raises(safe_files.UnsafeFileError, match=r"more than the 1048576 bytes of memory available"):
        load_tensors(stored)
