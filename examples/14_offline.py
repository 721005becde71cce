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

from torchrl_amago import require
from torchrl_amago.suites import DATASET_FORMATS
from torchrl_amago.trainers import (cpu_preset, derived_from, example_args, example_flags, nonneg_int, parse_config,
                                    positive_int, probability, run_main)

NEVER = 10 ** 9


def extra(p):
    p.add_argument("--dataset", type=str, default="runs/cartpole_d4rl.hdf5",
                   help="D4RL-format .hdf5 file, or a Minari dataset folder / id (with --format minari)")
    p.add_argument("--format", type=str, default="d4rl", choices=DATASET_FORMATS, help="dataset format")
    p.add_argument("--env", type=str, default="CartPole-v1", help="gymnasium env id for evaluation / online data")
    p.add_argument("--max_episode_steps", type=nonneg_int, default=200, help="time limit of --env (0: the env's own)")
    p.add_argument("--online_after_epoch", type=nonneg_int, default=None,
                   help="start collecting online data at this epoch (default: never, pure offline)")
    p.add_argument("--offline_weight", type=probability, default=0.8, help="share of offline windows once online")
    p.add_argument("--make_dataset", action="store_true",
                   help="write a scripted noisy-expert CartPole dataset to --dataset (D4RL format) if it is missing")
    p.add_argument("--dataset_episodes", type=positive_int, default=100, help="episodes in the --make_dataset dataset")
    p.add_argument("--dataset_min_noise", type=probability, default=0.3,
                   help="--make_dataset: per-episode random-action probability drawn from [this, 1]")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=None,
                   help="final eval steps per env (default 3x limit)")


def time_limit(ns) -> dict:
    """What --env's time limit sets (--max_episode_steps, else the env's own)."""
    from torchrl_amago.envs.libs import gym_time_limit

    limit = gym_time_limit(ns.env, ns.max_episode_steps)
    return dict(limit=limit, timesteps_per_epoch=limit, eval_timesteps=limit + 1)


def main(argv=None):
    a = example_args(extra, argv)
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"offline_{a.env.lower().replace('/', '_')}", max_seq_len=32, parallel_envs=4, grads_per_epoch=100,
        epochs=30, eval_interval=3, eval_envs=8, **derived_from(time_limit, {
            "timesteps_per_epoch": "--env's time limit", "eval_timesteps": "--env's time limit + 1"}),
        start_collecting_at_epoch=NEVER if a.online_after_epoch is None else a.online_after_epoch,
        padded_sampling="right", sample_actions_train=False, sample_actions_eval=False, continuous_dist="beta",
        online_coeff=0.0, offline_coeff=1.0, gamma=0.997, num_critics=5, fbc_filter="exp", reward_multiplier=1.0,
        eps_start=0.05, eps_end=0.01, eps_steps_anneal=15_000))
    require("h5py", "h5py" if args.format == "d4rl" else "h5py (or minari)", "examples/14_offline.py")
    from torchrl_amago.data import load_dataset_trials, write_cartpole_dataset
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import gym_action_info, make_gym_envs
    from torchrl_amago.trainers import AMAGOTrainer

    limit = time_limit(args)["limit"]
    if args.make_dataset and not os.path.exists(args.dataset):
        if args.format != "d4rl" or a.env != "CartPole-v1":
            sys.exit("14_offline: --make_dataset writes a D4RL-format CartPole-v1 dataset (--format d4rl "
                     "--env CartPole-v1)")
        stats = write_cartpole_dataset(args.dataset, args.dataset_episodes, args.dataset_min_noise, limit, cfg.seed)
        print(f"14_offline: wrote {args.dataset}: {stats}", flush=True)
    num_actions, bounds = gym_action_info(args.env)
    try:  # discrete actions as indices, like the dataset
        trials = load_dataset_trials(args.dataset, args.format, num_actions=num_actions, action_bounds=bounds)
    except FileNotFoundError as e:
        sys.exit(f"14_offline: {e}; pass --make_dataset to write a small CartPole one")
    n_trials = int(trials["next", "done"].sum())
    print(f"14_offline: {n_trials} offline trials, {trials.batch_size[0]} steps, mean return "
          f"{trials['next', 'reward'].sum().item() / max(n_trials, 1):.1f}", flush=True)

    def make_env(n):
        return make_amago_env(make_gym_envs(args.env, n, a.max_episode_steps, categorical_actions=True))

    trainer = AMAGOTrainer(cfg.replace(dset_max_size=max(cfg.dset_max_size, trials.batch_size[0])), make_env,
                           make_env, offline_data=trials, offline_weight=args.offline_weight, env_name=args.env,
                           settings=example_flags(args, "final_eval_timesteps", "make_dataset", "dataset_episodes",
                                                  "dataset_min_noise"))
    final = args.final_eval_timesteps if args.final_eval_timesteps is not None else 3 * limit
    return trainer.run(final_eval_timesteps=final)


if __name__ == "__main__":
    run_main(main)
