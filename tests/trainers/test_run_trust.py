"""Trust, round three (issue 83): a run folder is a closed world, a fresh start never replaces a run, every size a
flag asks for is bounded before it is allocated, everything restored is checked, an env that never feeds the
learner is an error, and a stopped run says what it kept. Each test is one case of the probe
(shared/reviews/reliability.md, its case number in the name's comment); a refusal names the file, key or flag, and
changes nothing of the run."""
import math
import os
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

import torchrl_amago.data.safe_files as safe_files
from tests.trainers.test_reliability import H, cfg_, env_, run_dir
from tests.trainers.test_run_dir import base, copy_of, refused, trainer  # noqa: F401 - base: a fixture
from torchrl_amago.data.safe_files import load_tensors
from torchrl_amago.envs import make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, TrainConfig
from torchrl_amago.trainers.run.guards import EnvOutputError, StarvedLearnerError, check_sizes, guard_env
from torchrl_amago.trainers.run.run_dir import RunDirError
from torchrl_amago.trainers.run.signals import stop_on_signals


def _edit(path, fn):
    ckpt = load_tensors(path)
    fn(ckpt)
    torch.save(ckpt, path)


# ---------------------------------------------------------------- 1. the run folder is a closed world
@pytest.mark.parametrize("name", ["buffer/0/storage/observation.memmap", "logs/metrics.csv", "run.lock"])
def test_a_file_of_a_run_with_another_name_outside_it_is_refused(base, tmp_path, name):
    """N30: a memmap hard-linked to a file outside the run was written through on resume. Every file of a run
    has one name; the outside file is never written (the lock file is not even truncated)."""
    f = copy_of(base, tmp_path / "runs") / name
    outside = tmp_path / "victim.bin"
    outside.write_bytes(b"x" * 4096 if name == "run.lock" else f.read_bytes())
    f.unlink()
    os.link(outside, f)
    kept = outside.read_bytes()
    with pytest.raises(RunDirError, match=rf"{f} has 2 hard links .*(copy of its own|plain file of its own)"):
        trainer(tmp_path / "runs")
    assert outside.read_bytes() == kept


def test_a_symlinked_lock_file_is_named(base, tmp_path):
    """N16: a symlinked run.lock gave a raw ELOOP ('Too many levels of symbolic links')."""
    lock = copy_of(base, tmp_path / "runs") / "run.lock"
    lock.unlink(missing_ok=True)
    (tmp_path / "victim").write_text("mine")
    os.symlink(tmp_path / "victim", lock)
    with pytest.raises(RunDirError, match=rf"{lock} is a symlink: the lock file of a run is a plain file"):
        trainer(tmp_path / "runs")
    assert (tmp_path / "victim").read_text() == "mine"


def test_a_nested_run_json_is_named(base, tmp_path):
    """N22: run.json nested 200,000 deep gave a bare RecursionError."""
    ident = copy_of(base, tmp_path) / "run.json"
    ident.write_text("[" * 200_000 + "]" * 200_000)
    refused(tmp_path, rf"{ident} nests its values deeper than Python can read", RunDirError)


# ---------------------------------------------------------------- 2. a fresh start never replaces a run
@pytest.mark.parametrize("settings", [None, {"horizon": 7}])
def test_a_run_without_its_latest_checkpoint_is_never_replaced(base, tmp_path, settings):
    """N25: with ckpts/latest.pt gone, a start (here with the run's settings, or others) replaced run.json,
    best.pt and metrics.csv and deleted buffer/0. It is refused, naming what is there."""
    run = copy_of(base, tmp_path)
    (run / "ckpts" / "latest.pt").rename(tmp_path / "latest.pt")
    match = (r"holds a run without its checkpoint ckpts/latest.pt: " + (r"run.json \(settings horizon: the run's "
             r"None, now 7\), " if settings else "") + r"logs/metrics.csv, buffer/0/commits.json. A new run would "
             r"replace it. To continue that run, put its latest.pt back; to start a new one, use another --run_name")
    refused(tmp_path, match, RunDirError, settings=settings)
    (tmp_path / "latest.pt").rename(run / "ckpts" / "latest.pt")  # put back: the run resumes
    t = trainer(tmp_path)
    assert t.resume() and t.epoch == 2
    t.close()


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    """What a start writes before its first checkpoint (run.json, an empty replay) is no run: a second start with
    the same settings goes ahead; one with other settings is refused, naming run.json."""
    trainer(tmp_path).close()
    with pytest.raises(RunDirError, match=r"holds a run without its checkpoint ckpts/latest.pt: run.json \(settings "
                                          r"horizon: the run's None, now 7\)\. A new run"):
        trainer(tmp_path, settings={"horizon": 7})
    t = trainer(tmp_path)
    t.train(epochs=1)
    t.close()
    assert (run_dir(tmp_path) / "ckpts" / "latest.pt").exists()


