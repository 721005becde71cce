"""14 — Offline and offline-to-online RL from a local dataset. Shows: a D4RL-format HDF5 file or a Minari dataset
(`torchrl_amago.data.load_d4rl_trials` / `load_minari_trials`, never downloaded at run time) split into trials and
loaded into a protected sequence replay (`AMAGOTrainer(offline_data=...)`), trained with the original's offline
settings (filtered BC with the exp filter and no DPG term, 5 critics, gamma .997, right-padded windows of 32 steps,
deterministic acting); `--online_after_epoch N` then collects online data too, mixed 0.8 offline / 0.2 online.
`--env` is the gymnasium env used for evaluation (and online collection).

`--make_dataset` first writes a small D4RL-format CartPole dataset to `--dataset` if that file is missing (a scripted
balancing controller whose actions are replaced by random ones with a per-episode probability in
[`--dataset_min_noise`, 1]), so the whole example runs offline with no download:

    python examples/14_offline.py --make_dataset --dataset runs/cartpole_d4rl.hdf5 --run_name offline_cartpole
"""
import os
import sys

import gymnasium as gym
import numpy as np
from torchrl.data import OneHot
from torchrl.envs import GymEnv, GymWrapper, SerialEnv

from torchrl_amago._optional import require
from torchrl_amago.envs import make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, example_args, parse_config

NEVER = 10 ** 9


def extra(p):
    p.add_argument("--dataset", type=str, default="runs/cartpole_d4rl.hdf5",
                   help="D4RL-format .hdf5 file, or a Minari dataset folder / id (with --format minari)")
    p.add_argument("--format", type=str, default="d4rl", choices=["d4rl", "minari"], help="dataset format")
    p.add_argument("--env", type=str, default="CartPole-v1", help="gymnasium env id for evaluation / online data")
    p.add_argument("--max_episode_steps", type=int, default=200, help="time limit of --env (0: the env's own)")
    p.add_argument("--online_after_epoch", type=int, default=None,
                   help="start collecting online data at this epoch (default: never, pure offline)")
    p.add_argument("--offline_weight", type=float, default=0.8, help="share of offline windows once online")
    p.add_argument("--make_dataset", action="store_true",
                   help="write a scripted noisy-expert CartPole dataset to --dataset (D4RL format) if it is missing")
    p.add_argument("--dataset_episodes", type=int, default=100, help="episodes in the --make_dataset dataset")
    p.add_argument("--dataset_min_noise", type=float, default=0.3,
                   help="--make_dataset: per-episode random-action probability drawn from [this, 1]")
    p.add_argument("--final_eval_timesteps", type=int, default=None, help="final eval steps per env (default 3x limit)")


def time_limit(env_id: str, max_episode_steps: int | None) -> int:
    if max_episode_steps:
        return max_episode_steps
    spec = gym.spec(env_id)
    if spec.max_episode_steps is None:
        raise ValueError(f"{env_id} has no time limit: pass --max_episode_steps")
    return spec.max_episode_steps


def make_gym_env(env_id: str, max_episode_steps: int | None):
    """One TorchRL env: discrete actions as indices (like the dataset), Box actions rescaled to [-1, 1]."""
    kw = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    probe = gym.make(env_id, **kw)
    space = probe.action_space
    probe.close()
    if isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1)):
        one = np.ones(space.shape, dtype=np.float32)
        return GymWrapper(gym.wrappers.RescaleAction(gym.make(env_id, **kw), -one, one))
    return GymEnv(env_id, categorical_action_encoding=True, **kw)


def action_info(env_id: str):
    """(num_actions or None, Box bounds to rescale or None) of the env's native action space."""
    space = gym.make(env_id).action_space
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), None
    if isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1)):
        return None, (space.low, space.high)
    return None, None


def make_cartpole_dataset(path: str, episodes: int = 100, min_noise: float = 0.3, max_episode_steps: int = 200,
                          seed: int = 0) -> dict:
    """Roll out a scripted CartPole controller with per-episode action noise and save a D4RL-format HDF5 file.

    Returns the dataset's statistics (number of steps, mean/min/max episode return)."""
    from torchrl_amago.data.d4rl import write_d4rl_hdf5

    env = gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    returns = []
    for ep in range(episodes):
        noise = rng.uniform(min_noise, 1.0)
        obs, _ = env.reset(seed=seed * 100_000 + ep)
        ret = 0.0
        while True:
            expert = int(np.dot([0.1, 0.5, 10.0, 2.0], obs) > 0)  # push towards the side the pole falls to
            a = int(rng.integers(2)) if rng.random() < noise else expert
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(cols, (obs, a, r, term, trunc and not term, nxt)):
                cols[k].append(v)
            ret += r
            obs = nxt
            if term or trunc:
                break
        returns.append(ret)
    env.close()
    arrays = {k: np.asarray(v, dtype=np.float32 if k in ("observations", "next_observations", "rewards") else None)
              for k, v in cols.items()}
    write_d4rl_hdf5(path, **arrays)
    return {"steps": int(len(arrays["rewards"])), "episodes": episodes, "return_mean": float(np.mean(returns)),
            "return_min": float(np.min(returns)), "return_max": float(np.max(returns))}


