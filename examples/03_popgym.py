"""03 — POPGym memory tasks (`pip install popgym`). Shows: a third-party suite through a TorchRL adapter
(`envs.libs.popgym`: flat one-hot observations plus a timer, batched with `SerialEnv`), the whole episode as the
Transformer's context, and the presets chosen by the number of discrete actions (`trainers.action_presets`).
`--env` takes any popgym class name (RepeatPreviousEasy, AutoencodeEasy, MineSweeperEasy, ...).

`--multidomain` is AMAGO-2's multi-domain POPGym (`envs.libs.popgym_multidomain`): one agent over many games, one
drawn per trial, warm-up episodes before the scored one, the multi-task agent (two-hot critic, filtered BC); eval
returns per game. Its CPU settings are measured in docs/results/ablations/README.md.

    python examples/03_popgym.py --env RepeatPreviousEasy --run_name popgym_rpe
    python examples/03_popgym.py --multidomain --games RepeatPreviousEasy RepeatFirstEasy --agent_type agent \
        --num_actions 0        # both games solved in ~11 min on 2 CPU cores
"""
from torchrl_amago.trainers import (ACTION_PRESETS_HELP, action_presets, cpu_preset, derived_from, example_args,
                                    example_flags, nonneg_int, parse_config, positive_int, run_main)


def extra(p):
    p.add_argument("--env", type=str, default="RepeatPreviousEasy", help="popgym env class name")
    p.add_argument("--multidomain", action="store_true",
                   help="MultiDomainPOPGym (AMAGO-2): one game of --games per trial, warm-up + scored episode")
    p.add_argument("--games", type=str, nargs="+", default=None,
                   help="--multidomain: popgym class names to draw from (default: the original's 27 games)")
    p.add_argument("--warmup_episodes", type=nonneg_int, default=1,
                   help="--multidomain: zero-reward warm-up episodes before the scored one")
    p.add_argument("--num_actions", type=nonneg_int, default=26,
                   help="--multidomain: size of the shared action space (26 as the original; 0 = the most actions "
                        "any of --games has, which learns faster on a few games)")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=1000, help="final eval steps per eval env")


def game_settings(seq: int, num_actions: int | None) -> dict:  # benchmarks/no_repeat.py reads it too
    """What depends on the game: the whole episode (`seq` steps) as the context, and the presets for its actions."""
    return dict(max_seq_len=seq, timesteps_per_epoch=seq, eval_timesteps=2 * seq, **action_presets(num_actions))


def popgym_game(ns) -> dict:
    """`game_settings` of `--env` (imports popgym)."""
    from torchrl_amago import require
    from torchrl_amago.envs.libs import popgym_episode_length, popgym_num_actions

    require("popgym", "popgym", "examples/03_popgym.py")
    return game_settings((popgym_episode_length(ns.env) or 255) + 1, popgym_num_actions(ns.env))


PER_GAME = {"max_seq_len": "the episode's length + 1 (256 without a fixed length)", "timesteps_per_epoch": "the "
            "episode's length + 1", "eval_timesteps": "2 x (the episode's length + 1)", **ACTION_PRESETS_HELP}


def defaults(run_name: str, game: dict) -> dict:
    """The single-game defaults: the CPU preset, the example's own, and `game` (values or `Derived`)."""
    return cpu_preset(run_name=run_name, parallel_envs=8, grads_per_epoch=60, epochs=30, eval_interval=5, eval_envs=8,
                      reward_multiplier=100.0, tau=0.0025, **game)


def main(argv=None):
    a = example_args(extra, argv)
    if a.multidomain:
        return multidomain_main(a, argv)
    cfg, args = parse_config(__doc__, extra=extra, argv=argv,
                             defaults=defaults(f"popgym_{a.env}", derived_from(popgym_game, PER_GAME)))
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_popgym_env
    from torchrl_amago.trainers import AMAGOTrainer

    def make_env(n):
        return make_amago_env(make_popgym_env(args.env, n))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=a.env,
                           settings=example_flags(args, "final_eval_timesteps"))
    return trainer.run(final_eval_timesteps=args.final_eval_timesteps)


def multidomain_main(a, argv=None):
    """`--multidomain`: AMAGO-2's MultiDomainPOPGym with the multi-task agent."""
    from torchrl_amago import available, require
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_multidomain_popgym_env, multidomain_popgym_layout
    from torchrl_amago.trainers import AMAGOTrainer

    games, trial, num_actions = (multidomain_popgym_layout(a.games, a.warmup_episodes, a.num_actions)
                                 if available("popgym") else (a.games, None, a.num_actions))
    seq = min(trial + 1, 2000) if trial else 2000  # the whole trial is the context (the original: 2000 steps)
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name="popgym_multidomain", max_seq_len=seq, timesteps_per_epoch=seq, parallel_envs=8,
        grads_per_epoch=300, epochs=40, eval_interval=4, eval_timesteps=2 * seq, eval_envs=12,
        agent_type="multitask", reward_multiplier=200.0, tau=0.0025, eps_steps_anneal=800,
        two_hot_bins=64, pos_emb="rope", max_time_idx=max(seq, (trial or 2000) + 1)))
    require("popgym", "popgym", "examples/03_popgym.py --multidomain")

    def make_env(n):
        return make_amago_env(make_multidomain_popgym_env(n, games, args.warmup_episodes, num_actions=num_actions))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name="MultiDomainPOPGym", task_names=games,
                           rollout_horizon=trial, settings=example_flags(args, "final_eval_timesteps"))
    return trainer.run(final_eval_timesteps=args.final_eval_timesteps)


if __name__ == "__main__":
    run_main(main)
