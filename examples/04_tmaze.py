"""04 — Passive T-Maze: long-term recall. The goal side is shown only in the first observation and must be
recalled after a corridor of `--horizon` steps. Shows: a Transformer policy solving long credit assignment
with the original's T-Maze exploration schedule (greedy actions; epsilon-greedy only near the corridor ends),
epsilon annealed over the whole run (the original anneals over 100,000 steps, longer than these runs), acting gamma
0.9999 with `trainers.LONG_HORIZON_PRESET` (the encoders' target copy and a conservative critic term ramped in).

    python examples/04_tmaze.py --horizon 100 --epochs 80 --run_name tmaze100   # seeds 0-3: 1.0 by 1,040 updates, held
    python examples/04_tmaze.py --horizon 100 --eps_steps_anneal 100000   # the original's own schedule
"""
from torchrl_amago.trainers import (LONG_HORIZON_PRESET, example_args, example_flags, parse_config, positive_int,
                                    share_of_run, run_main)


def extra(p):
    p.add_argument("--horizon", type=positive_int, default=20, help="corridor length (the original's --horizon)")
    p.add_argument("--test_mult", type=positive_int, default=5,
                   help="final eval steps per env = test_mult * trial length")


def main(argv=None):
    trial_len = example_args(extra, argv).horizon + 1
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name=f"tmaze{trial_len - 1}", max_seq_len=trial_len, timesteps_per_epoch=trial_len, parallel_envs=24,
        grads_per_epoch=40, epochs=40, eval_interval=5, eval_timesteps=trial_len, eval_envs=32,
        sample_actions_train=False, sample_actions_eval=False, reward_multiplier=100.0, gamma=0.9999,
        tstep_layers=2, tstep_hidden=128, tstep_out=128, tstep_normalize_inputs=False, memory_size=128,
        memory_layers=2, lr_warmup_steps=100, ckpt_interval=0, eps_end=0.01, eps_steps_anneal=share_of_run(1),
        **LONG_HORIZON_PRESET))
    from torchrl_amago.envs import TMaze, TMazeExploration, make_amago_env
    from torchrl_amago.trainers import AMAGOTrainer

    def make_env(n):
        return make_amago_env(TMaze(n, corridor_length=args.horizon, passive=True, penalty=-1.0 / trial_len))

    action_spec = make_env(1).action_spec
    explore = TMazeExploration(action_spec, horizon=trial_len, eps_start=cfg.eps_start, eps_end=cfg.eps_end,
                               steps_anneal=cfg.eps_steps_anneal)
    trainer = AMAGOTrainer(cfg, make_env, make_env, exploration=explore, env_name=f"TMaze-{args.horizon}",
                           success_threshold=0.5, rollout_horizon=trial_len, settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * trial_len)


if __name__ == "__main__":
    run_main(main)
