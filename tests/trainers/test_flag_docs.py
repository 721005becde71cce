"""Every TrainConfig field has help text, and the flag reference in docs/api/trainers.md is the one the code
generates (defaults, choices and help come from one place)."""
import dataclasses
from pathlib import Path

import pytest
import torch

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.objectives import leaky_relu_filter
from torchrl_amago.trainers import build_agent_modules, build_loss
from torchrl_amago.trainers.cli import config_from_args
from torchrl_amago.trainers import FIELD_CHOICES, FIELD_HELP, TrainConfig, build_parser, parse_config, share_of_run
from torchrl_amago.trainers.flag_help import markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "api" / "trainers.md"


def test_every_field_has_help_and_the_docs_table_is_generated():
    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(TrainConfig)}
    text = DOC.read_text()
    table = text.split("<!-- flags:start -->\n", 1)[1].split("\n<!-- flags:end -->", 1)[0]
    assert table == markdown_table()


def test_help_lists_choices_and_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser("x").parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{binary, exp, leaky_relu}" in out and "(default: binary)" in out
    assert "(default: (0.001, 0.99))" in out and "(default: 0.003)" in out  # discrete_clip, tau


def test_choices_are_enforced():
    for name, allowed in FIELD_CHOICES.items():
        with pytest.raises(ValueError, match=f"--{name}="):
            TrainConfig(**{name: "no-such-choice"})
        TrainConfig(**{name: allowed[-1]}, **({"max_time_idx": 10} if name == "pos_emb" else {}))


def test_derived_default_follows_the_parsed_flags_unless_given():
    defaults = dict(epochs=10, timesteps_per_epoch=7, eps_steps_anneal=share_of_run(0.5))
    assert parse_config(defaults=defaults, argv=[])[0].eps_steps_anneal == 35  # 10 * 7 / 2
    assert parse_config(defaults=defaults, argv=["--epochs", "100"])[0].eps_steps_anneal == 350
    assert parse_config(defaults=defaults, argv=["--timesteps_per_epoch", "3"])[0].eps_steps_anneal == 15
    assert parse_config(defaults=defaults, argv=["--epochs", "100", "--eps_steps_anneal", "9"])[0].eps_steps_anneal == 9


def test_loss_options_reach_the_loss_and_bad_ones_name_the_flag():
    cfg, _ = parse_config(argv=["--no-popart", "--popart_beta", "0.01", "--no-use_target_actor",
                                "--gumbel_temperature", "2", "--fbc_filter", "leaky_relu", "--fbc_filter_kwargs",
                                "beta=4", "add_binary=0", "--memory_size", "16", "--memory_layers", "1",
                                "--entropy_coeff", "0.05", "--cql_coeff", "0.2", "--pack_windows", "never", "--n_step", "4",
                                "--n_step_cut", "0", "--tree_backup"])
    env = make_amago_env(TMaze(1, corridor_length=3))
    loss = build_loss(cfg, build_agent_modules(cfg, env.observation_spec, env.action_spec))
    assert (loss.use_popart, loss.popart.beta, loss.use_target_actor, loss.gumbel_temperature) == (False, 0.01, False, 2.0)
    assert (loss.entropy_coeff, loss.cql_coeff, loss.pack_windows, loss.n_step, loss.n_step_cut, loss.tree_backup) == (
        0.05, 0.2, "never", 4, 0.0, True)
    adv = torch.tensor([-1.0, 0.0, 0.5, 30.0])
    torch.testing.assert_close(loss.fbc_filter(adv), leaky_relu_filter(adv, beta=4.0, add_binary=False))
    assert (loss.online_coeff, loss.offline_coeff) == (1.0, 0.1)  # AMAGOLoss's own defaults for the agent
    for argv, flag in ((["--fbc_filter_kwargs", "nope=1"], "fbc_filter_kwargs"),
                       (["--fbc_filter_kwargs", "beta"], "fbc_filter_kwargs"),
                       (["--popart_beta", "2"], "popart_beta"),
                       (["--cql_coeff", "-1"], "cql_coeff"),
                       (["--num_actions_for_value_in_actor_loss", "0"], "num_actions_for_value_in_actor_loss")):
        with pytest.raises(ValueError, match=f"--{flag}"):
            config_from_args(build_parser().parse_args(argv))
