"""Per-update schedules (trainers/schedules.py): the learning rate (--lr_decay) and the conservative term's ramp
(--cql_ramp) by hand and in a trainer (the rate and scale of each update, a resume that continues them), and the
explicit long-horizon preset (nothing switches on by itself)."""
import math

import pytest
import torch

from torchrl_amago.trainers import LONG_HORIZON_PRESET, AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.schedules import LR_FINAL_RATIO, lr_factor, ramp_factor, run_cql_factor, run_lr_factor

from ..objectives.test_amago_loss import build, make_batch
from .test_trainer import _make_env, _tiny_cfg


def test_lr_factor_by_hand():
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
    # a config decays over its learning epochs: 10 epochs, learning from epoch 2, 5 updates each = 40 updates
    f = run_lr_factor(TrainConfig(epochs=10, start_learning_at_epoch=2, grads_per_epoch=5, lr_warmup_steps=0,
                                  lr_decay="linear"))
    assert f(19) == pytest.approx(LR_FINAL_RATIO + (1 - LR_FINAL_RATIO) * 0.5) and f(39) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="--lr_decay="):
        lr_factor(10, "step", 100)


def test_the_trainer_decays_the_rate_and_a_resume_switches_the_decay_on(tmp_path):
    # 4 epochs x 2 updates, warm-up 2: linear decay over updates 3..8 to a tenth of 1e-3
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, learning_rate=1e-3, lr_decay="linear"), _make_env, _make_env)
    tr.train(epochs=2)
    # the rate of the next update, the 5th: 3 of the 6 decay updates done
    assert tr.learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * (1 - 3 / 6)))
    tr.train()
    assert tr.grad_steps == 8 and tr.learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    tr.close()
    plain = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="plain", learning_rate=1e-3), _make_env, _make_env)
    plain.train(epochs=4)
    plain.save()
    assert plain.learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    plain.close()
    resumed = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="plain", learning_rate=1e-3, epochs=8, lr_decay="cosine"),
                           _make_env, _make_env)
    assert resumed.resume()
    # the 9th update's rate: 7 of the 14 decay updates done
    assert resumed.learner.optimizer.param_groups[0]["lr"] == pytest.approx(
        1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 14))))
    resumed.train()
    assert resumed.grad_steps == 16 and resumed.learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    resumed.close()


def test_ramp_factor_by_hand():
    f = ramp_factor(0.25, 0.75, 100)  # off for updates 1..25, linear from update 26, full from update 76
    assert [f(i) for i in (0, 24, 25, 50, 74, 75, 99, 500)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.5, 0.98, 1.0, 1.0, 1.0])
    step = ramp_factor(0.5, 0.5, 10)  # a switch at the run's half
    assert [step(i) for i in (0, 4, 5, 9)] == [0.0, 0.0, 1.0, 1.0]
    assert ramp_factor(0.0, 0.0, 10)(0) == 1.0


def test_the_scale_weights_the_term_and_nothing_else():
    """At scale s the critic loss is the one at cql_coeff c * s with scale 1; at 0 it is the loss without the term."""
    batch = make_batch("discrete", pad_from=(None, 5, 2))
    outs = {}
    for c, scale in ((0.0, 1.0), (0.4, 0.0), (0.4, 0.25), (0.1, 1.0)):
        loss = build("discrete", cql_coeff=c).eval()
        loss.cql_scale.fill_(scale)
        torch.manual_seed(0)
        outs[c, scale] = loss(batch.clone()).detach()
    assert "cql_scale" not in loss.state_dict()  # not part of a checkpoint: the trainer sets it each update
    crit = {k: float(v["loss_critic"]) for k, v in outs.items()}
    assert crit[0.4, 0.0] == pytest.approx(crit[0.0, 1.0], rel=1e-6)
    assert crit[0.4, 0.25] == pytest.approx(crit[0.1, 1.0], rel=1e-6)
    assert crit[0.1, 1.0] > crit[0.0, 1.0] + 1e-3  # the term is there
    actor = {k: float(v["loss_actor"]) for k, v in outs.items()}
    assert len({round(a, 6) for a in actor.values()}) == 1


def _record_scales(tr):
    seen, update = [], tr.learner.update

    def recording_update():
        out = update()
        seen.append(float(tr.loss.cql_scale))
        return out

    tr.learner.update = recording_update
    return seen


