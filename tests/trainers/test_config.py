"""TrainConfig: one declaration per field (default, help, section, choices, check), the grouped `--help`, the flag
reference in docs/api/trainers.md generated from it, checks that name the flag, retired flags, and the loss options
reaching the loss."""
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_amago.trainers import TrainConfig, build_parser, parse_config, share_of_run
from torchrl_amago.trainers.cli import markdown_table
from torchrl_amago.trainers.config import RETIRED, SECTIONS, field_default, sections

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api" / "trainers.md"


def test_every_field_is_declared_once_with_help_and_section_and_the_docs_table_is_generated():
    fields = dataclasses.fields(TrainConfig)
    assert len(fields) <= 85
    assert all(f.metadata["help"] and f.metadata["section"] in SECTIONS for f in fields)
    assert [f.name for f in fields] == [f.name for s in sections().values() for f in s]  # declared by section
    text = DOC.read_text()
    table = text.split("<!-- flags:start -->\n", 1)[1].split("\n<!-- flags:end -->", 1)[0]
    assert table == markdown_table()


def test_help_is_grouped_by_section_and_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        build_parser("x", defaults=dict(num_threads=1, max_seq_len=7)).parse_args(["--help"])
    out = capsys.readouterr().out
    heads = [out.index(title + ":") for title in SECTIONS.values()]
    assert heads == sorted(heads)  # every section, in order
    flat = " ".join(out.split())
    assert "{binary, exp, leaky_relu} (default: binary)" in flat
    assert "(default: 0.001 0.99)" in flat and "(default: 0.003)" in flat  # discrete_clip, tau
    assert "idle machine) (default: 1)" in flat  # the example's value after what unset means
    assert flat.count("(default:") == sum(1 for f in dataclasses.fields(TrainConfig)
                                          if f.name in ("num_threads", "max_seq_len") or field_default(f.name) is not None)


