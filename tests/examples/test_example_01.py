"""Example 01 (any gymnasium env): the CartPole settings of the recorded run reach the config, and a time limit is a
truncation that the TD target bootstraps through. The gym adapter itself is tested in tests/envs/libs/test_gym.py."""
import torch

from tests.examples.test_examples_smoke import load_example
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs import make_gym_envs
from torchrl_amago.objectives import nstep_return
from torchrl_amago.trainers import parse_config


def _config(argv=()):
    mod = load_example("01_basic_gym")
    a = mod.example_args(mod.extra, list(argv))
    return parse_config(mod.__doc__, extra=mod.extra, argv=list(argv), defaults=mod.defaults(a))[0], mod


def test_defaults_are_the_recorded_cartpole_settings():
    cfg, mod = _config()
    # the run of docs/results/ablations/01_cartpole_gammas.jsonl (docs/domains/gym.md): eval return 500 at 8,200 updates
    recorded = dict(gamma=0.99, multigammas=[0.9, 0.95, 0.97, 0.995], n_step=5, tau=0.05, learning_rate=5e-4,
                    eps_steps_anneal=1500, max_seq_len=32, batch_size=32, grads_per_epoch=200, timesteps_per_epoch=200,
                    parallel_envs=4, reward_multiplier=1.0, memory_size=64, memory_layers=2, tstep_out=64)
    assert {k: getattr(cfg, k) for k in recorded} == recorded
    assert min(cfg.gammas) >= 0.9  # no near-constant-return gamma (PopArt w blow-up, docs/domains/gym.md)
    assert cfg.discrete_clip == (1e-6, 1.0)  # the actor's clip, which the loss now reads too
    assert "python examples/01_basic_gym.py\n" in mod.__doc__  # the usage line is the plain command
    # flags still override the defaults
    cfg2, _ = _config(["--tau", "0.003", "--gamma", "0.999", "--run_name", "x"])
    assert (cfg2.tau, cfg2.gamma, cfg2.run_name) == (0.003, 0.999, "x")


def test_time_limit_is_truncation_and_bootstraps():
    env = make_amago_env(make_gym_envs("CartPole-v1", 1, max_episode_steps=6))
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