# ---------------------------------------------------------------- 3. sizes are bounded before anything is allocated
GiB = 2**30


@pytest.mark.parametrize("flags, named", [
    ({"batch_size": 10**9, "max_seq_len": 16}, r"--batch_size=1000000000 x --max_seq_len=16 would take at least "),
    ({"eval_envs": 10**9, "eval_timesteps": 20}, r"--eval_envs=1000000000 x --eval_timesteps=20 would take"),
    ({"memory_size": 2**20, "n_heads": 1}, r"--memory_size=1048576 with --memory_layers=1 would take at least "
                                           r"16384.0 GiB"),  # 4 copies x 4 bytes x 2**40 weights
    ({"parallel_envs": 10**9, "timesteps_per_epoch": 1, "dset_max_size": 2**32 - 1},
     r"--parallel_envs=1000000000 x --timesteps_per_epoch=1 would take at least 29.8 GiB"),  # 1e9 x 32 bytes
])
def test_a_size_beyond_memory_is_refused_naming_the_flag_before_the_run_starts(tmp_path, monkeypatch, flags, named):
    """FL46 / FL51 / FL47: --batch_size or --eval_envs 1e9 grew to 23 GB and were OOM-killed; --memory_size
    1048576 asked the allocator for 13 TB. Each is refused before the run folder or an env exists."""
    monkeypatch.setattr(safe_files, "available_memory", lambda: 8 * GiB)
    with pytest.raises(ValueError, match=named + r".*more than the 8.0 GiB of memory available"):
        AMAGOTrainer(cfg_(tmp_path, **flags), lambda n: pytest.fail("an env was built"), None)
    assert not run_dir(tmp_path).exists()


def test_the_sizes_at_the_envs_step_are_checked_once_the_envs_exist(monkeypatch):
    """With the env's own step size (not the floor), the same rule: batch x window x (step + one activation per
    layer) bytes. 1000 x 100 x (100 + 4 x 8) = 13.2e6 bytes > 12 MiB."""
    cfg = TrainConfig(batch_size=1000, max_seq_len=100, memory_size=8, memory_layers=1, n_heads=1,
                      timesteps_per_epoch=10, dset_max_size=1000)
    check_sizes(cfg, 100)  # the machine has more
    monkeypatch.setattr(safe_files, "available_memory", lambda: 12 * 2**20)
    with pytest.raises(ValueError, match=r"--batch_size=1000 x --max_seq_len=100 would take at least 12.6 MiB, more "
                                         r"than the 12.0 MiB of memory available"):
        check_sizes(cfg, 100)


def test_a_replay_larger_than_the_free_disk_is_refused_naming_dset_max_size(tmp_path, monkeypatch):
    """FL45: the replay's memmaps are sparse and grew until a write met a full disk. The steps a run will store
    (the least of --dset_max_size and what its epochs collect) must fit the free space of its folder."""
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10_000, 10_000))
    with pytest.raises(ValueError, match=r"--dset_max_size=400: the replay would store 400 steps of \d+ bytes, .* on "
                                         r"the disk of .*, which has 0.0 MiB free; lower --dset_max_size or free"):
        trainer(tmp_path, epochs=1000)


@pytest.mark.parametrize("flag, value, named", [("seed", 2**64, r"--seed must be in \[0, 4294967295\]"),
                                                ("dset_max_size", 10**12, r"--dset_max_size must be in \[1, ")])
def test_flags_beyond_their_range_are_named(flag, value, named):
    """FL30: --seed 2**64 -> 'Overflow when unpacking long long'; FL45: --dset_max_size 1e12 -> 'capacity_steps
    must be < 2**32' (an internal name)."""
    with pytest.raises(ValueError, match=named):
        TrainConfig(**{flag: value})


# ---------------------------------------------------------------- 5. everything restored is checked
def _group(key, value):
    def edit(ckpt):
        for g in ckpt["optimizer"]["param_groups"]:
            g[key] = value
    return edit


