"""03 — POPGym memory tasks (`pip install popgym`). Shows: a third-party suite through a TorchRL adapter
(`torchrl_amago.envs.libs.popgym`: flat one-hot observations plus a timer, `terminated |= truncated`, batched with
`SerialEnv`), with the whole episode as the Transformer's context. `--env` takes any popgym class name, e.g.
RepeatPreviousEasy, RepeatFirstMedium, AutoencodeEasy, CountRecallEasy, MineSweeperEasy.

    python examples/03_popgym.py --env RepeatPreviousEasy --run_name popgym_rpe
"""
import sys

from torchrl_amago._optional import available, require
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.popgym import make_popgym_env, popgym_env_names, popgym_episode_length
from torchrl_amago.trainers import AMAGOTrainer, example_args, parse_config


def extra(p):
    p.add_argument("--env", type=str, default="RepeatPreviousEasy", help="popgym env class name")
    p.add_argument("--multidomain", action="store_true", help="MultiDomainPOPGym (not implemented yet)")
    p.add_argument("--final_eval_timesteps", type=int, default=1000, help="final eval steps per eval env")


def main(argv=None):
    a = example_args(extra, argv)
    # the whole episode is the context, as the original (--max_seq_len 2000); games without a fixed length: 256
    ep_len = popgym_episode_length(a.env) if available("popgym") and a.env in popgym_env_names() else None
    seq = ep_len + 1 if ep_len else 256
    epochs = 30
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=dict(
        run_name=f"popgym_{a.env}", max_seq_len=seq, timesteps_per_epoch=seq, parallel_envs=8, grads_per_epoch=60,
        epochs=epochs, eval_interval=5, eval_timesteps=2 * seq, eval_envs=8, reward_multiplier=100.0, tau=0.0025,
        lr_warmup_steps=200, learning_rate=3e-4, grad_clip=1.0, tstep_layers=2, tstep_hidden=128, tstep_out=64,
        memory_size=64, memory_layers=2, n_heads=4, actor_hidden=128, critic_hidden=128, dset_max_size=200_000,
        ckpt_interval=0, num_threads=1, eps_steps_anneal=epochs * seq // 2))
    if args.multidomain:
        sys.exit("03_popgym: --multidomain (MultiDomainPOPGym: one of 27 popgym games per trial) is not implemented "
                 "yet; run one game with --env <popgym class name>")
    require("popgym", "popgym", "examples/03_popgym.py")

    def make_env(n):
        return make_amago_env(make_popgym_env(args.env, n))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=a.env)
    return trainer.run("03_popgym", final_eval_timesteps=args.final_eval_timesteps)


if __name__ == "__main__":
    main()
