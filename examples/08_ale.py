"""08 — Multi-game Atari (`pip install ale-py`). Shows: pixel observations through AMAGO's CNN timestep encoder
(nature / drq / impala backbones, DrQ-v2 random-shift augmentation) and multi-task training with one game per env
slot (round robin over `--games`; every slot reports a `task_id`, so the eval returns are also logged per game).
Rewards are unclipped (scaled by `--reward_multiplier`, 0.25 as the original); with more than one game the
multi-task agent (AMAGO-2: two-hot critic, filtered BC) is the default.

The defaults are sized for a CPU: one game (RoadRunner), episodes cut at 4,000 frames (1,000 steps), grayscale 42x42
frames, the small Nature CNN, a 32-step context, 5-step returns, 4 env slots per game, episodes stored in the replay
as 96-step snippets (`--traj_save_len`, the original's 3 x max_seq_len) so learning starts before an episode ends.
The timestep encoder is a CNN on the frames (`--cnn`, `--drqv2_aug`, `--tstep_hidden` image features).
The original's setting is `--games Pong Boxing Breakout Gopher MsPacman ChopperCommand CrazyClimber BattleZone
Qbert Seaquest --cnn impala --resolution 84 84 --no-grayscale --frame_skip 5 --time_limit_frames 108000
--max_seq_len 80 --n_step 1 --parallel_envs 20` plus the original's model sizes (a GPU job).

    python examples/08_ale.py --run_name ale_roadrunner      # CPU, ~20 min: return ~5 -> ~840 (one run)
    python examples/08_ale.py --games Pong Boxing Breakout --run_name ale_three   # 12 slots, multi-task agent
"""
import argparse
import sys
from fractions import Fraction

from torchrl_amago import require
from torchrl_amago.suites import ATARI_ACTION_SPACES, ATARI_GAMES, ATARI_TIME_LIMIT_FRAMES
from torchrl_amago.trainers import (Derived, cpu_preset, example_args, example_flags, parse_config, positive_int,
                                    probability, share_of_run, run_main)


def extra(p):
    p.add_argument("--games", type=str, nargs="+", default=["RoadRunner"],
                   help=f"Atari games, one per env slot round robin (the original's 10: {' '.join(ATARI_GAMES)})")
    p.add_argument("--resolution", type=positive_int, nargs=2, default=[42, 42], metavar=("H", "W"),
                   help="frame size after area resizing (original: 84 84)")
    p.add_argument("--grayscale", default=True, action=argparse.BooleanOptionalAction,
                   help="one gray channel instead of RGB (original: RGB, --no-grayscale)")
    p.add_argument("--frame_skip", type=positive_int, default=4,
                   help="emulator frames per action (original example: 5)")
    p.add_argument("--sticky_action_prob", type=probability, default=0.25, help="ALE sticky-action probability")
    p.add_argument("--time_limit_frames", type=positive_int, default=4000,
                   help=f"episode time limit in emulator frames (truncation; original: {ATARI_TIME_LIMIT_FRAMES})")
    p.add_argument("--action_space", type=str, default="discrete", choices=list(ATARI_ACTION_SPACES),
                   help="18 discrete actions, 5 buttons (multibinary) or ALE's continuous [radius, angle, fire]")
    p.add_argument("--terminal_on_life_loss", action="store_true", help="end the episode when a life is lost")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=None,
                   help="final eval steps per eval env (default: 2 x eval_timesteps)")


def main(argv=None):
    a = example_args(extra, argv)
    n = len(a.games)
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name="ale_" + "_".join(g.lower() for g in a.games), agent_type="multitask" if n > 1 else "agent",
        offline_coeff=Derived(lambda c: None if c.agent_type == "multitask" else 0.0,
                              "0 for --agent_type agent (DPG only), the multi-task agent's own for multitask"),
        image_key="observation", cnn="nature", drqv2_aug=True, tstep_out=128, reward_multiplier=0.25, n_step=5,
        max_seq_len=32, traj_save_len=Derived(lambda c: 3 * c.max_seq_len, "3 x max_seq_len, as the original"),
        timesteps_per_epoch=200, parallel_envs=4 * n, grads_per_epoch=50, epochs=30, eval_interval=6,
        eval_timesteps=1000, eval_envs=4 * n, batch_size=12, eps_steps_anneal=share_of_run(Fraction(2, 5))))
    for flag, count in (("--parallel_envs", cfg.parallel_envs), ("--eval_envs", cfg.eval_envs)):
        if count % n:
            sys.exit(f"08_ale: {flag} ({count}) must be a multiple of the number of games ({n}) so every game gets "
                     "the same number of env slots")
    require("ale_py", "ale-py", "examples/08_ale.py")
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_atari_env

    env_kw = dict(frame_skip=args.frame_skip, sticky_action_prob=args.sticky_action_prob,
                  resolution=tuple(args.resolution), grayscale=args.grayscale, action_space=args.action_space,
                  time_limit_frames=args.time_limit_frames, terminal_on_life_loss=args.terminal_on_life_loss)

    def make_env(num_envs):
        return make_amago_env(make_atari_env(args.games, num_envs, **env_kw))

    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name="+".join(args.games), task_names=list(args.games),
                           settings=example_flags(args, "final_eval_timesteps"))
    final = args.final_eval_timesteps if args.final_eval_timesteps is not None else 2 * cfg.eval_timesteps
    return trainer.run(final_eval_timesteps=final)


if __name__ == "__main__":
    run_main(main)
