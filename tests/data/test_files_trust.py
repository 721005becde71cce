"""Trust, round three (issue 83), for the replay's files: a dump's declared layout is checked against what the
replay writes, a killed ``dumps`` leaves nothing behind for good, a full disk is an error naming the file (never a
SIGBUS), ``mixed.json`` is checked before any buffer is replaced, and a memmap with another name is never written.
Case numbers are the probe's (shared/reviews/reliability.md)."""
import errno
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tests.data.test_dump_atomic import CAP, ROOT, B, T, batch, filled, loaded
from torchrl_amago.data import MixedReplay, make_sequence_replay, replay_dump, writer
from torchrl_amago.data.replay_persist import (DUMP_STATE_FILE, ReplayStateError, leaf_check, replay_state,
                                               restore_replay)
from torchrl_amago.data.safe_files import load_tensors


def _relabel(dump, edits: dict):
    """Rewrite the dump's state: each stored key in `edits` gets that dtype, with its checksum recomputed (the
    checksum is not a key: anyone can recompute it)."""
    f = dump / DUMP_STATE_FILE
    state = load_tensors(f)
    for leaf in state["storage"]["leaves"]:
        new = edits.get("/".join(leaf["key"]))
        if new is not None:
            leaf["dtype"] = new
            leaf["check"] = leaf_check(leaf["key"], leaf["dtype"], leaf["shape"], leaf["file"])
    torch.save(state, f)


def _with_next(offset):
    b = batch(offset)
    b["next", "observation"] = b["observation"] + 1
    return b


# ---------------------------------------------------------------- a dump's layout against what the replay writes
def test_a_relabelled_dtype_is_refused_against_its_next_step_twin(tmp_path):
    """N01: observation relabelled float32 -> int32 (checksum recomputed) loaded and sampled reinterpreted bits
    (1.1e9). ``observation`` and ``("next", "observation")`` hold the same env output one step apart."""
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "a"))
    rb.extend(_with_next(0.0))
    rb.dumps(tmp_path / "dump")
    _relabel(tmp_path / "dump", {"observation": "torch.int32"})
    with pytest.raises(ReplayStateError, match=r"storage.leaves \(key 'observation'\): the dump declares torch.int32 "
                                               r"\[64, 1\], but 'next/observation' torch.float32 \[64, 1\]; .* one was "
                                               r"relabelled"):
        loaded(tmp_path, tmp_path / "dump")


def test_a_relabelled_dump_loads_only_as_its_word_and_refuses_real_data(tmp_path):
    """Both twins relabelled: a fresh buffer has nothing to compare with and takes the dump's word, but the first
    real batch (float32) is refused by key instead of being cast into int32 memmaps."""
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "a"))
    rb.extend(_with_next(0.0))
    rb.dumps(tmp_path / "dump")
    _relabel(tmp_path / "dump", {"observation": "torch.int32", "next/observation": "torch.int32"})
    fresh = loaded(tmp_path, tmp_path / "dump")
    n = len(fresh)
    with pytest.raises(ValueError, match=r"extend\(\): key 'observation' holds torch.float32, the replay stores "
                                         r"torch.int32 .*nothing was stored"):
        fresh.extend(_with_next(100.0))
    assert len(fresh) == n and fresh._writer.index.write_count == n
    holding = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "b"))  # holding data: layouts compared
    holding.extend(_with_next(0.0))
    with pytest.raises(ReplayStateError, match=r"key 'next/observation'\): the dump holds \('torch.int32', \[64, 1\]\), "
                                               r"this buffer's stored data \('torch.float32', \[64, 1\]\)"):
        holding.loads(tmp_path / "dump")


@pytest.mark.parametrize("key, dtype", [("replay/step", "torch.float64"), ("replay/trial_id", "torch.float64"),
                                        ("next/done", "torch.uint8")])
def test_the_keys_the_replay_writes_keep_their_dtype(tmp_path, key, dtype):
    filled(tmp_path, "a", 0.0).dumps(tmp_path / "dump")
    _relabel(tmp_path / "dump", {key: dtype})
    with pytest.raises(ReplayStateError, match=rf"key '{key}'\): the dump declares {dtype} .*, but the replay writes "
                                               rf"it as torch\.(int64|bool)"):
        loaded(tmp_path, tmp_path / "dump")


def test_stored_trial_keys_must_match_the_trial_table(tmp_path):
    """A memmap holding other data than the table describes (here every trial id zeroed) is refused by slot."""
    filled(tmp_path, "a", 0.0).dumps(tmp_path / "dump")
    ids = tmp_path / "dump" / "storage" / "replay" / "trial_id.memmap"
    ids.write_bytes(bytes(ids.stat().st_size))
    with pytest.raises(ReplayStateError, match=r"replay key 'replay/trial_id': slot 5 holds 0, but the trial table "
                                               r"stores unit 1 there"):  # trials of 5 steps: slot 5 is unit 1's
        loaded(tmp_path, tmp_path / "dump")


