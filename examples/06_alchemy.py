"""06 — Symbolic DeepMind Alchemy (dm_alchemy, installed from GitHub: it is not on PyPI). Shows: a dm_env suite
through the generic dm_env -> TorchRL bridge (`torchrl_amago.envs.libs.dm_env_bridge`), a new procedurally generated
level per trial (`torchrl_amago.envs.libs.alchemy`), and a trial structure kept inside the env: one dm_env episode
holds `--num_trials` Alchemy trials of `--steps_per_trial` steps (new stones and potions, same hidden chemistry), so
the agent must infer the chemistry in context. Original settings: max_seq_len 201, bilevel exploration over the
200-step trial, reward multiplier 100, timestep encoder 2x256 -> 256.

    pip install dm-env git+https://github.com/google-deepmind/dm_alchemy.git
    python examples/06_alchemy.py --run_name alchemy
"""
from torchrl_amago.suites import ALCHEMY_LEVEL, ALCHEMY_NUM_TRIALS, ALCHEMY_STEPS_PER_TRIAL, alchemy_episode_length
from torchrl_amago.trainers import cpu_preset, example_args, example_flags, parse_config, positive_int, run_main


def extra(p):
    p.add_argument("--level", type=str, default=ALCHEMY_LEVEL, help="dm_alchemy symbolic level name")
    p.add_argument("--num_trials", type=positive_int, default=ALCHEMY_NUM_TRIALS,
                   help="Alchemy trials per dm_env episode")
    p.add_argument("--steps_per_trial", type=positive_int, default=ALCHEMY_STEPS_PER_TRIAL,
                   help="steps per Alchemy trial")
    p.add_argument("--test_mult", type=positive_int, default=2,
                   help="final eval steps per env = test_mult * (horizon + 1)")


def main(argv=None):
    a = example_args(extra, argv)
    H = alchemy_episode_length(a.num_trials, a.steps_per_trial)  # 200 with the defaults
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name="alchemy", max_seq_len=H + 1, timesteps_per_epoch=H, parallel_envs=8, grads_per_epoch=100,
        epochs=300, eval_interval=10, eval_timesteps=H + 1, eval_envs=8, reward_multiplier=100.0,
        tstep_hidden=256, tstep_out=256, memory_size=128, memory_layers=3, n_heads=8, actor_hidden=256,
        critic_hidden=256, lr_warmup_steps=500, learning_rate=1e-4, dset_max_size=500_000, exploration="bilevel"))
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_alchemy_env, symbolic_alchemy_module

    symbolic_alchemy_module()  # ImportError with the install line when dm_alchemy (or dm-env) is missing

    def make_env(n):
        return make_amago_env(make_alchemy_env(n, args.level, args.num_trials, args.steps_per_trial))

    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, rollout_horizon=H, env_name="SymbolicAlchemy",
                           settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * (H + 1))


if __name__ == "__main__":
    run_main(main)
