"""11 — XLand-MiniGrid meta-RL (`pip install xminigrid`; JAX). Each trial is `--k_episodes` attempts on one ruleset
(goal shown, rules hidden; the room layout changes every attempt), the next trial draws a new ruleset. Shows: an
already-vectorized JAX env with the whole trial logic inside its jitted step (`torchrl_amago.envs.libs.xland`), the
trial as the Transformer's context, and per-attempt returns (the final JSON line lists `eval_episode_<k>_return`).

`--benchmark` takes the official rulesets (`trivial-21k`, `small-1m`, ...; downloaded once by xminigrid, needs
internet) or the local procedural ones that need no download: `local-trivial` (pick up the goal object) and
`local-hidden-rule` (the goal object is not on the floor; picking up one of the floor objects turns into it, and
which one must be found and remembered across attempts) and `local-one-pick` (the same, but the first pick-up ends the
attempt: a wrong one fails it, so only later attempts can succeed reliably). The defaults are a CPU-sized setting;
the original used `--benchmark small-1m --k_episodes 15 --rooms 1 --grid_size 9` with XLand's own episode length.

    python examples/11_xland_minigrid.py --benchmark local-hidden-rule --grid_size 7 --k_episodes 3 --run_name xland
"""
from torchrl_amago.trainers import (cpu_preset, example_args, example_flags, nonneg_int, parse_config, positive_int,
                                    run_main)


def extra(p):
    p.add_argument("--benchmark", type=str, default="local-hidden-rule",
                   help="ruleset benchmark: trivial-21k | small-1m | medium-1m | high-1m | ... | local-trivial | "
                        "local-hidden-rule | local-one-pick")
    p.add_argument("--k_episodes", type=positive_int, default=3,
                   help="attempts per ruleset (one trial); the original: 15-25")
    p.add_argument("--rooms", type=positive_int, default=1, help="rooms in the grid: 1, 2, 4, 6 or 9")
    p.add_argument("--grid_size", type=positive_int, default=7, help="the world is grid_size x grid_size (original: 9)")
    p.add_argument("--max_steps", type=nonneg_int, default=20,
                   help="steps per attempt (XLand's default is 3 * grid_size**2; 0 = that default)")
    p.add_argument("--num_distractors", type=nonneg_int, default=1, help="extra objects on the floor (local rulesets)")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=None,
                   help="final eval steps per eval env (default: 4 trials)")


def xland_factory(a, split: str):
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_xland_env

    def make_env(n):
        return make_amago_env(make_xland_env(
            n, k_episodes=a.k_episodes, rooms=a.rooms, grid_size=a.grid_size, ruleset_benchmark=a.benchmark,
            train_test_split=split, max_steps=a.max_steps or None, num_distractors=a.num_distractors))

    return make_env


def main(argv=None, make_envs=None):
    """`make_envs(args) -> (make_train_env, make_eval_env, _)` replaces the XLand factories (tests)."""
    a = example_args(extra, argv)
    steps = a.max_steps or 3 * a.grid_size ** 2
    trial_len = steps * a.k_episodes  # the longest trial: every attempt runs out of time
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"xland_{a.benchmark}_R{a.rooms}_{a.grid_size}x{a.grid_size}_k{a.k_episodes}",
        max_seq_len=trial_len, timesteps_per_epoch=trial_len, parallel_envs=24, grads_per_epoch=40, epochs=30,
        eval_interval=5, eval_timesteps=trial_len, eval_envs=32, grad_clip=2.0, lr_warmup_steps=100))
    if make_envs is None:
        from torchrl_amago import require

        require("jax", "jax", "examples/11_xland_minigrid.py")
        require("xminigrid", "xminigrid", "examples/11_xland_minigrid.py")
        # train on the train split, evaluate on held-out rulesets (the local rulesets have no split)
        make_train, make_eval = xland_factory(args, "train"), xland_factory(args, "test")
    else:
        make_train, make_eval, _ = make_envs(args)
    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_train, make_eval, rollout_horizon=trial_len,
                           env_name=f"XLand-{args.benchmark}-R{args.rooms}-{args.grid_size}x{args.grid_size}",
                           settings=example_flags(args, "final_eval_timesteps"))
    final = args.final_eval_timesteps if args.final_eval_timesteps is not None else 4 * trial_len
    return trainer.run(final_eval_timesteps=final)


if __name__ == "__main__":
    run_main(main)
