"""13 — MazeRunner with hindsight relabeling. The agent must visit `--goals` goal cells in order in a random maze it
only sees through wall distances; rewards are sparse. Shows: hindsight instruction relabeling as a replay-buffer
trial transform (`HindsightRelabel` replays each sampled trial with goals it actually reached, using the env's own
pure reward function `mazerunner_relabel_rewards`), and a timestep encoder restricted to the obs keys
["obs", "goals"] (the "achieved" cell is stored for relabeling but hidden from the policy). Compare
`--relabel some` (default), `all` and `none` at equal env steps.

    python examples/13_mazerunner_relabeling.py --maze_size 9 --goals 2 --time_limit 80 --relabel some
    python examples/13_mazerunner_relabeling.py --maze_size 9 --goals 2 --time_limit 80 --relabel none
"""
from torchrl_amago.trainers import (at_least, checked, cpu_preset, example_args, example_flags, parse_config,
                                    positive_int, run_main)


def extra(p):
    p.add_argument("--maze_size", type=checked(int, at_least(7)), default=9,
                   help="maze is size x size, forced odd (the original uses 11)")
    p.add_argument("--goals", type=positive_int, default=2, help="goals to visit in order (the original uses 3)")
    p.add_argument("--time_limit", type=positive_int, default=80, help="steps per trial (the original uses 250)")
    p.add_argument("--randomized_actions", action="store_true", help="permute the action -> direction map per maze")
    p.add_argument("--relabel", choices=("none", "all", "some"), default="some",
                   help="hindsight relabeling strategy (none = plain replay)")
    p.add_argument("--test_mult", type=positive_int, default=4,
                   help="final eval steps per env = test_mult * time_limit")


def make_relabeler(strategy: str, time_limit: int):
    """The trial transform for `--relabel` (a `data.HindsightRelabel`, or None): MazeRunner's own reward/termination
    rule replayed on new goals."""
    if strategy == "none":
        return None
    from torchrl_amago.data import HindsightRelabel
    from torchrl_amago.envs import mazerunner_relabel_rewards

    def relabel_fn(achieved, goals):
        return mazerunner_relabel_rewards(achieved, goals, time_limit=time_limit)

    return HindsightRelabel(relabel_fn, strategy=strategy, goals_key="goals", achieved_key="achieved")


def main(argv=None):
    a = example_args(extra, argv)
    trial_len = a.time_limit + 1
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"maze{a.maze_size}_k{a.goals}_{a.relabel}", max_seq_len=trial_len, timesteps_per_epoch=a.time_limit,
        parallel_envs=12, grads_per_epoch=60, epochs=30, eval_interval=5, eval_timesteps=2 * a.time_limit,
        eval_envs=32, obs_keys=["obs", "goals"]))
    from torchrl_amago.envs import MazeRunner, make_amago_env

    def make_env(n):
        return make_amago_env(MazeRunner(n, maze_dim=a.maze_size, num_goals=a.goals, time_limit=a.time_limit,
                                         randomized_actions=a.randomized_actions))

    dim = a.maze_size if a.maze_size % 2 else a.maze_size + 1
    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, trial_transform=make_relabeler(args.relabel, args.time_limit),
                           success_threshold=float(a.goals), env_name=f"MazeRunner-{dim}x{dim}-k{a.goals}",
                           settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * a.time_limit)


if __name__ == "__main__":
    run_main(main)