def test_a_memmap_with_another_name_is_never_written_on_restore(tmp_path):
    """N30 at the replay's level: restore_replay maps the memmaps writable, so a hard link is refused."""
    rb = filled(tmp_path, "gen/storage", 0.0)
    state = replay_state(rb)
    f = tmp_path / "gen" / "storage" / "observation.memmap"
    os.link(f, tmp_path / "outside.bin")
    fresh = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "x"))
    with pytest.raises(ReplayStateError, match=rf"replay file {f} \(key 'observation'\) has 2 hard links"):
        restore_replay(fresh, state, tmp_path / "gen")


# ---------------------------------------------------------------- a killed dumps leaves nothing for good
def _stale(tmp_path, name, files=("storage/observation.memmap", DUMP_STATE_FILE + ".tmp")):
    d = tmp_path / name
    for f in files:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_bytes(b"\0" * 64)
    return d


def test_a_later_dump_removes_the_temporary_folders_of_killed_ones_and_only_those(tmp_path):
    """N05: each kill during a copy left a hidden .P.tmp-XXXX folder (473 MB after 8 kills) that nothing removed.
    A later dumps(P) removes those that are provably a killed dump's: beside P, named for P, unlocked (a dumps
    in progress holds its folder's flock), holding only what a dump writes."""
    rb = filled(tmp_path, "a", 0.0)
    stale = _stale(tmp_path, ".dump.tmp-killed1")
    live = _stale(tmp_path, ".dump.tmp-live")
    foreign = _stale(tmp_path, ".dump.tmp-mine", files=("notes.txt",))
    other = _stale(tmp_path, ".other.tmp-killed")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a dumps writing it now
    try:
        rb.dumps(tmp_path / "dump")
    finally:
        os.close(fd)
    assert not stale.exists()
    assert live.exists() and foreign.exists() and other.exists()
    assert loaded(tmp_path, tmp_path / "dump").trial_lengths().tolist() == [5, 5, 5, 5]


def test_an_earlier_dump_moved_aside_is_kept_until_the_target_exists(tmp_path):
    """.P.old-XXXX (an earlier dump renamed aside where renameat2 is missing) is the only copy while P is missing."""
    rb = filled(tmp_path, "a", 0.0)
    rb.dumps(tmp_path / "first")
    old = tmp_path / ".dump.old-x"
    shutil.copytree(tmp_path / "first", old)
    replay_dump.remove_stale_folders(tmp_path / "dump")
    assert old.exists()
    rb.dumps(tmp_path / "dump")
    assert not old.exists()


KILL_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from torchrl_amago.data import make_sequence_replay
    from tests.data.test_dump_atomic import batch
    tmp = Path(sys.argv[1])
    rb = make_sequence_replay(200_000, 4, 4, scratch_dir=str(tmp / sys.argv[2]))
    for i in range(20):
        rb.extend(batch(float(i), n_env=50, steps=200))
    print("ready", flush=True)
    while True:
        rb.dumps(tmp / "dump")
""")


@pytest.mark.slow
def test_eight_kills_during_dumps_leave_one_good_dump_and_no_hidden_folder(tmp_path):
    """The probe's loop (dk.py): kill -9 a process that dumps over a good dump, 8 times, at random moments."""
    rng = random.Random(0)
    good = filled(tmp_path, "good", 0.0)
    good.dumps(tmp_path / "dump")
    midway = 0  # kills that left a dump's temporary folder (the next dumps removes it)
    for i in range(8):
        p = subprocess.Popen([sys.executable, "-c", KILL_CHILD.format(root=str(ROOT)), str(tmp_path), f"child{i}"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        midway += any(q.name.startswith(".dump.tmp-") for q in tmp_path.iterdir())
    assert midway  # some kills hit dumps midway (a dumps is mostly copying and fsyncing)
    good.dumps(tmp_path / "dump")
    assert not [q.name for q in tmp_path.iterdir() if q.name.startswith(".dump.")]
    assert loaded(tmp_path, tmp_path / "dump").trial_lengths().tolist() == [5, 5, 5, 5]


# ---------------------------------------------------------------- a full disk names the file
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_replay_is_an_error_naming_the_memmap_and_nothing_is_stored(tmp_path, monkeypatch):
    """N44: a full disk under the sparse memmaps killed the process with SIGBUS. The rows a write will touch are
    reserved first (posix_fallocate, ahead by doubling; here the reservation fails as on a full disk): an OSError
    names the file and the write stores nothing."""
    rb = make_sequence_replay(4096, T, B, scratch_dir=str(tmp_path / "a"))
    rb.extend(batch(0.0))  # 20 rows: rows 0..1024 reserved
    before = (len(rb), rb._writer.index.write_count, rb.trial_lengths().tolist())
    monkeypatch.setattr(writer.os, "posix_fallocate", _enospc)
    rb.extend(batch(0.0, n_env=50, steps=20))  # rows 20..1020: reserved already, no call
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'a'}/.*\.memmap \(No space left on device.*\); "
                                      r"rows 1024..2048 of the replay's storage need \d+ more bytes in it; nothing "
                                      r"of this batch was stored") as e:
        rb.extend(batch(100.0))
    assert e.value.errno == errno.ENOSPC
    assert (len(rb), rb._writer.index.write_count) == (before[0] + 1000, before[1] + 1000)
    monkeypatch.undo()
    rb.extend(batch(100.0))  # space again: the write goes through
    assert rb._writer.index.write_count == 1040


