"""--cql_coeff / --cql_ramp: the conservative term's weight by hand, its long-horizon default, in the loss (the scale
multiplies the term and nothing else) and in a trainer (the scale of each update, a resume that continues the ramp,
errors that name the flag)."""
import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.checkpoint import load_checkpoint
from torchrl_amago.trainers.cql_schedule import cql_coeff_of, cql_ramp_of, ramp_factor, run_cql_factor

from ..objectives.test_amago_loss import build, make_batch
from .test_trainer import _make_env, _tiny_cfg


def test_factor_by_hand():
    f = ramp_factor(0.25, 0.75, 100)  # off for updates 1..25, linear from update 26, full from update 76
    assert [f(i) for i in (0, 24, 25, 50, 74, 75, 99, 500)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.5, 0.98, 1.0, 1.0, 1.0])
    step = ramp_factor(0.5, 0.5, 10)  # a switch at the run's half
    assert [step(i) for i in (0, 4, 5, 9)] == [0.0, 0.0, 1.0, 1.0]
    assert ramp_factor(0.0, 0.0, 10)(0) == 1.0
    cfg = TrainConfig(cql_coeff=0.1)
    assert run_cql_factor(TrainConfig(cql_coeff=0.0), 0.0) is None  # off
    assert run_cql_factor(cfg, 0.1) is None  # a set weight: full from the first update
    g = run_cql_factor(TrainConfig(cql_coeff=0.1, cql_ramp=(0.0, 1.0), epochs=10, start_learning_at_epoch=2,
                                   grads_per_epoch=5), 0.1)  # 40 updates
    assert g(10) == pytest.approx(0.25) and g(40) == 1.0


def test_the_default_is_on_and_ramped_only_for_long_horizons_and_per_action_critics():
    unset = TrainConfig()
    assert cql_coeff_of(unset, [0.9, 0.99, 0.9999], per_action_critic=True) == 0.1
    assert cql_coeff_of(unset, [0.9, 0.99, 0.999], per_action_critic=True) == 0.0  # every example but T-Maze
    assert cql_coeff_of(unset, [0.9999], per_action_critic=False) == 0.0  # action-input and two-hot critics
    assert cql_coeff_of(TrainConfig(cql_coeff=0.0), [0.9999], True) == 0.0  # off by hand
    assert cql_coeff_of(TrainConfig(cql_coeff=0.3), [0.99], True) == 0.3
    assert cql_ramp_of(unset, 0.1) == (0.1, 1.0) and cql_ramp_of(unset, 0.0) == (0.0, 0.0)
    assert cql_ramp_of(TrainConfig(cql_coeff=0.3), 0.3) == (0.0, 0.0)  # a set weight is not ramped unless asked
    assert cql_ramp_of(TrainConfig(cql_ramp=(0.5, 0.5)), 0.1) == (0.5, 0.5)


def test_bad_values_are_named():
    for ramp in ((0.5, 0.25), (-0.1, 0.5), (0.0, 1.5)):
        with pytest.raises(ValueError, match="--cql_ramp"):
            TrainConfig(cql_coeff=0.1, cql_ramp=ramp)
    with pytest.raises(ValueError, match="--cql_ramp .*--cql_coeff 0"):
        TrainConfig(cql_coeff=0.0, cql_ramp=(0.0, 1.0))
    with pytest.raises(ValueError, match="two fractions"):
        TrainConfig(cql_coeff=0.1, cql_ramp=(0.5,))
    with pytest.raises(ValueError, match="--cql_coeff"):
        TrainConfig(cql_coeff=-1.0)
    with pytest.raises(ValueError, match="--cql_ramp .*off in this run"):
        cql_ramp_of(TrainConfig(cql_ramp=(0.0, 1.0)), 0.0)


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
    seen, update = [], tr.update

    def recording_update():
        out = update()
        seen.append(float(tr.loss.cql_scale))
        return out

    tr.update = recording_update
    return seen


def test_the_trainer_ramps_the_scale_and_a_resume_continues_it(tmp_path):
    # 4 epochs x 2 updates; ramp from a quarter (update 3) to three quarters (update 7) of the 8 updates
    kw = dict(cql_coeff=0.1, cql_ramp=(0.25, 0.75))
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, **kw), _make_env, _make_env)
    seen = _record_scales(tr)
    tr.train(epochs=2)
    assert seen == pytest.approx([0.0, 0.0, 0.0, 0.25])  # updates 1..4: i / 8 = 0, 1/8, 2/8, 3/8 done
    path = tr.save()
    tr.close()
    assert load_checkpoint(path)["cql_resolved"] == {"cql_coeff": 0.1, "cql_ramp": [0.25, 0.75]}
    resumed = AMAGOTrainer(_tiny_cfg(tmp_path, **kw), _make_env, _make_env)
    assert resumed.resume() and resumed.grad_steps == 4
    metrics = resumed.learn()  # the 5th and 6th updates
    assert float(resumed.loss.cql_scale) == pytest.approx(0.75)
    assert metrics["train-update/cql_scale"] == pytest.approx(0.75)
    assert metrics["train-update/cql_gap"] > 0
    resumed.close()


@pytest.mark.parametrize("gamma, agent_type, want", [(0.9999, "agent", 0.1), (0.999, "agent", 0.0),
                                                     (0.9999, "multitask", 0.0)])