def test_the_trainer_ramps_the_scale_and_a_resume_continues_it(tmp_path):
    # 4 epochs x 2 updates; ramp from a quarter (update 3) to three quarters (update 7) of the 8 updates
    kw = dict(cql_coeff=0.1, cql_ramp=(0.25, 0.75))
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, **kw), _make_env, _make_env)
    seen = _record_scales(tr)
    tr.train(epochs=2)
    assert seen == pytest.approx([0.0, 0.0, 0.0, 0.25])  # updates 1..4: i / 8 = 0, 1/8, 2/8, 3/8 done
    tr.save()
    tr.close()
    resumed = AMAGOTrainer(_tiny_cfg(tmp_path, **kw), _make_env, _make_env)
    assert resumed.resume() and resumed.grad_steps == 4
    metrics = resumed.learner.learn(resumed.cfg.grads_per_epoch)  # the 5th and 6th updates
    assert float(resumed.loss.cql_scale) == pytest.approx(0.75)
    assert metrics["train-update/cql_scale"] == pytest.approx(0.75)
    assert metrics["train-update/cql_gap"] > 0
    resumed.close()


@pytest.mark.parametrize("gamma", [0.9999, 0.999])
def test_the_term_is_what_the_flags_say_whatever_the_discount(tmp_path, gamma):
    """Unset: off, at any gamma. The long-horizon preset: on, ramped in from a tenth of the run, with the encoders'
    copy."""
    plain = AMAGOTrainer(_tiny_cfg(tmp_path / "plain", gamma=gamma), _make_env, _make_env)
    assert plain.loss.cql_coeff == 0.0 and plain.learner.cql_factor is None
    assert "target_backbone_params" not in dict(plain.loss.named_children())
    plain.close()
    tr = AMAGOTrainer(_tiny_cfg(tmp_path / "preset", gamma=gamma, **LONG_HORIZON_PRESET), _make_env, _make_env)
    assert tr.loss.cql_coeff == 0.1 and "target_backbone_params" in dict(tr.loss.named_children())
    seen = _record_scales(tr)
    tr.train(epochs=2)  # off for the first tenth of the run's 8 updates, then (i / 8 - 0.1) / 0.9 before update i + 1
    assert seen == pytest.approx([0.0, 0.025 / 0.9, 0.15 / 0.9, 0.275 / 0.9])
    tr.close()


def test_a_ramp_on_a_loss_without_the_term_is_refused(tmp_path):
    class NoScale(torch.nn.Module):
        cql_coeff = 0.1

    with pytest.raises(ValueError, match="--cql_ramp 0.0 1.0 ramps the conservative term, which NoScale"):
        run_cql_factor(TrainConfig(cql_coeff=0.1, cql_ramp=(0.0, 1.0)), NoScale())
    assert run_cql_factor(TrainConfig(cql_coeff=0.0, cql_ramp=(0.1, 1.0)), NoScale()) is None  # preset ramp, term off
    assert run_cql_factor(TrainConfig(cql_coeff=0.1), NoScale()) is None  # no ramp: nothing to write


def test_an_older_checkpoint_resumes_as_the_settings_its_run_used():
    """Checkpoints written before the long-horizon switches became explicit store `cql_resolved` and the
    `target_backbone*` flags: they resume under the explicit settings their run used, and a retired flag set to
    another value than the one that remains is refused by name."""
    from torchrl_amago.trainers import CheckpointError
    from torchrl_amago.trainers.run.checkpoint import check_resume

    old = {k: v for k, v in TrainConfig(gamma=0.9999).to_dict().items() if k not in ("target_encoders",)}
    old.update(cql_coeff=None, cql_ramp=None, target_backbone=True, target_backbone_min_gamma=0.9999,
               target_backbone_all_gammas=True, keep_best=True)
    stored = {"config": old, "cql_resolved": {"cql_coeff": 0.1, "cql_ramp": [0.1, 1.0]}}
    assert check_resume(stored, TrainConfig(gamma=0.9999, **LONG_HORIZON_PRESET), "ckpt.pt") == {}
    with pytest.raises(CheckpointError, match=r"--target_encoders: checkpoint True -> now False"):
        check_resume(stored, TrainConfig(gamma=0.9999, cql_coeff=0.1, cql_ramp=(0.1, 1.0)), "ckpt.pt")
    low = {"config": {**old, "gamma": 0.999}, "cql_resolved": {"cql_coeff": 0.0, "cql_ramp": None}}
    assert check_resume(low, TrainConfig(gamma=0.999), "ckpt.pt") == {}  # no discount reached the threshold
    with pytest.raises(CheckpointError, match="--tree_backup: True"):
        check_resume({"config": {**old, "tree_backup": True}}, TrainConfig(gamma=0.9999), "ckpt.pt")
