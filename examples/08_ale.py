"""08 — Multi-game Atari (`pip install ale-py`). Shows: pixel observations through AMAGO's CNN timestep encoder
(nature / drq / impala backbones, DrQ-v2 random-shift augmentation) and multi-task training with one game per env
slot (round robin over `--games`; every slot reports a `task_id`, so the eval returns are also logged per game).
Rewards are unclipped (scaled by `--reward_multiplier`, 0.25 as the original); with more than one game the
multi-task agent (AMAGO-2: two-hot critic, filtered BC) is the default.

The defaults are sized for a CPU: one game (RoadRunner), episodes cut at 4,000 frames (1,000 steps), grayscale 42x42
frames, the small Nature CNN, a 32-step context, 5-step returns, 4 env slots per game, episodes stored in the replay
as 96-step snippets (`--traj_save_len`, the original's 3 x max_seq_len) so learning starts before an episode ends.
The original's setting is `--games Pong Boxing Breakout Gopher MsPacman ChopperCommand CrazyClimber BattleZone
Qbert Seaquest --cnn impala --resolution 84 84 --no-grayscale --frame_skip 5 --time_limit_frames 108000
--max_seq_len 80 --n_step 1 --parallel_envs 20` plus the original's model sizes (a GPU job).

    python examples/08_ale.py --run_name ale_roadrunner      # CPU, ~20 min: return ~5 -> ~840 (one run)
    python examples/08_ale.py --games Pong Boxing Breakout --run_name ale_three   # 12 slots, multi-task agent
"""
import argparse
import sys

import torch

from torchrl_amago._optional import require
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.atari import (ACTION_SPACES, DEFAULT_GAMES, TIME_LIMIT_FRAMES, atari_action_dim,
                                           atari_obs_shape, make_atari_env)
from torchrl_amago.modules import CNNTimestepEncoder
from torchrl_amago.trainers import AMAGOTrainer, example_args, parse_config


def extra(p):
    p.add_argument("--games", type=str, nargs="+", default=["RoadRunner"],
                   help=f"Atari games, one per env slot round robin (the original's 10: {' '.join(DEFAULT_GAMES)})")
    p.add_argument("--cnn", type=str, default="nature", choices=["nature", "drq", "impala", "gridworld"],
                   help="CNN backbone of the timestep encoder (the original uses impala)")
    p.add_argument("--resolution", type=int, nargs=2, default=[42, 42], metavar=("H", "W"),
                   help="frame size after area resizing (original: 84 84)")
    p.add_argument("--grayscale", default=True, action=argparse.BooleanOptionalAction,
                   help="one gray channel instead of RGB (original: RGB, --no-grayscale)")
    p.add_argument("--frame_skip", type=int, default=4, help="emulator frames per action (original example: 5)")
    p.add_argument("--sticky_action_prob", type=float, default=0.25, help="ALE sticky-action probability")
    p.add_argument("--time_limit_frames", type=int, default=4000,
                   help=f"episode time limit in emulator frames (truncation; original: {TIME_LIMIT_FRAMES})")
    p.add_argument("--action_space", type=str, default="discrete", choices=list(ACTION_SPACES),
                   help="18 discrete actions, 5 buttons (multibinary) or ALE's continuous [radius, angle, fire]")
    p.add_argument("--terminal_on_life_loss", action="store_true", help="end the episode when a life is lost")
    p.add_argument("--drqv2_aug", default=True, action=argparse.BooleanOptionalAction,
                   help="DrQ-v2 random-shift augmentation of the frames in training (as the original)")
    p.add_argument("--final_eval_timesteps", type=int, default=None,
                   help="final eval steps per eval env (default: 2 x eval_timesteps)")


def _agent_type(argv) -> str | None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent_type", type=str, default=None)
    return pre.parse_known_args(argv)[0].agent_type


def main(argv=None):
    a = example_args(extra, argv)
    agent_type = _agent_type(argv) or ("multitask" if len(a.games) > 1 else "agent")
    n = len(a.games)
    epochs, steps = 30, 200
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name="ale_" + "_".join(g.lower() for g in a.games), agent_type=agent_type,
        # the original's --agent_type rule: filtered BC only for the multi-task agent
        offline_coeff=1.0 if agent_type == "multitask" else 0.0, reward_multiplier=0.25, n_step=5,
        max_seq_len=32, timesteps_per_epoch=steps, parallel_envs=4 * n, grads_per_epoch=50, epochs=epochs,
        eval_interval=6, eval_timesteps=1000, eval_envs=4 * n, batch_size=12, tstep_hidden=128, tstep_out=128,
        memory_size=64, memory_layers=2, n_heads=4, actor_hidden=128, critic_hidden=128, lr_warmup_steps=200,
        learning_rate=3e-4, grad_clip=1.0, dset_max_size=200_000, ckpt_interval=0, num_threads=1,
        eps_steps_anneal=2 * epochs * steps // 5))
    for flag, count in (("--parallel_envs", cfg.parallel_envs), ("--eval_envs", cfg.eval_envs)):
        if count % n:
            sys.exit(f"08_ale: {flag} ({count}) must be a multiple of the number of games ({n}) so every game gets "
                     "the same number of env slots")
    require("ale_py", "ale-py", "examples/08_ale.py")
    if cfg.traj_save_len is None:  # the original's traj_save_len = 3 x max_seq_len
        cfg = cfg.replace(traj_save_len=3 * cfg.max_seq_len)
    env_kw = dict(frame_skip=args.frame_skip, sticky_action_prob=args.sticky_action_prob,
                  resolution=tuple(args.resolution), grayscale=args.grayscale, action_space=args.action_space,
                  time_limit_frames=args.time_limit_frames, terminal_on_life_loss=args.terminal_on_life_loss)

    def make_env(num_envs):
        return make_amago_env(make_atari_env(args.games, num_envs, **env_kw))

    obs_shape = atari_obs_shape(args.resolution, args.grayscale)
    torch.manual_seed(cfg.seed)  # the encoder is built before the trainer seeds torch
    tstep = CNNTimestepEncoder({"observation": obs_shape}, atari_action_dim(args.action_space), cnn_type=args.cnn,
                               channels_first=True, img_features=cfg.tstep_hidden, d_output=cfg.tstep_out,
                               drqv2_aug=args.drqv2_aug)
    trainer = AMAGOTrainer(cfg, make_env, make_env, timestep_encoder=tstep, env_name="+".join(args.games),
                           task_names=list(args.games))
    final = args.final_eval_timesteps if args.final_eval_timesteps is not None else 2 * cfg.eval_timesteps
    return trainer.run("08_ale", final_eval_timesteps=final)


if __name__ == "__main__":
    main()
