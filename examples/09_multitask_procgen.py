"""09 — Two-attempt multi-game Procgen (`pip install procgen-mirror`). Each trial is two attempts at one procgen
level (game and level seed drawn per trial; a black 4x4 box in the corner marks the second attempt); train levels
come from seeds [0, --train_seeds], eval levels are unseen seeds above it. Shows: image observations through a CNN
timestep encoder, a multi-task agent (AMAGO-2's two-hot critic + filtered BC, the default with more than one game)
with eval returns per game (`eval/return/<game>`) and per attempt (`eval_episode_0_return` / `..._1_return`).
CPU-sized defaults (docs/domains/procgen.md): one game learns a little in ~12 minutes (starpilot trial return
2.2 -> 4.9 with the first command below); the original's 5-game setting is far beyond a CPU budget.

    python examples/09_multitask_procgen.py --games starpilot --horizon 500 --eval_timesteps 300 \
        --final_eval_timesteps 1000 --run_name procgen_starpilot
    python examples/09_multitask_procgen.py --games starpilot dodgeball --horizon 500   # multi-task agent
    python examples/09_multitask_procgen.py --distribution easy   # the original's 5 easy games
"""
import sys
from fractions import Fraction

from torchrl_amago import available
from torchrl_amago.suites import PROCGEN_GAMES, PROCGEN_PIP_PACKAGE, PROCGEN_SETTINGS, PROCGEN_TEST_SEED_MAX
from torchrl_amago.trainers import (cpu_preset, example_args, example_flags, nonneg_int, parse_config, positive_int,
                                    share_of_run, run_main)


def extra(p):
    p.add_argument("--games", nargs="+", default=None, choices=PROCGEN_GAMES,
                   help="procgen games drawn per trial (default: the --distribution's games)")
    p.add_argument("--distribution", default="easy", choices=sorted(PROCGEN_SETTINGS),
                   help="the original's settings: easy (climber coinrun jumper ninja leaper), easy-rescaled (same, "
                        "coinrun x100, climber x0.1), memory-hard (all 16 games, procgen memory/hard mode)")
    p.add_argument("--train_seeds", type=nonneg_int, default=10_000,
                   help="train levels are seeds [0, train_seeds]; eval "
                   f"levels are (train_seeds, {PROCGEN_TEST_SEED_MAX:,}]")
    p.add_argument("--horizon", type=positive_int, default=None,
                   help="trial time limit in steps (default: the original's 2000 on easy, 5000 on memory-hard)")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=None,
                   help="final eval steps per eval env (default: 2 * horizon)")


def main(argv=None, game_factory=None):
    """`game_factory` replaces procgen (tests use a stand-in with procgen's gym3 interface)."""
    a = example_args(extra, argv)
    setting = PROCGEN_SETTINGS[a.distribution]
    games = list(a.games or setting["games"])
    horizon = a.horizon or setting["horizon"]
    multitask = len(games) > 1
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"procgen_{a.distribution}_{'_'.join(games) if len(games) <= 2 else len(games)}",
        agent_type="multitask" if multitask else "agent", image_key="observation", cnn="nature", max_seq_len=16,
        timesteps_per_epoch=100, parallel_envs=8, grads_per_epoch=50, epochs=45, eval_interval=5,
        eval_timesteps=horizon, eval_envs=8, batch_size=8, gamma=0.99, lr_warmup_steps=100, dset_max_size=50_000,
        eps_steps_anneal=share_of_run(Fraction(1, 3))))
    if game_factory is None and not available("procgen"):
        sys.exit(f"09_multitask_procgen needs procgen: `pip install {PROCGEN_PIP_PACKAGE}` (the official `procgen` "
                 "package has no wheels for Python > 3.10)")
    if args.train_seeds < 0 or args.train_seeds + 1 >= PROCGEN_TEST_SEED_MAX:
        sys.exit(f"--train_seeds must be in [0, {PROCGEN_TEST_SEED_MAX - 1}), got {args.train_seeds}")
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_procgen_env

    kw = dict(distribution_mode=setting["distribution_mode"], reward_scales=setting["reward_scales"])
    if game_factory is not None:
        kw["game_factory"] = game_factory

    def make_train_env(n):
        return make_amago_env(make_procgen_env(games, n, seed_range=(0, args.train_seeds), **kw), max_steps=horizon)

    def make_eval_env(n):
        return make_amago_env(make_procgen_env(games, n, seed_range=(args.train_seeds + 1, PROCGEN_TEST_SEED_MAX),
                                               **kw), max_steps=horizon)

    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_train_env, make_eval_env, env_name=f"procgen-{a.distribution}",
                           task_names=games if multitask else None,
                           settings=example_flags(args, "final_eval_timesteps"))
    # a trial lasts at most `horizon` steps, so every eval env finishes at least two trials
    return trainer.run(final_eval_timesteps=args.final_eval_timesteps or 2 * horizon)


if __name__ == "__main__":
    run_main(main)