def test_a_trainer_left_at_the_default_ramps_the_term_on_long_horizons_only(tmp_path, gamma, agent_type, want):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, gamma=gamma, agent_type=agent_type), _make_env, _make_env)
    assert tr.loss.cql_coeff == want
    seen = _record_scales(tr)
    tr.train(epochs=2)
    if want:  # off for the first tenth of the run's 8 updates, then (i / 8 - 0.1) / 0.9 before update i + 1
        assert seen == pytest.approx([0.0, 0.025 / 0.9, 0.15 / 0.9, 0.275 / 0.9])
    else:
        assert tr.cql_factor is None and seen == [1.0] * 4  # the buffer is never touched; the term is not computed
    tr.close()


def test_a_loss_without_the_scale_is_refused(tmp_path):
    class NoScale(torch.nn.Module):
        cql_coeff = 0.1

    with pytest.raises(ValueError, match="--cql_coeff 0.1 on a --cql_ramp schedule .*cql_scale"):
        AMAGOTrainer(_tiny_cfg(tmp_path, cql_coeff=0.1, cql_ramp=(0.0, 1.0)), _make_env, _make_env, loss=NoScale())


def test_the_flag_parses_to_a_pair():
    from torchrl_amago.trainers.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser("x").parse_args(["--cql_coeff", "0.1", "--cql_ramp", "0.25", "1"]))
    assert cfg.cql_ramp == (0.25, 1.0) and cfg.cql_coeff == 0.1
    assert config_from_args(build_parser("x").parse_args([])).cql_ramp is None


def test_a_run_made_before_the_default_resumes_with_the_term_off():
    """Older checkpoints store --cql_coeff 0.0 and no --cql_ramp: resuming them at the new default is refused by name,
    with --cql_coeff 0 it is no change."""
    from torchrl_amago.trainers.resume_config import check_resume_config, config_changes

    old = TrainConfig().to_dict()
    old["cql_coeff"] = 0.0
    del old["cql_ramp"]
    with pytest.raises(ValueError, match="--cql_coeff: checkpoint 0.0 -> now None"):
        check_resume_config(old, TrainConfig().to_dict(), "ckpt.pt")
    assert config_changes(old, TrainConfig(cql_coeff=0.0).to_dict()) == {}


def test_resume_compares_the_weight_each_run_used_not_the_raw_flag():
    """A run that left --cql_coeff unset stored None: where None meant 0 (no discount reaches 0.9999), `--cql_coeff 0`
    is the same setting and the example's explicit 0.1 is refused by name; where None meant 0.1 ramped `0.1 1`, an
    explicit 0.1 (full weight from the first update) is refused by its ramp."""
    from torchrl_amago.trainers.run_checkpoint import check_resume
    from torchrl_amago.trainers import CheckpointError

    popgym_like = TrainConfig(gamma=0.999)  # the unset flag resolves to 0 here
    stored = {"config": popgym_like.to_dict()}
    assert stored["config"]["cql_coeff"] is None
    assert check_resume(stored, popgym_like.replace(cql_coeff=0.0), "ckpt.pt", per_action_critic=True) == {}
    with pytest.raises(CheckpointError, match="--cql_coeff: checkpoint 0.0 -> now 0.1"):
        check_resume(stored, popgym_like.replace(cql_coeff=0.1), "ckpt.pt", per_action_critic=True)

    tmaze_like = TrainConfig(gamma=0.9999)  # the unset flag resolves to 0.1 ramped over the run
    stored = {"config": tmaze_like.to_dict()}
    with pytest.raises(CheckpointError, match=r"--cql_ramp: checkpoint \[0.1, 1.0\] -> now \[0.0, 0.0\]"):
        check_resume(stored, tmaze_like.replace(cql_coeff=0.1), "ckpt.pt", per_action_critic=True)
    assert check_resume(stored, tmaze_like.replace(cql_coeff=0.1, cql_ramp=(0.1, 1.0)), "ckpt.pt",
                        per_action_critic=True) == {}
    # without a per-action critic the term is off whatever the flag: nothing to compare
    assert check_resume(stored, tmaze_like.replace(cql_coeff=0.0), "ckpt.pt", per_action_critic=False) == {}


def test_a_checkpoint_keeps_the_term_its_run_used_when_the_default_moves():
    """The saved `cql_resolved` wins over resolving the stored flags with today's defaults: a run that left the flags
    unset and used another ramp than today's default is refused by name; its own ramp resumes it."""
    from torchrl_amago.trainers.run_checkpoint import check_resume
    from torchrl_amago.trainers import CheckpointError

    tmaze_like = TrainConfig(gamma=0.9999)
    stored = {"config": tmaze_like.to_dict(), "cql_resolved": {"cql_coeff": 0.1, "cql_ramp": [0.0, 0.5]}}
    today = list(cql_ramp_of(tmaze_like, 0.1))
    assert today != [0.0, 0.5]
    with pytest.raises(CheckpointError, match=rf"--cql_ramp: checkpoint \[0.0, 0.5\] -> now \{today}"):
        check_resume(stored, tmaze_like, "ckpt.pt", per_action_critic=True)
    assert check_resume(stored, tmaze_like.replace(cql_ramp=(0.0, 0.5)), "ckpt.pt", per_action_critic=True) == {}
    for bad in ([0.1, [0.0, 0.5]], {"cql_coeff": 0.1, "cql_ramp": [0.0, 0.5], "extra": 1}):
        with pytest.raises(CheckpointError, match="'cql_resolved' must map cql_coeff / cql_ramp"):
            check_resume({**stored, "cql_resolved": bad}, tmaze_like, "ckpt.pt", per_action_critic=True)
