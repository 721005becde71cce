"""06_alchemy: --help lists its flags; a tiny in-process run on the symbolic-Alchemy stand-in (dm_alchemy is not on
PyPI); a missing dm_alchemy names its GitHub install."""
import math

from tests.envs.libs.alchemy_standin import install_fake_dm_alchemy
from tests.examples.test_examples_smoke import TINY, help_text, load_example
from tests.missing_package import assert_missing_package_named


def test_help_shows_the_original_defaults(capsys):
    out = help_text("06_alchemy", capsys)
    assert out.lstrip().startswith("usage") and "06 — Symbolic DeepMind Alchemy" in out
    assert "(default: 201)" in out  # max_seq_len = 10 trials x 20 steps + 1, as the original


def test_tiny_run_on_the_stand_in(monkeypatch, tmp_path):
    levels = install_fake_dm_alchemy(monkeypatch)
    H = 2 * 4
    argv = TINY + ["--timesteps_per_epoch", str(H), "--buffer_dir", str(tmp_path), "--run_name", "smoke",
                   "--num_trials", "2", "--steps_per_trial", "4", "--test_mult", "1"]
    summary = load_example("06_alchemy").main(argv)
    assert summary["env_steps"] == 2 * 2 * H and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    assert levels.calls and all(c[0].startswith("alchemy/") and c[2:] == (2, 4) for c in levels.calls)
    assert (tmp_path / "smoke" / "logs" / "metrics.csv").exists()


def test_missing_dm_alchemy(monkeypatch, tmp_path):
    install_fake_dm_alchemy(monkeypatch)
    assert_missing_package_named(monkeypatch, "dm_alchemy", "dm_alchemy.git",
                                 lambda: load_example("06_alchemy").main(["--buffer_dir", str(tmp_path)]))
