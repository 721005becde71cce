"""12_half_cheetah_vel: `--help` lists the example's flags; a tiny in-process run over the stand-in physics env
(tests/envs/libs/test_half_cheetah_vel.py) reports a finite eval return and per-velocity-bucket returns."""
import csv
import json
import math
from pathlib import Path

import pytest

from tests.envs.libs.test_half_cheetah_vel import _FakeCheetah
from tests.examples.test_examples_smoke import TINY, example_config, load_example, load_module
from torchrl_amago.envs.libs.half_cheetah_vel import MetaVelocity


def test_tiny_run_on_stand_in_physics(tmp_path):
    ep = 8

    def make_gym():
        return MetaVelocity(_FakeCheetah(), 0.0, 3.0, max_episode_steps=ep, velocity_buckets=3)

    argv = TINY + ["--timesteps_per_epoch", str(ep), "--buffer_dir", str(tmp_path), "--run_name", "hc",
                   "--episode_length", str(ep), "--max_seq_len", "8"]
    summary = load_example("12_half_cheetah_vel").main(argv, make_gym=make_gym)
    assert summary["env_steps"] == 2 * 2 * ep and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    # per-step reward <= 0 (|x_vel - target| + control cost), so an episode's return is <= 0
    assert summary["eval_return"] <= 0.0
    with open(tmp_path / "hc" / "logs" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert any(h.startswith("eval/return/vel_") for h in header)


def test_real_mujoco_tiny_run(tmp_path):
    pytest.importorskip("mujoco")
    argv = TINY + ["--timesteps_per_epoch", "10", "--buffer_dir", str(tmp_path), "--run_name", "hc_real",
                   "--episode_length", "10", "--max_seq_len", "8"]
    summary = load_example("12_half_cheetah_vel").main(argv)
    assert summary["env_steps"] == 2 * 2 * 10 and math.isfinite(summary["eval_return"])


def test_defaults_are_the_measured_run():
    """The config the example builds with no flags is the run docs/domains/half_cheetah_vel.md reports (values
    written out here from that page, not read from the example), and a flag still overrides it."""
    make_gym = lambda: MetaVelocity(_FakeCheetah(), 0.0, 3.0, max_episode_steps=8)  # noqa: E731
    ex, default, _, _ = example_config("12_half_cheetah_vel", [], make_gym=make_gym)
    _, overridden, _, _ = example_config("12_half_cheetah_vel", ["--gamma", "0.99", "--traj_encoder", "transformer"],
                                         make_gym=make_gym)
    measured = dict(
        traj_encoder="ff", memory_size=64, memory_layers=2, tstep_hidden=256, tstep_out=64, actor_hidden=256,
        critic_hidden=256, num_critics=2, max_seq_len=16, batch_size=16, parallel_envs=1, timesteps_per_epoch=1000,
        grads_per_epoch=1000, traj_save_len=250, gamma=0.95, multigammas=[0.9], n_step=3, tau=0.01,
        learning_rate=3e-4, grad_clip=1000.0, reward_multiplier=1.0, eps_steps_anneal=20_000)
    assert {k: getattr(default, k) for k in measured} == measured
    assert default.gammas == [0.9, 0.95]
    assert (overridden.gamma, overridden.traj_encoder, overridden.n_step) == (0.99, "transformer", 3)


def test_fixed_target_eval_of_a_finished_run(tmp_path, monkeypatch, capsys):
    """benchmarks/half_cheetah_vel_fixed_targets.py resumes a copy of a run and evaluates it at the given targets:
    the stand-in moves at most 2 m/s, so an 8-step episode scores >= -(2 + ctrl) * 8 at target 0 and
    <= -(100 - 2) * 8 at target 100; the run itself is left untouched."""
    ep = 8
    flags = TINY + ["--timesteps_per_epoch", str(ep), "--episode_length", str(ep), "--max_seq_len", "8"]
    make_gym = lambda: MetaVelocity(_FakeCheetah(), 0.0, 3.0, max_episode_steps=ep, velocity_buckets=3)  # noqa: E731
    load_example("12_half_cheetah_vel").main(flags + ["--buffer_dir", str(tmp_path), "--run_name", "hc"],
                                             make_gym=make_gym)
    ckpt = tmp_path / "hc" / "ckpts" / "latest.pt"
    before = ckpt.stat().st_mtime_ns
    bench = load_module(Path(__file__).parents[2] / "benchmarks" / "half_cheetah_vel_fixed_targets.py", "fixed_targets")
    monkeypatch.setattr(bench, "make_half_cheetah_vel_gym", lambda lo, hi, velocity_buckets: MetaVelocity(
        _FakeCheetah(), lo, hi, max_episode_steps=ep, velocity_buckets=velocity_buckets))
    capsys.readouterr()
    bench.main([str(tmp_path / "hc"), "--targets", "0", "100"] + flags)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    returns = result["eval_return_by_target"]
    assert set(returns) == {"0", "100"} and result["standing_still"] == {"0": -0.0, "100": -100_000.0}
    assert returns["0"] >= -(2 + 0.05 * 6) * ep and returns["100"] <= -(100 - 2) * ep
    assert ckpt.stat().st_mtime_ns == before
    with pytest.raises(FileNotFoundError, match="no ckpts/latest.pt"):
        bench.main([str(tmp_path / "missing")])
