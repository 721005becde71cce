"""07 — Meta-World k-shot meta-RL (`pip install metaworld`): each trial is --k attempts of --episode_length steps on
one task drawn from the benchmark's --split (ML1 = one task class with 50 train / 50 test goal variations, or ML10 /
ML45 = 10 / 45 train task classes and 5 held-out test classes); the goal is hidden, a soft-reset flag marks each new
attempt. Shows: in-context adaptation in continuous control (the final JSON line lists `eval_episode_<i>_success`
per attempt i, the original's "Trial {i} Success"), eval returns per task name, and the test split at the end.

    python examples/07_metaworld.py --benchmark reach-v3 --k 3 --run_name mw_reach
"""
from torchrl_amago import require
from torchrl_amago.suites import canonical_benchmark_name
from torchrl_amago.trainers import cpu_preset, example_args, example_flags, parse_config, positive_int, run_main


def extra(p):
    p.add_argument("--benchmark", type=str, default="reach-v3",
                   help="ml10 | ml45 | a Meta-World task name such as reach-v3 (ML1); -v2 names map to -v3")
    p.add_argument("--k", type=positive_int, default=3, help="attempts (episodes) per trial")
    p.add_argument("--episode_length", type=positive_int, default=50,
                   help="steps per attempt (the original: 500, Meta-World's max_path_length)")
    p.add_argument("--split", type=str, default="train", choices=["train", "test"],
                   help="task split the agent trains on")
    p.add_argument("--eval_split", type=str, default="test", choices=["train", "test"],
                   help="task split of the evaluations (the original evaluates on the test split)")
    p.add_argument("--final_eval_trials", type=positive_int, default=2, help="final eval trials per eval env")


def main(argv=None, benchmark_obj=None):
    """`benchmark_obj`: optional Meta-World-like benchmark object replacing `--benchmark` (tests use a stand-in)."""
    a = example_args(extra, argv)
    trial_len = a.k * a.episode_length
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"metaworld_{canonical_benchmark_name(a.benchmark)}_k{a.k}", max_seq_len=min(64, trial_len),
        timesteps_per_epoch=trial_len, parallel_envs=8, grads_per_epoch=60, epochs=25, eval_interval=5,
        eval_timesteps=trial_len, eval_envs=8, reward_multiplier=0.1, learning_rate=5e-4, grad_clip=2.0,
        lr_warmup_steps=100, tstep_hidden=64, tstep_out=32, memory_size=32, n_heads=2, actor_hidden=64,
        critic_hidden=64, num_critics=2, batch_size=16, dset_max_size=400_000, exploration="bilevel"))
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_benchmark, make_metaworld_env, metaworld_task_names

    if benchmark_obj is None:
        require("metaworld", "metaworld", "examples/07_metaworld.py")
        bench = make_benchmark(args.benchmark, seed=args.seed)
    else:
        bench = benchmark_obj

    def env_factory(split):
        def make_env(n):
            return make_amago_env(make_metaworld_env(bench, n, split=split, k_episodes=args.k,
                                                     episode_length=args.episode_length))
        return make_env

    names = metaworld_task_names(bench, args.eval_split)
    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, env_factory(args.split), env_factory(args.eval_split), rollout_horizon=trial_len,
                           env_name=f"{canonical_benchmark_name(args.benchmark)}-{args.eval_split}-k{args.k}",
                           task_names=names, settings=example_flags(args, "final_eval_trials"))
    return trainer.run(final_eval_timesteps=args.final_eval_trials * trial_len)


if __name__ == "__main__":
    run_main(main)