def _state(key, fn):
    def edit(ckpt):
        for s in ckpt["optimizer"]["state"].values():
            s[key] = fn(s[key]) if key in s else fn(None)
    return edit


OPTIMIZER = {  # N31-N34: an edit of latest.pt's optimizer -> what the refusal names
    "maximize": (_group("maximize", True), r"optimizer.param_groups\[0\]\['maximize'\] is True, but the run's "
                                           r"config builds False"),
    "betas NaN": (_group("betas", (math.nan, 0.999)), r"\['betas'\] is \(nan, 0.999\), but the run's config builds "
                                                      r"\(0.9, 0.999\)"),
    "eps -1 amsgrad": (lambda c: (_group("eps", -1.0)(c), _group("amsgrad", True)(c)), r"\['amsgrad'\] is True"),
    "foreach": (_group("foreach", True), r"\['foreach'\] is True, but the run's config builds None"),
    "unknown setting": (_group("momentum", 0.9), r"\['momentum'\] is 0.9, but the run's config builds 'no such"),
    "step -5": (_state("step", lambda v: torch.full_like(v, -5.0)), r"'step' of .* is -5.0, not a count of steps"),
    "step 1.5": (_state("step", lambda v: torch.full_like(v, 1.5)), r"'step' of .* is 1.5, not a count of steps"),
    "second moment < 0": (_state("exp_avg_sq", lambda v: -v - 1), r"'exp_avg_sq' of .* holds negative values"),
    "extra entry": (_state("max_exp_avg_sq", lambda v: torch.zeros(())), r"holds \['exp_avg', 'exp_avg_sq', "
                                                                          r"'max_exp_avg_sq', 'step'\], AdamW keeps"),
}


@pytest.mark.parametrize("case", sorted(OPTIMIZER))
def test_an_optimizer_state_the_config_would_not_build_is_refused(base, tmp_path, case):
    """N31: maximize=True in latest.pt trained by gradient ascent from then on; N32-N34: step -5 or NaN betas failed
    an epoch later naming a weight, eps -1 with amsgrad a KeyError. Every group setting is compared with the freshly
    built optimizer's (lr and weight decay are the config's, written on resume), every state entry checked."""
    edit, match = OPTIMIZER[case]
    _edit(copy_of(base, tmp_path) / "ckpts" / "latest.pt", edit)
    refused(tmp_path, match)


def test_a_config_nested_too_deep_is_named(base, tmp_path):
    """N35: a config value nested 5,000 deep (it passes the opcode scan) gave a RecursionError."""
    def nest(ckpt):
        v = [0.5]
        for _ in range(5000):
            v = [v]
        ckpt["config"]["multigammas"] = v
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # torch.save writes nested lists recursively
    try:
        _edit(copy_of(base, tmp_path) / "ckpts" / "latest.pt", nest)
    finally:
        sys.setrecursionlimit(limit)
    refused(tmp_path, r"entry 'config' nests its values deeper than a config does")


def test_best_weights_without_the_runs_identity_are_refused(tmp_path):
    """N38: a best.pt of another run with its 'run' entry deleted was evaluated as this run's best."""
    t = trainer(tmp_path, env_, eval_interval=1, eval_envs=2, eval_timesteps=H + 1)
    t.train(epochs=1)
    best = run_dir(tmp_path) / "ckpts" / "best.pt"
    _edit(best, lambda c: c.pop("run"))
    with pytest.raises(CheckpointError, match=rf"{best} belongs to run None, this run is"):
        t.load_best()
    t.close()


# ---------------------------------------------------------------- 8. metrics.csv edges
def _metrics(run):
    return run / "logs" / "metrics.csv"


def test_a_complete_last_row_without_its_newline_is_kept(base, tmp_path):
    """N26: the last row, complete but for its newline, was dropped as 'cut short': epoch 1's record lost."""
    m = _metrics(copy_of(base, tmp_path))
    text = m.read_text()
    m.write_text(text[:-1])
    t = trainer(tmp_path)
    assert t.resume()
    assert [r["epoch"] for r in t.logger.records] == [0, 1]
    t.close()
    assert m.read_text() == text  # rewritten whole, with the newline