def test_help_answers_without_importing_torch():
    code = ("import sys, time; t = time.time(); from torchrl_amago.trainers import parse_config\n"
            "try: parse_config('x', argv=['--help'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "03_popgym.py"), "--help"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    assert "loss: the AMAGO objective" in out and "--max_seq_len" in out and "the episode's length + 1" in out


@pytest.mark.parametrize("kw, flag", [(dict(epochs=0), "epochs"), (dict(learning_rate=float("nan")), "learning_rate"),
                                      (dict(cql_coeff=float("nan")), "cql_coeff"), (dict(seed=-1), "seed"),
                                      (dict(eval_envs=0), "eval_envs"), (dict(eval_timesteps=0), "eval_timesteps"),
                                      (dict(num_threads=-1), "num_threads"), (dict(n_heads=0), "n_heads"),
                                      (dict(memory_size=7), "memory_size"), (dict(max_seq_len=2.5), "max_seq_len"),
                                      (dict(multigammas=[float("nan")]), "multigammas"),
                                      (dict(multigammas=[1.5]), "multigammas"), (dict(gamma=1.0), "gamma"),
                                      (dict(reward_multiplier=float("inf")), "reward_multiplier"),
                                      (dict(cql_ramp=(0.5, 0.1)), "cql_ramp"), (dict(tstep_hidden=-5), "tstep_hidden"),
                                      (dict(discrete_clip=(5.0, -5.0)), "discrete_clip"),
                                      (dict(two_hot_range=(1.0, 1.0)), "two_hot_range"),
                                      (dict(traj_encoder="nosuch"), "traj_encoder"),
                                      (dict(fbc_filter="nosuch"), "fbc_filter"), (dict(critic_hidden=-1), "critic_hidden")])
def test_bad_values_are_refused_naming_the_flag(kw, flag):
    with pytest.raises(ValueError, match=f"--{flag}"):
        TrainConfig(**kw)


def test_retired_flags_and_arguments_say_what_to_use():
    with pytest.raises(TypeError, match=r"TrainConfig\(wandb_project=...\) was retired: use --logger wandb"):
        TrainConfig(wandb_project="proj")
    for argv in (["--wandb_project", "proj"], ["--wandb_project=proj"]):
        with pytest.raises(SystemExit, match="--wandb_project was retired: use --logger wandb"):
            parse_config(argv=argv)
    assert not set(RETIRED) & {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ValueError, match="--wandb_project was retired"):
        build_parser(defaults=dict(wandb_project="proj"))
    with pytest.raises(SystemExit):  # a name retired in an earlier release is an unknown flag (CHANGELOG.md)
        parse_config(argv=["--keep_best"])


def test_derived_default_follows_the_parsed_flags_unless_given():
    defaults = dict(epochs=10, timesteps_per_epoch=7, eps_steps_anneal=share_of_run(0.5))
    assert parse_config(defaults=defaults, argv=[])[0].eps_steps_anneal == 35  # 10 * 7 / 2
    assert parse_config(defaults=defaults, argv=["--epochs", "100"])[0].eps_steps_anneal == 350
    assert parse_config(defaults=defaults, argv=["--timesteps_per_epoch", "3"])[0].eps_steps_anneal == 15
    assert parse_config(defaults=defaults, argv=["--epochs", "100", "--eps_steps_anneal", "9"])[0].eps_steps_anneal == 9


def test_a_derived_default_may_read_another_derived_one_listed_after_it():
    from torchrl_amago.trainers import Derived
    defaults = dict(eps_steps_anneal=share_of_run(1), epochs=2,
                    timesteps_per_epoch=Derived(lambda ns: 3 * ns.max_seq_len, "3 x max_seq_len"), max_seq_len=5)
    assert parse_config(defaults=defaults, argv=[])[0].eps_steps_anneal == 2 * 15


def test_loss_options_reach_the_loss():
    from torchrl_amago.envs import TMaze, make_amago_env
    from torchrl_amago.trainers import build_agent_modules, build_loss

    cfg, _ = parse_config(argv=["--no-popart", "--fbc_filter", "leaky_relu", "--memory_size", "16", "--memory_layers",
                                "1", "--n_heads", "2", "--entropy_coeff", "0.05", "--cql_coeff", "0.2", "--n_step", "4",
                                "--n_step_cut", "1", "--target_encoders", "--reward_multiplier", "3"])
    env = make_amago_env(TMaze(1, corridor_length=3))
    loss = build_loss(cfg, build_agent_modules(cfg, env.observation_spec, env.action_spec))
    assert (loss.use_popart, loss.entropy_coeff, loss.cql_coeff, loss.n_step, loss.n_step_cut,
            loss.reward_multiplier) == (False, 0.05, 0.2, 4, 1.0, 3.0)
    assert loss.target_backbone_params is not None and loss.gammas.tolist()[-1] == pytest.approx(cfg.gamma)
    assert (loss.online_coeff, loss.offline_coeff) == (1.0, 0.1)  # AMAGOLoss's own defaults for the agent
    adv = torch.tensor([-1.0, 0.0, 0.5, 30.0])
    from torchrl_amago.objectives import make_filter
    torch.testing.assert_close(loss.fbc_filter(adv), make_filter("leaky_relu")(adv))


def test_config_defaults_and_choices_are_the_lower_layers_own():
    """The config is torch-free, so it writes the names and defaults of the layers below; these are theirs."""
    from torchrl_amago.data.sampler import PADDING_MODES, TrialWindowSampler
    from torchrl_amago.envs.exploration import EpsilonGreedy
    from torchrl_amago.modules.cnn import BACKBONES
    from torchrl_amago.modules.distributions import CONTINUOUS_OUTPUTS, DEFAULT_DISCRETE_CLIP
    from torchrl_amago.modules.heads import ActorHead, DiscreteCritic, TwoHotCritic
    from torchrl_amago.modules.timestep import CNNTimestepEncoder
    from torchrl_amago.modules.trajectory.registry import trajectory_encoder_names
    from torchrl_amago.modules.trajectory.transformer import POS_EMBS
    from torchrl_amago.objectives import DEFAULT_TAU, FILTERS, AMAGOLoss
    from torchrl_amago.trainers.saved_run import WEIGHTS
    from torchrl_amago.trainers.scale.device import COMPILE_MODES, PRECISIONS
    from torchrl_amago.trainers.run.best_eval import FINAL_EVALS
    import inspect

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(TrainConfig) if f.metadata["choices"]}
    assert set(choices["padded_sampling"]) == set(PADDING_MODES) and set(choices["cnn"]) == set(BACKBONES)
    assert set(choices["continuous_dist"]) == set(CONTINUOUS_OUTPUTS) and set(choices["pos_emb"]) == set(POS_EMBS)
    assert set(choices["fbc_filter"]) == set(FILTERS) and set(choices["eval_only"]) == set(WEIGHTS)
    assert set(choices["compile_loss"]) == set(COMPILE_MODES) and set(choices["mixed_precision"]) == set(PRECISIONS)
    assert set(choices["final_eval"]) == set(FINAL_EVALS)
    assert set(choices["traj_encoder"]) <= set(trajectory_encoder_names())
    c = TrainConfig()
    assert c.discrete_clip == DEFAULT_DISCRETE_CLIP and c.tau == DEFAULT_TAU
    assert c.trim_windows == default(TrialWindowSampler.__init__, "trim")
    assert (c.eps_start, c.eps_end, c.eps_steps_anneal) == (default(EpsilonGreedy, "eps_start"),
                                                             default(EpsilonGreedy, "eps_end"),
                                                             default(EpsilonGreedy, "steps_anneal"))
    assert (c.cnn, c.drqv2_aug) == (default(CNNTimestepEncoder, "cnn_type"), default(CNNTimestepEncoder, "drqv2_aug"))
    assert c.continuous_dist == default(ActorHead, "continuous_dist") and c.num_critics == default(DiscreteCritic,
                                                                                                    "num_critics")
    assert c.two_hot_bins == default(TwoHotCritic, "num_bins")
    assert c.two_hot_range == (default(TwoHotCritic, "min_return"), default(TwoHotCritic, "max_return"))
    for name in ("gamma", "entropy_coeff", "cql_coeff", "reward_multiplier", "popart", "n_step", "n_step_cut",
                 "fbc_filter", "target_encoders"):
        assert getattr(c, name) == default(AMAGOLoss, name), name
