"""``dumps`` is atomic and never deletes what it did not write (issue 65, item 2).

The probe's cases (reliability.md DK1, D33, D34): a ``dumps(P)`` killed 0.3 s in left P with only ``storage/`` (the
earlier dump lost), and ``dumps(P)`` over an earlier dump deleted a user's file in ``P/storage/``. Here a real
SIGKILL hits a child process at chosen points of a second dump (during the memmap copies, after the new dump is
complete but before it is put in place), an exception hits it in-process, and the earlier dump must load intact."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.data import MixedReplay, make_sequence_replay
from torchrl_amago.data import replay_dump

ROOT = Path(__file__).resolve().parents[2]
CAP, T, B = 64, 4, 4


def batch(offset: float, n_env: int = 2, steps: int = 10) -> TensorDict:
    """n_env envs x steps steps, trials ending at steps 4 and 9, observations offset + step."""
    obs = offset + torch.arange(steps, dtype=torch.float32).expand(n_env, steps).unsqueeze(-1)
    done = (torch.arange(steps) % 5 == 4).expand(n_env, steps).unsqueeze(-1)
    return TensorDict({"observation": obs.clone(), ("next", "done"): done.clone()}, [n_env, steps])


def filled(tmp_path, name, offset):
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / name))
    rb.extend(batch(offset))
    return rb


def loaded(tmp_path, path, name="check"):
    rb = make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / name))
    rb.loads(path)
    return rb


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.data.test_dump_atomic import filled
    from torchrl_amago.data import replay_dump
    from pathlib import Path
    tmp, target, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    rb = filled(tmp, "child", 1000.0)
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "copy":  # SIGKILL after the first memmap was copied
        real = replay_dump.shutil.copyfile
        def copy_then_die(src, dst):
            real(src, dst)
            die()
        replay_dump.shutil.copyfile = copy_then_die
    elif point == "put_in_place":  # the new dump is complete beside the target, not yet renamed into place
        replay_dump._exchange = die
        replay_dump.os.rename = die
    elif point == "between_renames":  # no atomic exchange: killed after the earlier dump was renamed aside
        replay_dump._exchange = lambda a, b: False
        real_rename = os.rename
        def rename(a, b):
            real_rename(a, b)
            if ".old-" in str(b):
                die()
        replay_dump.os.rename = rename
    rb.dumps(target)
    print("not killed")
""")


@pytest.mark.parametrize("point", ["copy", "put_in_place"])
def test_a_dump_killed_midway_leaves_the_earlier_dump_whole(tmp_path, point):
    good = filled(tmp_path, "good", 0.0)
    target = tmp_path / "dump"
    good.dumps(target)
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(tmp_path), str(target), point],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    rb = loaded(tmp_path, target)
    assert rb.trial_lengths().tolist() == [5, 5, 5, 5]
    assert (rb.storage[: len(rb)]["observation"] == good.storage[: len(good)]["observation"]).all()
    assert float(rb.storage[: len(rb)]["observation"].max()) == 9.0  # the earlier data, not the child's 1000+
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".dump.tmp-")]
    assert len(leftovers) == 1  # the killed dump's folder, beside the target (N05: it stayed there forever)
    good.dumps(target)  # the target can be dumped over again, and the killed dump's folder goes
    assert loaded(tmp_path, target, "again").trial_lengths().tolist() == [5, 5, 5, 5]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".dump.")]


def test_without_an_atomic_exchange_a_kill_between_renames_keeps_both_dumps(tmp_path):
    """Where renameat2(RENAME_EXCHANGE) is not available the earlier dump is renamed aside first; a kill between the
    two renames leaves the target missing but both complete dumps beside it (documented in write_folder)."""
    good = filled(tmp_path, "good", 0.0)
    target = tmp_path / "dump"
    good.dumps(target)
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(tmp_path), str(target),
                           "between_renames"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not target.exists()
    old = [p for p in tmp_path.iterdir() if p.name.startswith(".dump.old-")]
    new = [p for p in tmp_path.iterdir() if p.name.startswith(".dump.tmp-")]
    assert len(old) == len(new) == 1
    assert float(loaded(tmp_path, old[0], "o").storage[:40]["observation"].max()) == 9.0
    assert float(loaded(tmp_path, new[0], "n").storage[:40]["observation"].min()) == 1000.0


def test_an_exception_while_dumping_leaves_the_earlier_dump_and_no_temporary_folder(tmp_path, monkeypatch):
    good = filled(tmp_path, "good", 0.0)
    target = tmp_path / "dump"
    good.dumps(target)
    other = filled(tmp_path, "other", 1000.0)

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(replay_dump, "save_durably", fail)  # every memmap copied, then the state file fails
    with pytest.raises(OSError, match="No space left"):
        other.dumps(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "good", "other"]  # the temporary folder is gone
    assert float(loaded(tmp_path, target).storage[:40]["observation"].max()) == 9.0
    other.dumps(target)  # replaced only now
    assert float(loaded(tmp_path, target, "c2").storage[:40]["observation"].min()) == 1000.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2", "check", "dump", "good", "other"]


@pytest.mark.parametrize("planted", ["storage/mine/data.bin", "notes.txt", "storage/extra.memmap"])
def test_a_folder_holding_anything_but_our_dump_is_refused_and_kept(tmp_path, planted):
    """D34 (a user's file in P/storage/ was deleted) and D33 (notes.txt beside a dump): dumps refuses, naming the
    folder and the file, and writes or deletes nothing."""
    good = filled(tmp_path, "good", 0.0)
    target = tmp_path / "dump"
    good.dumps(target)
    user = target / planted
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_bytes(b"mine")
    before = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="not a replay dump") as e:
        filled(tmp_path, "other", 1000.0).dumps(target)
    assert str(target) in str(e.value) and planted.split("/")[-1] in str(e.value)
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dump.")]


def test_targets_that_are_not_folders_or_hold_the_buffer_itself_are_refused(tmp_path):
    rb = filled(tmp_path, "good", 0.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        rb.dumps(tmp_path / "file")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="symlink"):
        rb.dumps(tmp_path / "link")
    for own in (tmp_path / "good", tmp_path):  # the scratch folder itself, or a folder holding it
        with pytest.raises(ValueError, match="own memmaps"):
            rb.dumps(own)
    assert rb.trial_lengths().tolist() == [5, 5, 5, 5]
    rb.dumps(tmp_path / "new" / "deeper")  # a new folder (parents made) and an empty one are fine
    (tmp_path / "empty").mkdir()
    rb.dumps(tmp_path / "empty")
    assert oct(os.stat(tmp_path / "empty").st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_mixed_replay_dumps_are_atomic_and_refuse_foreign_folders(tmp_path, monkeypatch):
    mixed = MixedReplay([filled(tmp_path, "a", 0.0), filled(tmp_path, "b", 100.0)], [0.5, 0.5], batch_size=4)
    target = tmp_path / "mixed"
    mixed.dumps(target)
    mixed.dumps(target)  # an earlier mixed dump is replaced
    (target / "buffer_1" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a mixed replay dump"):
        mixed.dumps(target)
    (target / "buffer_1" / "notes.txt").unlink()
    monkeypatch.setattr(replay_dump, "save_durably", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        mixed.dumps(target)
    monkeypatch.undo()
    restored = MixedReplay([make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "c")),
                            make_sequence_replay(CAP, T, B, scratch_dir=str(tmp_path / "d"))], [1.0, 0.0])
    restored.loads(target)
    assert restored.weights.tolist() == [0.5, 0.5] and restored.num_trials() == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mixed.")]
