"""A run folder belongs to one run (issue 65): one process holds it, its name is a name, nothing in it is a link, a
resume continues only what is provably this run (identity, settings, counters against the stored data, weights and
optimizer state against the model), and a write that fails keeps the last good checkpoint. Every refusal names the
file, field or flag, and changes nothing in the run."""
import hashlib
import os
import runpy
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from tests.trainers.test_reliability import H, cfg_, env_, run_dir
from torchrl_amago.data.safe_files import MAX_PICKLE_BYTES, load_tensors
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, TrainConfig
from torchrl_amago.trainers.run import checkpoint as ckpt_mod
from torchrl_amago.trainers.run.guards import check_run_args
from torchrl_amago.trainers.run.run_dir import RunDirError


def trainer(root, make_eval_env=None, settings=None, **kw):
    """A small T-Maze trainer on <root>/r (built here: the run's script is this file)."""
    return AMAGOTrainer(cfg_(root, **kw), env_, make_eval_env, settings=settings)


def resume_fresh(root, **kw):
    t = trainer(root, **kw)
    assert t.resume()
    return t


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A stopped 2-epoch run (<root>/r), copied by each test that plants a fault in it."""
    root = tmp_path_factory.mktemp("base")
    tr = trainer(root)
    tr.train(epochs=2)
    tr.close()
    return root


def copy_of(base, tmp_path):
    shutil.copytree(base, tmp_path, dirs_exist_ok=True, symlinks=True)
    return run_dir(tmp_path)


def contents(root) -> dict:
    """Every file of a run (the lock file aside) with its bytes' hash: what a refusal must leave as it was."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != "run.lock"}


def refused(tmp_path, match, error=CheckpointError, **kw):
    """A trainer on the run refuses it at construction or resume (naming `match`); nothing of the run changed."""
    before = contents(run_dir(tmp_path))
    t = None
    with pytest.raises(error, match=match):
        t = trainer(tmp_path, **kw)
        t.resume()
    if t is not None:
        t.close()
    assert contents(run_dir(tmp_path)) == before


# ---------------------------------------------------------------- the folder: a name, one holder, plain files
@pytest.mark.parametrize("name", ["../escape", "..", "", ".", "a/b", "/tmp/absolute"])
def test_a_run_name_is_a_name(tmp_path, name):
    with pytest.raises(ValueError, match="--run_name must be a folder name"):
        TrainConfig(run_name=name, buffer_dir=str(tmp_path / "bd"))
    assert not os.path.exists(tmp_path / "bd") and not os.path.exists("/tmp/absolute")


