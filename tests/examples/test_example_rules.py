"""Rules every example follows, checked on the examples themselves: every flag has help text; `--help` answers
without importing torch; defaults that depend on other flags are derived after parsing (`--epochs` stretches the exploration schedule); `--seed` controls every
weight, the timestep encoders of 08/09/10 included; examples import public names only."""
import argparse
import ast
import importlib
import json
import subprocess
import sys

import pytest
import torch

from tests.envs.libs.atari_standin import install_fake_ale
from tests.envs.libs.test_babyai import FakeMiniGrid
from tests.envs.libs.test_procgen import FakeLevel
from tests.examples.test_examples_smoke import EXAMPLES, TINY, example_config, load_example
from torchrl_amago.envs.libs.babyai import make_babyai_env
from torchrl_amago.trainers import AMAGOTrainer, build_exploration, cli

NAMES = sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def _parser(name, monkeypatch) -> argparse.ArgumentParser:
    """The parser an example builds for `--help` (which must exit 0)."""
    seen = {}
    build = cli.build_parser

    def spy(*a, **k):
        seen["parser"] = build(*a, **k)
        return seen["parser"]

    monkeypatch.setattr(cli, "build_parser", spy)
    with pytest.raises(SystemExit) as e:
        load_example(name).main(["--help"])
    assert e.value.code == 0
    return seen["parser"]


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_has_help(name, monkeypatch, capsys):
    parser = _parser(name, monkeypatch)
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 80  # every TrainConfig field and the example's own flags
    for action in flags:
        text = (action.help or "").split(" (default:")[0].strip()
        assert len(text) >= 8, (name, action.option_strings)
    out = capsys.readouterr().out
    assert "rope" in out and "leaky_relu" in out  # choices are listed (pos_emb, fbc_filter)


HELP_WITHOUT_TORCH = """
import contextlib, io, json, runpy, sys
seen = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            runpy.run_path(path, run_name="__main__")
            code = None
        except SystemExit as e:
            code = e.code
    seen[path] = {"exit": code, "usage": out.getvalue().startswith("usage"), "torch": "torch" in sys.modules}
    if seen[path]["torch"]:
        break  # the first example that imports torch is the one to name
print(json.dumps(seen))
"""


def test_help_answers_without_importing_torch():
    """`python examples/NN_*.py --help` prints the usage and exits 0 with torch never imported (what a user waits
    for otherwise: 5-12 s on the 2-core box, measured before the imports moved below the parsing). The examples run
    one after another in one fresh interpreter; the first that imports torch is named."""
    paths = [str(EXAMPLES / f"{name}.py") for name in NAMES]
    out = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *paths], capture_output=True, text=True,
                         timeout=120, cwd=EXAMPLES.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p for p, r in seen.items() if r["torch"]] == []
    assert list(seen) == paths and all(r["exit"] == 0 and r["usage"] for r in seen.values()), seen


@pytest.mark.parametrize("name, argv, divisor", [
    ("05_dark_key_door", ["--meta_horizon", "12"], 2),
    ("13_mazerunner_relabeling", ["--time_limit", "12"], 2),
    ("04_tmaze", ["--horizon", "6"], 1),  # T-Maze anneals over the whole run
])
def test_epochs_stretch_the_exploration_schedule(name, argv, divisor):
    """eps_steps_anneal defaults to a share of the run's batched env steps (half, or all of them for T-Maze):
    epochs x timesteps_per_epoch / divisor, computed from the parsed --epochs; an explicit --eps_steps_anneal wins."""
    schedules = []
    for extra in ([], ["--epochs", "100"], ["--epochs", "100", "--eps_steps_anneal", "77"]):
        _, cfg, kw, make_train = example_config(name, argv + extra)
        explore = kw.get("exploration")
        if explore is None:
            env = make_train(1)
            explore = build_exploration(cfg, env.action_spec, kw.get("rollout_horizon"))
            env.close()
        schedules.append((cfg.epochs, cfg.timesteps_per_epoch, explore.steps_anneal))
    (e0, t0, s0), (e1, t1, s1), (_, _, s2) = schedules
    assert e1 == 100 and e0 != 100 and t0 == t1
    assert s0 == e0 * t0 // divisor and s1 == 100 * t1 // divisor and s2 == 77


