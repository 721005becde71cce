"""`AMAGOTrainer(make_eval_env=None)` with evaluation switched on used to log `eval_return: nan` at every eval: it
is now refused before anything is built, and the error names both settings."""
import math
import os

import pytest

from tests.trainers.test_trainer import _make_env, _tiny_cfg
from torchrl_amago.trainers import AMAGOTrainer


def test_no_eval_env_with_eval_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"make_eval_env=None.*--eval_interval=2.*eval_interval=0"):
        AMAGOTrainer(_tiny_cfg(tmp_path, eval_interval=2), _make_env, None)
    assert not os.path.exists(tmp_path / "tiny")  # refused before a run folder or a replay exists


def test_no_eval_env_without_evaluation_trains(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, eval_interval=0, epochs=1), _make_env, None)
    rec = tr.train()
    assert tr.grad_steps > 0 and "eval/return" not in rec
    assert math.isnan(tr.finish()["eval_return"])  # documented: no eval env, no final eval
    tr.close()


def test_eval_env_evaluates(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, eval_interval=1, epochs=1), _make_env, _make_env)
    assert "eval/return" in tr.train()
    tr.close()
