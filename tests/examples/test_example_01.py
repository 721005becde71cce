"""Example 01 (any gymnasium env): the CartPole-tuned defaults reach the config, a time limit is a truncation that
the TD target bootstraps through, and continuous actions with other bounds are rescaled to [-1, 1]."""
import torch
from torchrl.envs import SerialEnv

from tests.examples.test_examples_smoke import load_example
from torchrl_amago.envs import make_amago_env
from torchrl_amago.objectives import nstep_return
from torchrl_amago.trainers import parse_config


def _config(argv=()):
    mod = load_example("01_basic_gym")
    a = mod.example_args(mod.extra, list(argv))
    return parse_config(mod.__doc__, extra=mod.extra, argv=list(argv), defaults=mod.defaults(a))[0], mod


def test_defaults_are_the_recorded_cartpole_settings():
    cfg, mod = _config()
    # the settings of docs/results/01_cartpole.csv (see docs/domains/gym.md): fast value propagation
    for name, value in mod.CARTPOLE_TUNED.items():
        assert getattr(cfg, name) == value, name
    assert cfg.gamma == 0.99 and cfg.n_step > 1 and cfg.tau > 0.003  # not the slow AMAGO defaults
    assert min(cfg.gammas) >= 0.9  # no near-constant-return gamma (PopArt w blow-up, docs/domains/gym.md)
    # exploration anneals early: per-env acting calls, well inside the run
    assert cfg.eps_steps_anneal * cfg.parallel_envs < cfg.epochs * cfg.timesteps_per_epoch * cfg.parallel_envs / 4
    assert "python examples/01_basic_gym.py\n" in mod.__doc__  # the usage line is the plain command
    # flags still override the defaults
    cfg2, _ = _config(["--tau", "0.003", "--gamma", "0.999", "--run_name", "x"])
    assert (cfg2.tau, cfg2.gamma, cfg2.run_name) == (0.003, 0.999, "x")


def test_time_limit_is_truncation_and_bootstraps():
    mod = load_example("01_basic_gym")
    env = make_amago_env(SerialEnv(1, lambda: mod.make_gym_env("CartPole-v1", max_episode_steps=6)))
    env.set_seed(0)
    acts = iter([0, 1] * 20)  # alternating pushes keep the pole up for 6 steps

    def policy(td):
        return td.set("action", torch.nn.functional.one_hot(torch.tensor([next(acts)]), 2))

    ro = env.rollout(6, policy, break_when_any_done=False)[0]
    nxt = ro["next"]
    assert nxt["truncated"][-1].item() and nxt["done"][-1].item() and not nxt["terminated"][-1].item()
    assert not nxt["done"][:-1].any()
    # the target of the last (truncated) step bootstraps from its successor: 1 + gamma * V(s')
    gammas = torch.tensor([0.5, 0.99])
    target = nstep_return(nxt["reward"][None], nxt["terminated"][None], torch.ones(1, 6, dtype=torch.bool),
                          torch.full((1, 6, 2), 10.0), gammas, n=1)
    assert torch.allclose(target[0, -1], 1 + gammas * 10.0)
    env.close()


def test_continuous_actions_are_rescaled_to_unit_box():
    mod = load_example("01_basic_gym")
    env = mod.make_gym_env("Pendulum-v1")  # bounds [-2, 2]
    spec = env.action_spec
    assert torch.all(spec.space.low == -1) and torch.all(spec.space.high == 1)
    env.close()
    env = mod.make_gym_env("CartPole-v1")
    assert env.action_spec.shape[-1] == 2
    env.close()