def load_trials(args, num_actions, bounds, one_hot):
    if args.format == "d4rl":
        from torchrl_amago.data.d4rl import load_d4rl_trials

        return load_d4rl_trials(args.dataset, num_actions=num_actions, one_hot_actions=one_hot, action_bounds=bounds)
    from torchrl_amago.data.minari import load_minari_trials

    return load_minari_trials(args.dataset, one_hot_actions=one_hot, rescale_box_actions=bounds is not None)


def main(argv=None):
    a = example_args(extra, argv)
    limit = time_limit(a.env, a.max_episode_steps or None)
    epochs = 30
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name=f"offline_{a.env.lower().replace('/', '_')}", max_seq_len=32, timesteps_per_epoch=limit,
        parallel_envs=4, grads_per_epoch=100, epochs=epochs, eval_interval=3, eval_timesteps=limit + 1, eval_envs=8,
        start_collecting_at_epoch=NEVER if a.online_after_epoch is None else a.online_after_epoch,
        padded_sampling="right", sample_actions_train=False, sample_actions_eval=False, continuous_dist="beta",
        online_coeff=0.0, offline_coeff=1.0, gamma=0.997, num_critics=5, fbc_filter="exp", reward_multiplier=1.0,
        exploration="egreedy", eps_start=0.05, eps_end=0.01, eps_steps_anneal=15_000, tstep_layers=2,
        tstep_hidden=128, tstep_out=64, memory_size=64, memory_layers=2, n_heads=4, actor_hidden=128,
        critic_hidden=128, lr_warmup_steps=200, learning_rate=3e-4, dset_max_size=200_000, ckpt_interval=0,
        num_threads=1, min_trials_to_learn=2))
    if not 0.0 <= args.offline_weight <= 1.0:
        sys.exit(f"14_offline: --offline_weight must be in [0, 1], got {args.offline_weight}")
    require("h5py", "h5py" if args.format == "d4rl" else "h5py (or minari)", "examples/14_offline.py")
    if args.make_dataset and not os.path.exists(args.dataset):
        if args.format != "d4rl" or a.env != "CartPole-v1":
            sys.exit("14_offline: --make_dataset writes a D4RL-format CartPole-v1 dataset (--format d4rl "
                     "--env CartPole-v1)")
        stats = make_cartpole_dataset(args.dataset, args.dataset_episodes, args.dataset_min_noise, limit, cfg.seed)
        print(f"14_offline: wrote {args.dataset}: {stats}", flush=True)
    if not os.path.exists(args.dataset) and args.format == "d4rl":
        sys.exit(f"14_offline: dataset {args.dataset!r} not found (datasets are never downloaded here; "
                 "pass --make_dataset to write a small CartPole one)")

    def make_env(n):
        return make_amago_env(SerialEnv(n, lambda: make_gym_env(args.env, a.max_episode_steps or None)))

    num_actions, bounds = action_info(args.env)
    probe = make_gym_env(args.env, a.max_episode_steps or None)
    one_hot = isinstance(probe.action_spec, OneHot)
    probe.close()
    trials = load_trials(args, num_actions, bounds, one_hot)
    n_steps = trials.batch_size[0]
    n_trials = int(trials["next", "done"].sum())
    returns = trials["next", "reward"].sum().item() / max(n_trials, 1)
    print(f"14_offline: {n_trials} offline trials, {n_steps} steps, mean return {returns:.1f}", flush=True)
    cfg = cfg.replace(dset_max_size=max(cfg.dset_max_size, n_steps))
    trainer = AMAGOTrainer(cfg, make_env, make_env, offline_data=trials, offline_weight=args.offline_weight,
                           env_name=args.env)
    final = args.final_eval_timesteps if args.final_eval_timesteps is not None else 3 * limit
    return trainer.run("14_offline", final_eval_timesteps=final)


if __name__ == "__main__":
    main()