def test_a_repeated_row_is_dropped_with_a_warning_and_a_different_one_refused(base, tmp_path):
    """N27: a duplicated row survived every resume. An exact repeat is dropped (warned); two different rows of one
    epoch, or rows out of order, are refused naming the file."""
    m = _metrics(copy_of(base, tmp_path))
    lines = m.read_text().splitlines(True)
    m.write_text("".join(lines + lines[-1:]))
    with pytest.warns(UserWarning, match=rf"{m}: the row of epoch 1 appears twice; the repeat is dropped"):
        t = trainer(tmp_path)
    assert t.resume() and [r["epoch"] for r in t.logger.records] == [0, 1]
    t.close()
    assert m.read_text() == "".join(lines)
    m.write_text("".join(lines + [lines[-1].replace(",", ",9", 1)]))
    refused(tmp_path, rf"{m}: the row of epoch 1 comes after the row of epoch 1 \(epochs must increase", ValueError)


def test_a_metrics_header_without_epoch_is_refused(base, tmp_path):
    """N28: a header with 'epoch' renamed turned the counter cross-check off, and later rows lost their epoch."""
    m = _metrics(copy_of(base, tmp_path))
    m.write_text(m.read_text().replace("epoch", "epoch_x", 1))
    refused(tmp_path, rf"{m} has no 'epoch' column, so its rows cannot be matched with the checkpoint's counters")


# ---------------------------------------------------------------- 7. an env that never feeds the learner
class Toy(EnvBase):
    """`n` envs with a 2-d observation in Box(-1, 1) that is `value`; 2 actions; trials end every `length` steps
    (None: never)."""

    def __init__(self, n, value=0.5, length=None):
        super().__init__(batch_size=torch.Size([n]))
        self.value, self.length = value, length
        self.observation_spec = Composite(observation=Bounded(-1.0, 1.0, (n, 2)), shape=(n,))
        self.action_spec = Categorical(2, (n,))
        self.reward_spec = Unbounded((n, 1))
        self.t = torch.zeros(n, dtype=torch.long)

    def _out(self):
        return TensorDict({"observation": torch.full((*self.batch_size, 2), self.value)}, self.batch_size)

    def _reset(self, td):
        self.t.zero_()
        return self._out()

    def _step(self, td):
        self.t += 1
        done = (self.t >= self.length) if self.length else torch.zeros_like(self.t, dtype=torch.bool)
        self.t[done] = 0
        out = self._out()
        out.update({"reward": torch.zeros(*self.batch_size, 1), "done": done[:, None],
                    "terminated": done[:, None]})
        return out

    def _set_seed(self, seed):
        pass


def test_an_env_whose_trials_never_end_is_an_error_naming_it(tmp_path):
    """E5: an env whose episodes never end trained nothing and exited 0 ('grad_steps 0', 'eval_return NaN'). At
    the run's last epoch with no update the learner could not make, an error names the env and what it did."""
    t = AMAGOTrainer(cfg_(tmp_path, epochs=3), lambda n: make_amago_env(Toy(n)), None, env_name="never_end")
    with pytest.raises(StarvedLearnerError, match=r"the training env 'never_end' gave the learner nothing to learn "
                                                  r"from: in 24 env steps it ended no trial the replay still holds "
                                                  r"\(2 trials open, the longest 12 steps long\), the learner needs "
                                                  r"--min_trials_to_learn=1 and made no update in epochs 0..2"):
        t.train()
    assert t.epoch == 3 and t.grad_steps == 0  # every epoch was checkpointed first
    t.close()


def test_an_env_whose_trials_outgrow_the_replay_is_an_error_before_the_last_epoch(tmp_path):
    """Once the replay wrapped around without a finished trial, no trial can ever be stored whole."""
    t = AMAGOTrainer(cfg_(tmp_path, epochs=50, dset_max_size=16), lambda n: make_amago_env(Toy(n)), None,
                     env_name="never_end")
    with pytest.raises(StarvedLearnerError, match=r"in 16 env steps it ended no trial .* in epochs 0..1"):
        t.train()
    t.close()


def test_an_env_that_feeds_the_learner_late_is_no_error(tmp_path):
    """Trials of 6 steps, 4 steps per env and epoch: epoch 0 finishes none, epoch 1 does, and learning starts."""
    t = AMAGOTrainer(cfg_(tmp_path, epochs=3), lambda n: make_amago_env(Toy(n, length=6)), None)
    t.train()
    assert t.grad_steps > 0
    t.close()


