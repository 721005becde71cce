"""00 — Meta-Frozen-Lake: k-episode meta-RL. Each trial is `--k_episodes` attempts on one random lake; the holes are
invisible, so the agent has to remember where it fell in and which path reached the goal. Shows: in-context
adaptation within a trial (the per-episode success rises from the first to the last attempt; the final JSON line
lists `eval_episode_<k>_success` for every attempt k).

    python examples/00_meta_frozen_lake.py --lake_size 4 --k_episodes 3 --run_name lake4
"""
from torchrl_amago.trainers import (Derived, at_least, between, checked, cpu_preset, example_args, example_flags,
                                    parse_config, positive_int, probability, run_main)


def extra(p):
    p.add_argument("--lake_size", type=checked(int, at_least(2)), default=4,
                   help="lake is size x size (the original's CLI uses 5)")
    p.add_argument("--k_episodes", type=positive_int, default=3, help="attempts per trial (the original uses 10)")
    p.add_argument("--hard_mode", action="store_true", help="swapped actions, melting ice, noisy position")
    p.add_argument("--recover_mode", action="store_true",
                   help="falling in a hole costs 0.1 instead of ending the attempt")
    p.add_argument("--slip_chance", type=checked(float, between(0, 1, hi_open=True)), default=0.0,
                   help="probability that an action becomes 'stay'")
    p.add_argument("--max_episode_steps", type=positive_int, default=None,
                   help="steps per attempt (default: size^2, see env)")
    p.add_argument("--hide_k_progress", action="store_true", help="do not show attempts_done/k in the observation")
    p.add_argument("--test_mult", type=positive_int, default=4,
                   help="final eval steps per env = test_mult * trial length")


def make_env_factory(a):
    from torchrl_amago.envs import MetaFrozenLake, make_amago_env

    def make_env(n):
        return make_amago_env(MetaFrozenLake(n, size=a.lake_size, k_episodes=a.k_episodes, hard_mode=a.hard_mode,
                                             recover_mode=a.recover_mode, slip_chance=a.slip_chance,
                                             max_episode_steps=a.max_episode_steps,
                                             show_k_progress=not a.hide_k_progress))

    return make_env


def trial_length(a) -> int:
    """The original's trial length R: steps per attempt x attempts (the longest possible trial)."""
    return make_env_factory(a)(1).base_env.max_episode_steps * a.k_episodes


def main(argv=None):
    a = example_args(extra, argv)
    trial = Derived(trial_length, "steps per attempt x --k_episodes")
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"lake{a.lake_size}_k{a.k_episodes}", max_seq_len=trial, timesteps_per_epoch=trial,
        parallel_envs=16, grads_per_epoch=50, epochs=80, eval_interval=5,
        eval_timesteps=Derived(lambda ns: 2 * trial_length(ns), "2 x steps per attempt x --k_episodes"),
        eval_envs=32, tstep_layers=1, tstep_normalize_inputs=False, actor_hidden=256, critic_hidden=256, tau=0.004))
    make_env, trial_len = make_env_factory(args), trial_length(args)
    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, rollout_horizon=trial_len,
                           env_name=f"MetaFrozenLake-{a.lake_size}x{a.lake_size}-k{a.k_episodes}",
                           settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * trial_len)


if __name__ == "__main__":
    run_main(main)
