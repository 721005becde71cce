"""05 — Dark Key-To-Door: fixed-horizon meta-RL. In a dark room the agent must find an invisible key, then an
invisible door (reward 1 each); each attempt restarts at the start cell and the trial lasts `--meta_horizon` steps,
so an agent that remembers the key and door positions solves more attempts per trial. Shows: a fixed step budget
per trial with the original's bilevel epsilon-greedy exploration (epsilon decays over training *and* within each
trial; `rollout_horizon` = the meta horizon).

    python examples/05_dark_key_door.py --room_size 4 --episode_length 10 --meta_horizon 100 --run_name keydoor4
"""
from torchrl_amago.trainers import cpu_preset, example_args, example_flags, parse_config, positive_int, run_main


def extra(p):
    p.add_argument("--meta_horizon", type=positive_int, default=100, help="steps per trial (the original uses 500)")
    p.add_argument("--room_size", type=positive_int, default=4, help="room is size x size (the original's CLI uses 8)")
    p.add_argument("--episode_length", type=positive_int, default=10, help="steps per attempt (the original uses 50)")
    p.add_argument("--light_room_observation", action="store_true", help="show the key and door positions")
    p.add_argument("--randomize_actions", action="store_true", help="permute the action -> direction map per trial")
    p.add_argument("--test_mult", type=positive_int, default=4,
                   help="final eval steps per env = test_mult * meta_horizon")


def main(argv=None):
    a = example_args(extra, argv)
    H = a.meta_horizon
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"keydoor{a.room_size}_h{H}", max_seq_len=H, timesteps_per_epoch=H, parallel_envs=12,
        grads_per_epoch=60, epochs=30, eval_interval=5, eval_timesteps=2 * H, eval_envs=32,
        reward_multiplier=100.0, exploration="bilevel"))
    from torchrl_amago.envs import DarkKeyDoor, make_amago_env

    def make_env(n):
        return make_amago_env(DarkKeyDoor(n, size=a.room_size, max_episode_steps=a.episode_length, meta_horizon=H,
                                          dark=not a.light_room_observation, randomize_actions=a.randomize_actions))

    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, rollout_horizon=H, success_threshold=2.0,
                           env_name=f"DarkKeyDoor-{a.room_size}x{a.room_size}-H{H}",
                           settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * H)


if __name__ == "__main__":
    run_main(main)