def test_the_rows_are_reserved_once_and_the_files_hold_them(tmp_path):
    """After a write the memmaps' blocks for the rows written so far are allocated (not sparse): a write there can
    never meet a full disk. Beyond what is reserved the files stay sparse."""
    rb = make_sequence_replay(8192, T, B, scratch_dir=str(tmp_path / "a"))
    rb.extend(batch(0.0, n_env=8, steps=256))  # 2048 rows
    f = tmp_path / "a" / "observation.memmap"
    assert f.stat().st_blocks * 512 >= 2048 * 4  # float32 x 1 per row, allocated
    assert f.stat().st_blocks * 512 < 8192 * 4  # the rest is still sparse


def test_a_full_disk_while_dumping_names_the_file_and_keeps_the_earlier_dump(tmp_path, monkeypatch):
    good = filled(tmp_path, "good", 0.0)
    good.dumps(tmp_path / "dump")
    monkeypatch.setattr(replay_dump.shutil, "copyfile", _enospc)
    with pytest.raises(OSError, match=rf"dumps\({tmp_path / 'dump'}\) failed: could not write .*/storage/.*\.memmap "
                                      rf"\(No space left on device.*; {tmp_path / 'dump'} was left as it was"):
        filled(tmp_path, "other", 1000.0).dumps(tmp_path / "dump")
    monkeypatch.undo()
    assert not [q.name for q in tmp_path.iterdir() if q.name.startswith(".dump.")]
    assert float(loaded(tmp_path, tmp_path / "dump").storage[:40]["observation"].max()) == 9.0


# ---------------------------------------------------------------- mixed.json checked before anything is replaced
@pytest.mark.parametrize("meta, named", [({"num_batches": "abc", "weights": [0.5, 0.5]}, "num_batches must be an "
                                          "integer >= 0, got 'abc'"),
                                         ({"num_batches": 3, "weights": [0.5, "x"]}, "weights: weights must be 2 "
                                          "finite non-negative numbers, got \\[0.5, 'x'\\]"),
                                         ({"num_batches": 3}, "weights: weights must be 2")])
def test_a_bad_mixed_json_field_is_named_before_any_buffer_is_replaced(tmp_path, meta, named):
    """X03: num_batches 'abc' raised a bare ValueError after both buffers were already replaced."""
    import json

    MixedReplay([filled(tmp_path, "a", 0.0), filled(tmp_path, "b", 100.0)], [0.5, 0.5]).dumps(tmp_path / "m")
    (tmp_path / "m" / "mixed.json").write_text(json.dumps(meta))
    target = MixedReplay([filled(tmp_path, "c", 500.0), make_sequence_replay(CAP, T, B, scratch_dir=str(
        tmp_path / "d"))], [1.0, 0.0])
    with pytest.raises(ValueError, match=rf"{tmp_path / 'm' / 'mixed.json'}: {named}.*nothing was loaded"):
        target.loads(tmp_path / "m")
    assert len(target.buffers[0]) == 20 and float(target.buffers[0].storage[:20]["observation"].min()) == 500.0
    assert len(target.buffers[1]) == 0 and target.weights.tolist() == [1.0, 0.0]


def test_a_bad_second_buffer_is_found_before_the_first_is_replaced(tmp_path):
    MixedReplay([filled(tmp_path, "a", 0.0), filled(tmp_path, "b", 100.0)], [0.5, 0.5]).dumps(tmp_path / "m")
    (tmp_path / "m" / "buffer_1" / "storage" / "observation.memmap").write_bytes(b"")
    target = MixedReplay([filled(tmp_path, "c", 500.0), filled(tmp_path, "d", 600.0)], [1.0, 0.0])
    with pytest.raises(ReplayStateError, match=r"buffer_1.*observation.memmap"):
        target.loads(tmp_path / "m")
    assert float(target.buffers[0].storage[:20]["observation"].min()) == 500.0  # untouched
