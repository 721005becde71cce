"""02 — gymnax (JAX) envs (`pip install gymnax`). Shows: a batched JAX env as ONE TorchRL env
(`torchrl_amago.envs.libs.gymnax`: every env steps in one jitted, vmapped call, finished envs auto-reset inside it,
arrays cross to torch with DLPack), many envs per process with no IPC. The default task is bsuite's MemoryChain: the
context bit is shown only at the first step and must be recalled at the last one (reward +1 / -1).
`--env` takes any gymnax id; `--env_param memory_length=20` overrides a field of the env's EnvParams.

    python examples/02_gymnax.py --env MemoryChain-bsuite --env_param memory_length=10 --run_name gymnax_mc10
"""
from torchrl_amago.trainers import (cpu_preset, example_args, example_flags, parse_config, parse_key_values,
                                    positive_int, run_main)


def extra(p):
    p.add_argument("--env", type=str, default="MemoryChain-bsuite", help="gymnax env id")
    p.add_argument("--env_param", type=str, action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the gymnax EnvParams (repeatable), e.g. memory_length=10")
    p.add_argument("--episode_length", type=positive_int, default=None,
                   help="max_seq_len hint: steps per episode (default: memory_length+1 for MemoryChain, else 128)")
    p.add_argument("--final_eval_timesteps", type=positive_int, default=1000, help="final eval steps per eval env")


def make_env_factory(name: str, params: dict):
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_gymnax_env

    def make_env(n):
        return make_amago_env(make_gymnax_env(name, n, params=params))

    return make_env


def main(argv=None, make_env=None):
    a = example_args(extra, argv)
    try:
        params = parse_key_values("env_param", a.env_param)
    except ValueError as e:
        raise SystemExit(f"02_gymnax: {e}")
    ep_len = a.episode_length
    if ep_len is None:
        ep_len = params.get("memory_length", 5) + 1 if a.env.startswith("MemoryChain") else 128
    cfg, args = parse_config(__doc__, extra=extra, argv=argv, defaults=cpu_preset(
        run_name=f"gymnax_{a.env}", max_seq_len=ep_len, timesteps_per_epoch=max(4 * ep_len, 40), parallel_envs=16,
        grads_per_epoch=40, epochs=30, eval_interval=5, eval_timesteps=4 * ep_len, eval_envs=32, grad_clip=2.0,
        l2_coeff=1e-4, lr_warmup_steps=100, batch_size=32))
    if make_env is None:  # tests pass a stand-in factory; the real one needs jax + gymnax
        from torchrl_amago import require

        require("jax", "jax", "examples/02_gymnax.py")
        require("gymnax", "gymnax", "examples/02_gymnax.py")
        make_env = make_env_factory(args.env, params)
    from torchrl_amago.trainers import AMAGOTrainer

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=f"gymnax_{args.env}",
                           settings=example_flags(args, "final_eval_timesteps"))
    return trainer.run(final_eval_timesteps=args.final_eval_timesteps)


if __name__ == "__main__":
    run_main(main)
