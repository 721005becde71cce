"""01 — Any gymnasium env through TorchRL's `GymEnv`. Shows: plugging a standard TorchRL env into AMAGO — batch it
with `SerialEnv` (one process; cheap envs are faster without IPC), add AMAGO's per-step keys with `make_amago_env`,
train. Continuous action spaces with bounds other than [-1, 1] are rescaled to [-1, 1] (the policy's range).

    python examples/01_basic_gym.py --env CartPole-v1 --run_name cartpole
"""
import gymnasium as gym
import numpy as np
from torchrl.envs import GymEnv, GymWrapper, SerialEnv

from torchrl_amago.envs import make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, example_args, parse_config


def extra(p):
    p.add_argument("--env", type=str, default="CartPole-v1", help="gymnasium env id")
    p.add_argument("--max_episode_steps", type=int, default=None, help="time limit (default: the env's own)")
    p.add_argument("--final_eval_timesteps", type=int, default=1000, help="final eval steps per eval env")


def make_gym_env(env_id: str, max_episode_steps: int | None = None):
    """One unbatched TorchRL env. `GymEnv` as is, or gymnasium's `RescaleAction` to [-1, 1] for continuous actions
    with other bounds (kept inside the gym env, so `prev_action` records the policy's [-1, 1] action)."""
    kw = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    probe = gym.make(env_id, **kw)
    space = probe.action_space
    probe.close()
    if isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1)):
        return GymWrapper(gym.wrappers.RescaleAction(gym.make(env_id, **kw), -1.0, 1.0))
    return GymEnv(env_id, **kw)


def main(argv=None):
    a = example_args(extra, argv)

    def make_env(n):
        return make_amago_env(SerialEnv(n, lambda: make_gym_env(a.env, a.max_episode_steps)))

    epochs, steps = 30, 200
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name=a.env.lower().replace("/", "_"), max_seq_len=64, timesteps_per_epoch=steps, parallel_envs=4,
        grads_per_epoch=60, epochs=epochs, eval_interval=5, eval_timesteps=600, eval_envs=4,
        reward_multiplier=1.0, discrete_clip=(1e-6, 1.0), tstep_layers=2, tstep_hidden=128, tstep_out=64,
        memory_size=64, memory_layers=2, n_heads=4, actor_hidden=128, critic_hidden=128, lr_warmup_steps=200,
        learning_rate=3e-4, dset_max_size=200_000, ckpt_interval=0, num_threads=1,
        eps_steps_anneal=epochs * steps // 2))
    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=a.env)
    return trainer.run("01_basic_gym", final_eval_timesteps=args.final_eval_timesteps)


if __name__ == "__main__":
    main()
