"""15 — Hidden door: a diagnostic meta-RL task whose Bayes-optimal return per attempt is known exactly. Each trial
hides a goal among `--n_doors` doors; an attempt picks up to `--picks_per_attempt` doors, and the trial is
`--k_attempts` attempts on the same goal. The first attempt must search; later ones can go straight to a door found
before. With the defaults the optimum per attempt is 0.4 / 0.8 / 1.0, a policy that forgets at every attempt gets
0.4 each (`envs.hidden_door_optimal_returns`). Without `--reveal` only the agent's own past actions and rewards say
which doors were tried, so it needs its memory across attempts; `--reveal` shows the belief in the observation.
Shows: the adaptation report (per-attempt returns, the gain from the first attempt to the last with its interval)
against the Bayes optimum.

    python examples/15_hidden_door.py --run_name door5            # reward-only: memory across soft resets
    python examples/15_hidden_door.py --reveal --run_name door5_reveal
"""
from torchrl_amago.trainers import (at_least, checked, cpu_preset, example_args, example_flags, parse_config,
                                    positive_int, run_main)


def extra(p):
    p.add_argument("--n_doors", type=checked(int, at_least(2)), default=5,
                   help="doors, one of which is the goal of the trial")
    p.add_argument("--k_attempts", type=positive_int, default=3, help="attempts per trial on the same goal")
    p.add_argument("--picks_per_attempt", type=positive_int, default=2, help="doors picked per attempt at most")
    p.add_argument("--reveal", action="store_true", help="show the doors tried and the goal found (the belief)")
    p.add_argument("--test_mult", type=positive_int, default=40,
                   help="final eval steps per env = test_mult * trial length")


def main(argv=None):
    a = example_args(extra, argv)
    trial = a.k_attempts * a.picks_per_attempt  # the longest trial: no attempt finds the goal before its last pick
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"door{a.n_doors}_k{a.k_attempts}_m{a.picks_per_attempt}{'_reveal' if a.reveal else ''}",
        max_seq_len=trial, timesteps_per_epoch=2 * trial, parallel_envs=32, grads_per_epoch=40, epochs=60,
        eval_interval=5, eval_timesteps=6 * trial, eval_envs=64,
        tstep_layers=1, tstep_normalize_inputs=False, sample_actions_eval=False))
    from torchrl_amago.envs import HiddenDoor, make_amago_env
    from torchrl_amago.trainers import AMAGOTrainer

    def make_env(n):
        return make_amago_env(HiddenDoor(n, n_doors=args.n_doors, k_attempts=args.k_attempts,
                                         picks_per_attempt=args.picks_per_attempt, reveal=args.reveal))

    env = make_env(1).base_env
    print(f"15_hidden_door: Bayes-optimal return per attempt {[round(r, 3) for r in env.optimal_returns()]}",
          flush=True)
    trainer = AMAGOTrainer(cfg, make_env, make_env, rollout_horizon=trial,
                           env_name=f"HiddenDoor-{args.n_doors}-k{args.k_attempts}-m{args.picks_per_attempt}",
                           settings=example_flags(args, "test_mult"))
    return trainer.run(final_eval_timesteps=args.test_mult * trial)


if __name__ == "__main__":
    run_main(main)
