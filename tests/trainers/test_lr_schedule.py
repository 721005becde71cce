"""--lr_decay: the learning-rate multiplier by hand, and in a trainer (the last update's rate, a resume that
switches the decay on)."""
import math

import pytest

from torchrl_amago.trainers import AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.lr_schedule import lr_factor, run_lr_factor

from .test_trainer import _make_env, _tiny_cfg


def test_factor_by_hand():
    # warm-up 10 updates, then 100 updates of decay to 0.1: f(i) is the multiplier of update i + 1
    cos, lin, none = (lr_factor(10, d, 110, 0.1) for d in ("cosine", "linear", "none"))
    for f in (cos, lin, none):
        assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert cos(34) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))  # a quarter of the decay
    assert lin(34) == pytest.approx(0.1 + 0.9 * 0.75)
    assert cos(59) == pytest.approx(0.55) and lin(59) == pytest.approx(0.55)  # half way
    for f in (cos, lin):
        assert f(109) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # the last update and after it
    assert none(109) == none(500) == 1.0
    assert lr_factor(0, "linear", 4, 0.0)(1) == pytest.approx(0.5)  # no warm-up: the decay starts at once


def test_a_config_decays_over_its_learning_epochs():
    # 10 epochs, learning from epoch 2, 5 updates each: the decay spans 40 updates
    f = run_lr_factor(TrainConfig(epochs=10, start_learning_at_epoch=2, grads_per_epoch=5, lr_warmup_steps=0,
                                  lr_decay="linear", lr_final_ratio=0.0))
    assert f(19) == pytest.approx(0.5) and f(39) == pytest.approx(0.0)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="--lr_decay="):
        lr_factor(10, "step", 100)
    with pytest.raises(ValueError, match="--lr_final_ratio"):
        TrainConfig(lr_final_ratio=1.5)
    with pytest.raises(ValueError, match="--lr_decay="):
        TrainConfig(lr_decay="step")


def test_the_trainer_decays_to_the_final_ratio_and_a_resume_switches_the_decay_on(tmp_path):
    # 4 epochs x 2 updates, warm-up 2: linear decay over updates 3..8 to 0.25 of 1e-3
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, learning_rate=1e-3, lr_decay="linear", lr_final_ratio=0.25), _make_env,
                      _make_env)
    tr.train(epochs=2)
    assert tr.grad_steps == 4
    # the rate of the next update, the 5th: 3 of the 6 decay updates done
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.25 + 0.75 * (1 - 3 / 6)))
    tr.train()
    assert tr.grad_steps == 8 and tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-3)
    tr.save()
    tr.close()
    # the run without a decay, resumed at its end with a cosine decay over 8 more epochs (16 updates in all)
    plain = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="plain", learning_rate=1e-3), _make_env, _make_env)
    plain.train(epochs=4)
    plain.save()
    assert plain.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    plain.close()
    resumed = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="plain", learning_rate=1e-3, epochs=8, lr_decay="cosine",
                                     lr_final_ratio=0.0), _make_env, _make_env)
    assert resumed.resume()
    # the 9th update's rate: 7 of the 14 decay updates done
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 14)))
    resumed.train()
    assert resumed.grad_steps == 16 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    resumed.close()