def test_an_observation_outside_its_space_is_warned_once_naming_the_key(tmp_path):
    """E2: an observation of 1e6 in a Box(-1, 1) trained and evaluated without a word."""
    env = guard_env(make_amago_env(Toy(2, value=1e6, length=3)), "training env")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.rollout(10, break_when_any_done=False)
    msgs = [str(w.message) for w in caught if "declared space" in str(w.message)]
    assert msgs == ["the training env returned 'observation' = 1e+06 at its reset (call 0, element (0, 0)), outside "
                    "its declared space [-1, 1] (its observation spec); the run goes on (reported once per key)"]


def test_a_reset_of_the_wrong_shape_names_the_env_and_the_key():
    """E6: a reset returning shape (5,) for a (3,) space gave torchrl's spec error, naming neither."""
    gymnasium = pytest.importorskip("gymnasium")
    from torchrl.envs import GymWrapper

    class WrongReset(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (3,))
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            return torch.zeros(5).numpy(), {}

        def step(self, action):
            return torch.zeros(3).numpy(), 0.0, False, False, {}

    env = guard_env(GymWrapper(WrongReset()), "training env")
    with pytest.raises(EnvOutputError, match=r"the training env \(.*\) returned a value of shape torch.Size\(\[5\]\) "
                                             r"at its reset, where its spec says torch.Size\(\[3\]\): key "
                                             r"'observation' of its observation spec"):
        env.reset()


# ---------------------------------------------------------------- 9. signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_block_with_one_line(base, tmp_path, capsys, signum, monkeypatch):
    """N46 / N47: SIGTERM exited with no message, SIGINT with a traceback not saying which epoch was kept."""
    monkeypatch.setattr("sys.argv", ["train.py", "--epochs", "2"])  # the command the line repeats (xdist: "-c")
    latest = str(copy_of(base, tmp_path) / "ckpts" / "latest.pt")  # a run of 2 epochs
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stop:
        with stop_on_signals(latest):
            os.kill(os.getpid(), signum)
            pytest.fail("the signal did not stop the block")
    assert stop.value.code == 128 + signum
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"stopped by {signal.Signals(signum).name}: {latest} keeps epochs 0..1; to resume at "
                           f"epoch 2, run python ")
    assert signal.getsignal(signum) is before  # the handlers are put back


def test_a_stop_that_a_librarys_cleanup_turned_into_another_error_still_stops_with_one_line(base, tmp_path, capsys):
    """The signal can land inside library code whose cleanup then fails (tensordict's `to_module` raised "Converting
    a tensordict to boolean value is not permitted" while the stop passed through it): still exit 130 and the line;
    an error with no stop behind it goes through unchanged."""
    latest = str(copy_of(base, tmp_path) / "ckpts" / "latest.pt")
    module = torch.nn.Linear(2, 2)
    params = TensorDict.from_module(module)
    with pytest.raises(SystemExit) as stop:
        with stop_on_signals(latest):
            with params.to_module(module):  # AMAGOLoss._call_with: its __exit__ fails while the stop passes
                os.kill(os.getpid(), signal.SIGINT)
                pytest.fail("the signal did not stop the block")
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().startswith(f"stopped by SIGINT: {latest} keeps epochs 0..1")
    with pytest.raises(RuntimeError, match="boolean value"):
        with stop_on_signals(latest):
            try:
                raise ValueError("not a stop")
            except ValueError:
                raise RuntimeError("Converting a tensordict to boolean value is not permitted")


@pytest.mark.slow
def test_a_stopped_run_prints_what_it_kept_and_resumes_with_the_same_command(tmp_path):
    """The whole path: SIGINT while a run trains -> exit code 130, one line, no traceback; the same command then
    resumes at the epoch the line names."""
    script = tmp_path / "train.py"
    script.write_text(f"""import sys
sys.path.insert(0, {os.getcwd()!r})
from tests.trainers.test_reliability import cfg_, env_
from torchrl_amago.trainers import AMAGOTrainer
t = AMAGOTrainer(cfg_(sys.argv[1], epochs=int(sys.argv[2])), env_, None)
t.run()
""")
    latest = run_dir(tmp_path) / "ckpts" / "latest.pt"
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path), "100000"], stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        import time
        deadline = time.time() + 120
        while not latest.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1]
    finally:
        p.kill()
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    epoch = int(load_tensors(latest)["counters"]["epoch"])
    assert line == (f"stopped by SIGINT: {latest} keeps epochs 0..{epoch - 1}; to resume at epoch {epoch}, run "
                    f"python {script} {tmp_path} 100000")
    t = trainer(tmp_path, settings={"script": "train.py"}, epochs=100000)  # as the script built it
    assert t.resume() and t.epoch == epoch
    t.close()


