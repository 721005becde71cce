"""`--compile_loss`: the compiled update equals the eager one (losses, gradients, PopArt state, weights after N
updates), and batch shapes that would recompile every update are refused by name."""
import shutil

import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer

from .test_trainer import _make_env, _tiny_cfg
from .update_equivalence import assert_updates_equal

FIXED_SHAPES = dict(trim_windows=False, dropout=0.0, mixed_precision="no")  # compiled vs eager, in fp32


def _compile_works() -> str | None:
    """Why torch.compile cannot run on this machine's CPU (no C++ compiler, no Python headers), or None."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        return "torch.compile on CPU needs a C++ compiler"
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as e:  # noqa: BLE001 - the machine, not this package
        return f"torch.compile does not run here: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


@pytest.fixture(scope="module")
def compiler():
    why = _compile_works()
    if why is not None:
        pytest.skip(why)


def _trainer(tmp_path, name, **kw):
    torch.manual_seed(0)
    return AMAGOTrainer(_tiny_cfg(tmp_path, run_name=name, **FIXED_SHAPES, **kw), _make_env, _make_env)


def test_compiled_update_equals_eager(tmp_path, monkeypatch, compiler):
    """N updates on the same batches, each from the same state: the same losses, gradients, PopArt statistics and
    weights after the step. (Each update starts from the eager run's state: Adam turns float-rounding differences in
    near-zero gradients into steps of the learning rate, so two runs drift apart however equal their maths.) The
    state is copied into the compiled run's own tensors, so a graph that kept stale weights would fail."""
    import torch._inductor.config as inductor_config

    # random ops (the TD target's critic draw) as in eager mode, so both runs draw the same critics
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    eager = _trainer(tmp_path, "eager")
    eager.train(epochs=2)  # a replay to sample from, and weights that have moved
    compiled = _trainer(tmp_path, "compiled", compile_loss="default")
    assert compiled.learner.loss_forward is not compiled.loss

    def copy_state(dst, src):
        dst.loss.load_state_dict(src.loss.state_dict())
        dst.learner.optimizer.load_state_dict(src.learner.optimizer.state_dict())
        dst.learner.scheduler.load_state_dict(src.learner.scheduler.state_dict())

    assert_updates_equal(eager, compiled, 4, copy_state)
    eager.close()
    compiled.close()


def test_shapes_that_change_per_update_are_refused_and_windows_are_not_packed(tmp_path):
    with pytest.raises(ValueError, match="--no-trim_windows"):
        AMAGOTrainer(_tiny_cfg(tmp_path, compile_loss="default", trim_windows=True), _make_env, _make_env)
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, compile_loss="default", trim_windows=False), _make_env, _make_env)
    assert tr.loss.pack_windows == "never"  # one window per row: one batch shape
    tr.close()


def test_unknown_mode_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="compile_loss"):
        _tiny_cfg(tmp_path, compile_loss="fast")