def _encoder_weights(name, seed, run, tmp_path, monkeypatch, argv, patch, **main_kwargs):
    """The timestep encoder's weights of the trainer the example builds (nothing is trained). The global RNG is
    seeded differently for every `run` before the example starts: only `--seed` may decide the weights."""
    mod = load_example(name)
    patch(mod)
    seen = {}

    class _Stop(Exception):
        pass

    def build_then_stop(*a, **kw):
        seen["w"] = {k: v.clone() for k, v in AMAGOTrainer(*a, **kw).modules.timestep_encoder.state_dict().items()}
        raise _Stop

    import torchrl_amago.trainers as trainers  # the examples import AMAGOTrainer from here once parsed

    monkeypatch.setattr(trainers, "AMAGOTrainer", build_then_stop)
    torch.manual_seed(1000 + run)
    with pytest.raises(_Stop):
        mod.main(TINY[:-1] + [str(seed), "--buffer_dir", str(tmp_path / str(seed))] + argv, **main_kwargs)
    return seen["w"]


def _example_08(monkeypatch):
    install_fake_ale(monkeypatch)
    return ["--games", "ToyGame", "--resolution", "36", "36", "--timesteps_per_epoch", "4"], lambda mod: None, {}


def _example_09(monkeypatch):
    return (["--games", "coinrun", "--horizon", "12", "--timesteps_per_epoch", "4"], lambda mod: None,
            {"game_factory": FakeLevel})


def _example_10(monkeypatch):
    def patch(mod):
        monkeypatch.setattr(mod, "require", lambda *a, **k: None)
        monkeypatch.setattr("torchrl_amago.envs.libs.make_babyai_env",
                            lambda tasks, n, **kw: make_babyai_env(tasks, n, env_factory=FakeMiniGrid, **kw))

    return ["--tasks", "FakeGoTo-v0", "--attempt_steps", "5", "--timesteps_per_epoch", "4"], patch, {}


@pytest.mark.parametrize("name, setup", [("08_ale", _example_08), ("09_multitask_procgen", _example_09),
                                         ("10_babyai", _example_10)])
def test_seed_controls_the_timestep_encoder(name, setup, tmp_path, monkeypatch):
    argv, patch, kwargs = setup(monkeypatch)
    a, b, c = (_encoder_weights(name, seed, i, tmp_path / str(i), monkeypatch, argv, patch, **kwargs)
               for i, seed in enumerate((0, 0, 1)))
    assert a.keys() == b.keys() and any("weight" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same --seed: the same initial weights
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())  # another seed: others


@pytest.mark.parametrize("name", NAMES)
def test_examples_import_public_names_only(name):
    """`from torchrl_amago... import x`: never a private module, and x is in that package's `__all__`."""
    tree = ast.parse((EXAMPLES / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchrl_amago"):
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            exported = importlib.import_module(node.module).__all__
            for alias in node.names:
                assert alias.name in exported, (name, node.module, alias.name)


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_short(name):
    """An example only configures: its flags, its defaults, its env factory and `trainer.run()`."""
    assert len((EXAMPLES / f"{name}.py").read_text().splitlines()) <= 100


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_flag_of_an_example_is_checked_where_it_is_defined(name, monkeypatch):
    """The example's own int / float flags parse through `trainers.checked` types (range and finiteness checked by
    argparse, so an error names the flag the user typed), never a bare `int` / `float`."""
    group = next(g for g in _parser(name, monkeypatch)._action_groups if g.title == "example options")
    for action in group._group_actions:
        assert action.type not in (int, float), (name, action.option_strings)


@pytest.mark.parametrize("argv, message", [
    (["--horizon", "0"], "argument --horizon: must be >= 1, got 0"),
    (["--horizon", "-3"], "argument --horizon: must be >= 1, got -3"),
    (["--test_mult", "-1"], "argument --test_mult: must be >= 1, got -1"),
    (["--timesteps_per_epoch", "0"], "--eps_steps_anneal must be >= 1, got 0 (--eps_steps_anneal was not given: its "
                                     "default here is 1 x epochs x timesteps_per_epoch; check those flags or set"),
])
def test_a_bad_example_flag_is_a_usage_error_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        load_example("04_tmaze").main(argv)
    assert e.value.code == 2 and message in " ".join(capsys.readouterr().err.split())