def test_a_second_trainer_on_a_run_is_refused_until_the_first_closes(tmp_path):
    first = trainer(tmp_path)
    with pytest.raises(RunDirError, match=rf"{run_dir(tmp_path)} is in use by another trainer \(pid {os.getpid()} "
                                          rf"on host .* since .*\).*--run_name"):
        trainer(tmp_path)
    first.close()
    trainer(tmp_path).close()


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {os.getpid()} on host elsewhere since then".encode())
print("held", flush=True)
time.sleep(600)
"""


def test_another_process_is_named_and_the_lock_of_a_dead_one_is_taken_over(tmp_path):
    os.makedirs(run_dir(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir(tmp_path) / "run.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by another trainer \\(pid {holder.pid} on host elsewhere"):
            trainer(tmp_path)
    finally:
        holder.kill()  # SIGKILL: the kernel releases its flock, the file keeps its text
        holder.wait()
    t = trainer(tmp_path)
    assert (run_dir(tmp_path) / "run.lock").read_text().startswith(f"pid {os.getpid()} ")
    t.close()


@pytest.mark.parametrize("link", ["", "buffer/0/storage", "ckpts/latest.pt", "logs/metrics.csv", "ckpts"])
def test_nothing_of_a_run_is_followed_through_a_symlink(base, tmp_path, link):
    run = copy_of(base, tmp_path / "runs")
    target = run / link
    outside = tmp_path / "outside"
    shutil.move(target, outside)
    os.symlink(outside, target)
    kept = contents(outside) if outside.is_dir() else outside.read_bytes()
    with pytest.raises(RunDirError, match=f"{target} is a symlink"):
        trainer(tmp_path / "runs")
    assert (contents(outside) if outside.is_dir() else outside.read_bytes()) == kept


def test_a_fifo_in_a_run_is_refused(base, tmp_path):
    run = copy_of(base, tmp_path)
    os.mkfifo(run / "logs" / "pipe")
    refused(tmp_path, "pipe is not a regular file or folder", RunDirError)


# ---------------------------------------------------------------- identity: resume only this run
def test_the_checkpoint_of_another_run_is_refused(base, tmp_path):
    other = trainer(tmp_path / "other")  # same config, another run
    other.train(epochs=1)
    other.close()
    run = copy_of(base, tmp_path / "mine")
    shutil.copy(run_dir(tmp_path / "other") / "ckpts" / "latest.pt", run / "ckpts" / "latest.pt")
    refused(tmp_path / "mine", r"belongs to run \w+, but .* is run \w+ \(run.json\): it comes from another run")


def test_the_checkpoint_of_a_later_state_of_the_run_is_refused(base, tmp_path):
    """A copy of the run trained on: its checkpoint describes replay rows this folder never received."""
    copy_of(base, tmp_path / "copy")
    later = resume_fresh(tmp_path / "copy")
    later.train(epochs=4)
    later.close()
    run = copy_of(base, tmp_path / "mine")
    for f in ("ckpts/latest.pt", "logs/metrics.csv"):  # (the log alone would already not match)
        shutil.copy(run_dir(tmp_path / "copy") / f, run / f)
    refused(tmp_path / "mine", r"names replay commit '\w+', but commits.json there records \[.*\]: the folder "
                               r"holds other data")


def test_the_settings_that_define_a_run_are_compared(base, tmp_path):
    copy_of(base, tmp_path)

    def refused_with(match, **kw):
        before = contents(run_dir(tmp_path))
        with pytest.raises(RunDirError, match=match):
            AMAGOTrainer(cfg_(tmp_path), env_, None, **kw)
        assert contents(run_dir(tmp_path)) == before

    refused_with(r"holds another run \(run.json\):\n  horizon: the run's None, now 7\n.*own --run_name",
                 settings={"horizon": 7})
    refused_with(r"env_name: the run's 'env', now 'TMaze-7'", env_name="TMaze-7")
    refused_with(r"rollout_horizon: the run's None, now 4", rollout_horizon=H + 1)
    resume_fresh(tmp_path).close()  # the run's own settings resume


def test_a_checkpoint_without_identity_is_adopted_once(base, tmp_path):
    run = copy_of(base, tmp_path)
    (run / "run.json").unlink()  # a run of an earlier release
    latest = run / "ckpts" / "latest.pt"
    ckpt = load_tensors(latest)
    del ckpt["run"]
    torch.save(ckpt, latest)
    r = resume_fresh(tmp_path)
    r.train(epochs=3)
    r.close()
    assert load_tensors(latest)["run"]["run_id"] in (run / "run.json").read_text()
    resume_fresh(tmp_path).close()


SCRIPT = """
from tests.trainers.test_run_dir import cfg_, env_
from torchrl_amago.trainers import AMAGOTrainer
AMAGOTrainer(cfg_(ROOT, epochs=1, run_name="amago"), env_, None).run()
"""


def test_a_second_script_never_resumes_the_first_ones_run(tmp_path, capsys):
    """Issue 66: two scripts with the default run name; the run folder is config.run_name, the second is refused."""
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(SCRIPT)
    runpy.run_path(str(tmp_path / "a.py"), init_globals={"ROOT": tmp_path})
    assert '"example": "a"' in capsys.readouterr().out
    with pytest.raises(RunDirError, match=r"script: the run's 'a.py', now 'b.py'\n.*own --run_name"):
        runpy.run_path(str(tmp_path / "b.py"), init_globals={"ROOT": tmp_path})
    runpy.run_path(str(tmp_path / "a.py"), init_globals={"ROOT": tmp_path})  # the first script resumes its own
    with pytest.raises(TypeError, match=r"run\('my_run'\): run\(\) takes no name; .* config.run_name"):
        trainer(tmp_path / "c").run("my_run")


# ---------------------------------------------------------------- the checkpoint against itself and the run
def _set(*path, value):
    def edit(ckpt):
        d = ckpt
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value(d[path[-1]]) if callable(value) else value
    return edit


def _nan_weight(ckpt):
    next(v for v in ckpt["loss"].values() if v.is_floating_point()).fill_(float("nan"))


def _int_weights(ckpt):
    ckpt["loss"] = {k: v.long() if v.is_floating_point() else v for k, v in ckpt["loss"].items()}


def _optimizer(fn):
    def edit(ckpt):
        for s in ckpt["optimizer"]["state"].values():
            s["exp_avg"] = fn(s["exp_avg"])
    return edit


CORRUPT = {  # edit of latest.pt -> what the refusal names
    "env_steps 1e12": (_set("counters", "env_steps", value=10 ** 12),
                       r"counters.env_steps is 1000000000000, but the replay holds 16 written steps"),
    "epoch 1.5": (_set("counters", "epoch", value=1.5), r"counters must hold .* integers >= 0, got .*'epoch': 1.5"),
    "epoch -5": (_set("counters", "epoch", value=-5), r"counters must hold .* integers >= 0, got .*'epoch': -5"),
    "epoch True": (_set("counters", "epoch", value=True), r"counters must hold"),
    "epoch 1": (_set("counters", "epoch", value=1), r"counters \(epoch 1, env_steps 16, .*\) do not match .*metrics"),
    "epoch 0": (_set("counters", "epoch", value=0), r"counters \(epoch 0, .*\) do not match .*metrics.csv \(epochs up"),
    "epoch 7": (_set("counters", "epoch", value=7),
                r"counters \(epoch 7, .*\) do not match .*metrics.csv \(epochs up to 1; at the end of epoch 6: None\)"),
    "counters missing": (_set("counters", value={"epoch": 2}), r"counters must hold"),
    "grad_steps": (_set("counters", "grad_steps", value=lambda g: g + 1),
                   r"scheduler.last_epoch is (\d+), counters.grad_steps \d+: they must be equal"),
    "config 'oops'": (_set("config", value="oops"), r"entry 'config' must be a dict of flags, got 'oops'"),
    "replay_generation": (_set("replay_generation", value="../../x"),
                          r"replay_generation must be an integer >= 0, got '../../x'"),
    "storage len": (_set("replay", "storage", "len", value=10 ** 7), r"replay: storage.len: 10000000"),
    "rng": (_set("rng", "torch", value=torch.zeros(7, dtype=torch.uint8)), r"entry 'rng' is not a random-generator"),
    "best value NaN": (_set("best_eval", value={"metric": "eval/return", "value": float("nan"), "counters": None}),
                       r"best_eval must hold a score"),
    "run entry": (_set("run", value="someone"), r"entry 'run' must hold run_id and settings"),
    "NaN weight": (_nan_weight, r"model weight '.*' holds NaN/inf; refused"),
    "int64 weights": (_int_weights, r"shape mismatches: .*torch.int64 vs model .*torch.float32"),
    "optimizer shape": (_optimizer(lambda v: v[..., :1].clone()), r"optimizer state 'exp_avg' of .* is torch.float32"),
    "optimizer NaN": (_optimizer(lambda v: torch.full_like(v, float("nan"))), r"optimizer state 'exp_avg' .* NaN"),
    "optimizer groups": (_set("optimizer", "param_groups", value=lambda g: g + g),
                         r"optimizer.param_groups does not hold"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_checkpoint_that_does_not_fit_the_run_is_refused_before_anything_is_written(base, tmp_path, case):
    edit, match = CORRUPT[case]
    latest = copy_of(base, tmp_path) / "ckpts" / "latest.pt"
    ckpt = load_tensors(latest)
    edit(ckpt)
    torch.save(ckpt, latest)
    refused(tmp_path, match)


def test_a_checkpoint_declaring_a_huge_record_is_refused_before_reading_it(base, tmp_path):
    latest = copy_of(base, tmp_path) / "ckpts" / "latest.pt"
    latest.unlink()
    with zipfile.ZipFile(latest, "w", zipfile.ZIP_DEFLATED) as z:  # ~2 KB on disk
        z.writestr("archive/data.pkl", b"\x80\x02" + b"N" * (MAX_PICKLE_BYTES + 1) + b".")
    refused(tmp_path, r"declares 2097156 bytes \(2097156 of pickle record, at most MAX_PICKLE_BYTES=2097152\)")


def test_a_checkpoint_whose_tensors_inflate_is_refused_before_reading_it(base, tmp_path):
    """A storage record deflated from 256 MiB of zeros to a few hundred KB: allocated by torch.load if read."""
    latest = copy_of(base, tmp_path) / "ckpts" / "latest.pt"
    with zipfile.ZipFile(latest) as z:
        records = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(latest, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in records.items():
            z.writestr(name, data)
        z.writestr("archive/data/huge", b"\0" * 2**28)
    refused(tmp_path, r"declares \d+ bytes .* in a \d+-byte file; refused before reading it")


def test_best_weights_with_nan_are_never_evaluated(tmp_path):
    t = trainer(tmp_path, env_, eval_interval=1, eval_envs=2, eval_timesteps=H + 1)
    t.train(epochs=1)
    best = run_dir(tmp_path) / "ckpts" / "best.pt"
    ckpt = load_tensors(best)
    _nan_weight(ckpt)
    torch.save(ckpt, best)
    with pytest.raises(CheckpointError, match=f"checkpoint {best}: model weight .* holds NaN/inf"):
        t.load_best()
    ckpt["run"]["run_id"] = "another"
    torch.save(ckpt, best)
    with pytest.raises(CheckpointError, match=f"{best} belongs to run 'another'"):
        t.load_best()
    t.close()


# ---------------------------------------------------------------- writes that fail keep the last good state
def test_a_full_disk_at_save_names_the_file_removes_the_temporary_and_keeps_the_checkpoint(base, tmp_path,
                                                                                            monkeypatch):
    latest = copy_of(base, tmp_path) / "ckpts" / "latest.pt"
    kept = latest.read_bytes()

    class FullDisk:  # the file system fills up after 4 KB
        def __init__(self, path, mode):
            self.f, self.n = open(path, mode), 0

        def write(self, b):
            self.n += len(b)
            if self.n > 4096:
                raise OSError(28, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    r = resume_fresh(tmp_path)
    monkeypatch.setattr(ckpt_mod, "open", FullDisk, raising=False)
    with pytest.raises(CheckpointError, match=rf"could not write checkpoint {latest} \(.*No space left on device\)"):
        r.train(epochs=3)
    with pytest.raises(CheckpointError, match="No space left"):  # failing again: the durable checkpoint stays named
        r.save()
    r.close()
    monkeypatch.undo()
    assert latest.read_bytes() == kept and not latest.with_name("latest.pt.tmp").exists()
    r = resume_fresh(tmp_path)
    r.train(epochs=3)
    assert r.env_steps == r.replay._writer.index.write_count == 3 * 2 * (H + 1)
    r.close()


def test_a_metrics_row_cut_short_is_dropped_not_merged(base, tmp_path):
    csv_path = copy_of(base, tmp_path) / "logs" / "metrics.csv"
    text = csv_path.read_text()
    head, last = text[:text.rstrip("\n").rfind("\n") + 1], text.rstrip("\n").rsplit("\n", 1)[1]
    csv_path.write_text(head + ",".join(last.split(",")[:2]))  # a stop in the middle of appending epoch 1's row
    for epochs in (3, 4):
        r = resume_fresh(tmp_path)
        r.train(epochs=epochs)
        r.close()
    rows = [ln.split(",") for ln in csv_path.read_text().splitlines()]
    assert len({len(row) for row in rows}) == 1
    assert [rec["epoch"] for rec in r.logger.records] == [0, 2, 3]  # the cut row is gone, none merged


# ---------------------------------------------------------------- flags and arguments, checked where defined
def test_a_context_shorter_than_a_trial_warns():
    with pytest.warns(UserWarning, match=r"--max_seq_len=1 is shorter than a trial \(6 steps\)"):
        check_run_args(TrainConfig(max_seq_len=1), True, 6)
    with pytest.raises(ValueError, match="rollout_horizon must be an integer >= 1, got 0"):
        check_run_args(TrainConfig(), True, 0)


def test_a_reward_multiplier_that_overflows_is_refused():
    with pytest.raises(ValueError, match=r"--reward_multiplier must be in \(0, 1000000.0\], got 1e\+300"):
        TrainConfig(reward_multiplier=1e300)


def test_a_bad_final_eval_length_fails_before_training(tmp_path):
    t = trainer(tmp_path)
    with pytest.raises(ValueError, match="final_eval_timesteps must be an integer >= 1, got -6"):
        t.run(final_eval_timesteps=-6)
    t.close()
    assert not (run_dir(tmp_path) / "ckpts" / "latest.pt").exists()


def test_the_lock_needs_flock(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows
    with pytest.raises(RunDirError, match="fcntl.flock, which this platform lacks"):
        trainer(tmp_path)