# ---------------------------------------------------------------- 4. a full disk under the logs names the file
def test_a_full_disk_while_appending_a_metrics_row_names_the_file_and_keeps_the_rows(tmp_path, monkeypatch):
    """N43: a full logs/ gave a raw OSError [Errno 28] naming no file. A row is appended by one write; a write cut
    short is undone (the file holds the rows before it) and the error names metrics.csv."""
    from torchrl_amago.trainers.logging import RunLogger

    lg = RunLogger(str(tmp_path), "run")
    lg.log({"epoch": 0, "eval/return": 1.0}, env_steps=10, grad_steps=2)
    before = (tmp_path / "metrics.csv").read_bytes()
    real = os.write

    def half(fd, data):  # the disk fills up halfway through the row
        return real(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'metrics.csv'} \(No space left on device.*\); "
                                      r"the row was not added; the file holds the rows before it"):
        lg.log({"epoch": 1, "eval/return": 2.0}, env_steps=20, grad_steps=4)
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_bytes() == before


def test_a_full_disk_under_torchrls_logger_names_its_folder(tmp_path, monkeypatch):
    from torchrl.record import CSVLogger

    from torchrl_amago.trainers.logging import RunLogger

    lg = RunLogger(str(tmp_path), "run", logger="csv")
    monkeypatch.setattr(CSVLogger, "log_scalar", lambda *a, **k: _raise_enospc())
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'run'} \(No space left on device.*\); this "
                                      r"epoch's metrics were not logged; the last checkpoint is kept"):
        lg.log({"epoch": 0, "eval/return": 1.0}, env_steps=10, grad_steps=2)


def _raise_enospc():
    raise OSError(28, "No space left on device")


FULL_DISK = """
import os, shutil, subprocess, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.trainers.test_reliability import cfg_, env_
from torchrl_amago.trainers import AMAGOTrainer
root = Path(sys.argv[1])
def fill():  # the rest of the small tmpfs
    with open(root / "filler", "ab", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\\0" * size)
            except OSError:
                pass
def trainer():
    return AMAGOTrainer(cfg_(root, dset_max_size=4000, timesteps_per_epoch=40, max_seq_len=40), env_, None)
def on_a_full_disk(t, epochs):  # the error it stops with, then space freed
    fill()
    try:
        t.train(epochs=epochs)
        print("no error")
    except OSError as e:
        print("error:", e)
    t.close()
    os.remove(root / "filler")
on_a_full_disk(trainer(), 1)  # the replay's first write
t = trainer()
t.train(epochs=2)
t.close()
t = trainer()
t.resume()
on_a_full_disk(t, 6)  # a run with a checkpoint
t = trainer()
t.resume()
print("resumed at", t.epoch, t.env_steps, t.replay._writer.index.write_count)
t.train(epochs=t.epoch + 1)
print("done", t.epoch)
t.close()
"""


@pytest.mark.slow
def test_a_full_tmpfs_under_a_run_is_an_error_naming_the_file_and_loses_nothing(tmp_path):
    """N44 / N43 for real: a run on a 4 MiB tmpfs (a user and mount namespace: ``unshare -rm``) that fills up.
    Its first replay write meets the full disk: an OSError names the memmap (no SIGBUS). Later, with a checkpoint,
    a full disk stops the run with an error naming the file, and once space is freed the run resumes from its last
    checkpoint with counters equal to the stored steps."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("cannot make a mount namespace here (unshare -rm)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK.format(root=os.getcwd()))
    cmd = f"mount -t tmpfs -o size=4m tmpfs {mnt} && {sys.executable} {script} {mnt}"
    p = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("error:", "no error", "resumed", "done"))]
    assert lines[0].startswith("error: [Errno 28] could not write ") and "/buffer/0/storage" in lines[0] and \
        "(No space left on device" in lines[0] and "nothing of this batch was stored" in lines[0], lines
    assert lines[1].startswith("error: [Errno 28] could not write "), lines  # the file it met, named
    epoch, env_steps, written = (int(x) for x in lines[2].split()[2:])
    assert env_steps == written == epoch * 2 * 40 and epoch >= 2, lines
    assert lines[3] == f"done {epoch + 1}", lines
