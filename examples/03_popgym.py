"""03 — POPGym memory tasks (`pip install popgym`). Shows: a third-party suite through a TorchRL adapter
(`torchrl_amago.envs.libs.popgym`: flat one-hot observations plus a timer, `terminated |= truncated`, batched with
`SerialEnv`), with the whole episode as the Transformer's context. `--env` takes any popgym class name, e.g.
RepeatPreviousEasy, RepeatFirstMedium, AutoencodeEasy, CountRecallEasy, MineSweeperEasy. Defaults: below 32 discrete
actions `trainers.sampled_discrete_preset` (the conservative critic term), from 32 `trainers.many_action_preset`.

`--multidomain` is AMAGO-2's multi-domain POPGym (`torchrl_amago.envs.libs.popgym_multidomain`): one agent over many
games (`--games`, default the original's 27), a game drawn per trial, observations padded to 30 and actions to 26
(`--num_actions 0`: to the most actions any of `--games` has), `--warmup_episodes` zero-reward episodes before the
scored one, and the multi-task agent (two-hot critic, filtered BC, reward multiplier 200). Eval returns are logged per
game. CPU choices (measured in docs/results/ablations/README.md): rotary positions, 300 updates per epoch, the usual 6 (+ gamma)
multigammas (the original's 18, `--multigammas` + `envs.libs.MULTIDOMAIN_POPGYM_GAMMAS`, cost more per update).

    python examples/03_popgym.py --env RepeatPreviousEasy --run_name popgym_rpe
    python examples/03_popgym.py --multidomain --games RepeatPreviousEasy RepeatFirstEasy --agent_type agent \
        --num_actions 0        # both games solved in ~11 min on 2 CPU cores
"""
from functools import cache

from torchrl_amago.trainers import (Derived, cpu_preset, example_args, field_default, many_action_preset, parse_config,
                                    sampled_discrete_preset)


def extra(p):
    p.add_argument("--env", type=str, default="RepeatPreviousEasy", help="popgym env class name")
    p.add_argument("--multidomain", action="store_true",
                   help="MultiDomainPOPGym (AMAGO-2): one game of --games per trial, warm-up + scored episode")
    p.add_argument("--games", type=str, nargs="+", default=None,
                   help="--multidomain: popgym class names to draw from (default: the original's 27 games)")
    p.add_argument("--warmup_episodes", type=int, default=1,
                   help="--multidomain: zero-reward warm-up episodes before the scored one")
    p.add_argument("--num_actions", type=int, default=26,
                   help="--multidomain: size of the shared action space (26 as the original; 0 = the most actions "
                        "any of --games has, which learns faster on a few games)")
    p.add_argument("--final_eval_timesteps", type=int, default=1000, help="final eval steps per eval env")


def game_settings(seq: int, num_actions: int | None) -> dict:  # benchmarks/no_repeat.py reads it too
    """What depends on the game: the whole episode (`seq` steps) as the context, and the preset for its actions."""
    return dict(max_seq_len=seq, timesteps_per_epoch=seq, eval_timesteps=2 * seq,
                **sampled_discrete_preset(num_actions), **many_action_preset(num_actions))


#: The defaults `game_settings` decides, with what `--help` says of them.
PER_GAME = {"max_seq_len": "the episode's length + 1 (256 without a fixed length)",
            "timesteps_per_epoch": "the episode's length + 1", "eval_timesteps": "2 x (the episode's length + 1)",
            "cql_coeff": "0.1 below 32 discrete actions (trainers.sampled_discrete_preset), else 0",
            "count_heads": "True from 32 discrete actions (trainers.many_action_preset), else False",
            "entropy_coeff": "0.1 from 32 discrete actions, else 0", "lr_decay": "cosine from 32 discrete actions, else none",
            "sample_actions_eval": "False from 32 discrete actions, else True"}


@cache
def popgym_game(env: str) -> dict:
    """`game_settings` of a popgym game (imports popgym): episode length, discrete actions (None: Box actions)."""
    from torchrl_amago import require
    from torchrl_amago.envs.libs import popgym_episode_length, popgym_num_actions

    require("popgym", "popgym", "examples/03_popgym.py")
    return game_settings((popgym_episode_length(env) or 255) + 1, popgym_num_actions(env))


def defaults(run_name: str, game: dict) -> dict:
    """The single-game defaults: the CPU preset, the example's own, and `game` (values or `Derived`)."""
    return cpu_preset(run_name=run_name, parallel_envs=8, grads_per_epoch=60, epochs=30, eval_interval=5, eval_envs=8,
                      reward_multiplier=100.0, tau=0.0025, **game)


def main(argv=None):
    a = example_args(extra, argv)
    if a.multidomain:
        return multidomain_main(a, argv)
    per_game = {k: Derived(lambda ns, k=k: popgym_game(ns.env).get(k, field_default(k)), text)
                for k, text in PER_GAME.items()}
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=defaults(f"popgym_{a.env}", per_game))
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_popgym_env
    from torchrl_amago.trainers import AMAGOTrainer

    def make_env(n):
        return make_amago_env(make_popgym_env(args.env, n))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=a.env)
    return trainer.run("03_popgym", final_eval_timesteps=args.final_eval_timesteps)


def multidomain_main(a, argv=None):
    """`--multidomain`: AMAGO-2's MultiDomainPOPGym with the multi-task agent."""
    from torchrl_amago import available, require
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_multidomain_popgym_env, multidomain_popgym_layout
    from torchrl_amago.trainers import AMAGOTrainer

    games, trial, num_actions = (multidomain_popgym_layout(a.games, a.warmup_episodes, a.num_actions)
                                 if available("popgym") else (a.games, None, a.num_actions))
    # the whole trial is the context (the original: 2000 steps); the CPU choices are measured in docs/results/ablations/README.md
    seq = min(trial + 1, 2000) if trial else 2000
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name="popgym_multidomain", max_seq_len=seq, timesteps_per_epoch=seq, parallel_envs=8,
        grads_per_epoch=300, epochs=40, eval_interval=4, eval_timesteps=2 * seq, eval_envs=12,
        agent_type="multitask", reward_multiplier=200.0, tau=0.0025, eps_steps_anneal=800,
        two_hot_bins=64, pos_emb="rope", max_time_idx=max(seq, (trial or 2000) + 1)))
    require("popgym", "popgym", "examples/03_popgym.py --multidomain")

    def make_env(n):
        return make_amago_env(make_multidomain_popgym_env(n, games, args.warmup_episodes, num_actions=num_actions))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name="MultiDomainPOPGym", task_names=games,
                           rollout_horizon=trial)
    return trainer.run("03_popgym_multidomain", final_eval_timesteps=args.final_eval_timesteps)


if __name__ == "__main__":
    main()
