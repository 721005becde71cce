"""12 — HalfCheetah-velocity (`pip install "gymnasium[mujoco]"`): MuJoCo HalfCheetah rewarded for running at a hidden
target velocity drawn per 1000-step episode from U(--task_min_velocity, --task_max_velocity). Shows: continuous-control
meta-RL where the task is inferred in context from the rewards (the original's `HalfCheetahV4_MetaVelocity`), with a
short policy context (--max_seq_len 32, the original's --policy_seq_len). Eval returns are also logged per
target-velocity bucket (`eval/return/vel_<lo>-<hi>`).

    python examples/12_half_cheetah_vel.py --run_name cheetah_vel
"""
from torchrl_amago._optional import require
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.half_cheetah_vel import make_half_cheetah_vel_env, velocity_bucket_names
from torchrl_amago.trainers import AMAGOTrainer, example_args, parse_config


def extra(p):
    p.add_argument("--task_min_velocity", type=float, default=0.0, help="lowest target velocity")
    p.add_argument("--task_max_velocity", type=float, default=3.0, help="highest target velocity")
    p.add_argument("--cheetah_version", type=str, default="v4", choices=["v4", "v5"],
                   help="gymnasium HalfCheetah version (the original subclasses v4)")
    p.add_argument("--episode_length", type=int, default=1000, help="steps per episode (one task per episode)")
    p.add_argument("--velocity_buckets", type=int, default=3,
                   help="log eval returns per target-velocity bucket (0: off)")
    p.add_argument("--eval_episodes_per_env", type=int, default=1, help="final eval episodes per eval env")


def main(argv=None, make_gym=None):
    """`make_gym`: optional no-argument factory of `MetaVelocity` envs replacing MuJoCo (tests use a stand-in)."""
    a = example_args(extra, argv)
    ep = a.episode_length
    epochs = 16
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name="cheetah_vel", max_seq_len=32, timesteps_per_epoch=250, parallel_envs=8, grads_per_epoch=100,
        epochs=epochs, eval_interval=4, eval_timesteps=ep, eval_envs=4, reward_multiplier=1.0, gamma=0.99,
        tau=0.005, learning_rate=3e-4, grad_clip=2.0, lr_warmup_steps=100, tstep_layers=2, tstep_hidden=64,
        tstep_out=32, memory_size=32, memory_layers=2, n_heads=2, actor_hidden=64, critic_hidden=64,
        num_critics=2, batch_size=16, dset_max_size=400_000, ckpt_interval=0, num_threads=1,
        eps_steps_anneal=epochs * 250 // 2))
    if make_gym is None:
        require("mujoco", '"gymnasium[mujoco]"', "examples/12_half_cheetah_vel.py")
    lo, hi = args.task_min_velocity, args.task_max_velocity

    def make_env(n):
        return make_amago_env(make_half_cheetah_vel_env(n, lo, hi, version=args.cheetah_version,
                                                        velocity_buckets=args.velocity_buckets,
                                                        max_episode_steps=ep, make_gym=make_gym))

    names = velocity_bucket_names(lo, hi, args.velocity_buckets) if args.velocity_buckets > 0 else None
    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=f"HalfCheetahVel-{lo:g}-{hi:g}", task_names=names)
    return trainer.run("12_half_cheetah_vel", final_eval_timesteps=args.eval_episodes_per_env * ep)


if __name__ == "__main__":
    main()
