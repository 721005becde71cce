"""Diagnostic: on a discrete POPGym task where repeating an action is a mistake (BattleshipEasy: a cell fired at
twice is a miss), does the critic know it, and does the actor follow the critic?

Trains `examples/03_popgym.py` for `--epochs` (its defaults otherwise; any other flag is passed to it), then rolls out the
trained policy in the eval envs for one episode and compares, at every step with both kinds of action, the critic's
Q (gamma 0.999, mean over the ensemble) of actions already taken in the episode ("repeats") with the others, and the
policy's probability mass on repeats. Prints one JSON line per policy mode (sampled / greedy), then one for the critic
acting on its own (`critic_argmax`: the argmax of its Q given the episode so far; its repeats and return):

    python benchmarks/critic_vs_actor.py --env BattleshipEasy --epochs 10 --seed 0
    python benchmarks/critic_vs_actor.py --env BattleshipEasy --epochs 10 --seed 0 \
        --no-count_heads --entropy_coeff 0 --sample_actions_eval --lr_decay none   # the plain agent

`frac_steps_critic_argmax_repeat` near 0 with `policy_mass_on_repeats` near 1 says the critic ranks the actions
right on the actor's own rollouts; only the `critic_argmax` line says whether it has learned not to repeat
(on BattleshipEasy it has not: it learned which cells the actor repeats, docs/results/popgym_campaign.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, example_trainer, load_example  # noqa: E402

sys.path.insert(0, ROOT)

from torchrl.envs.utils import step_mdp  # noqa: E402

from torchrl_amago.trainers import AMAGOTrainer  # noqa: E402


def train(env: str, epochs: int, seed: int, extra: list[str], buffer_dir: str) -> AMAGOTrainer:
    """The example's trainer after `epochs` epochs (no final eval)."""
    return example_trainer(load_example("03_popgym"),
                           ["--env", env, "--epochs", str(epochs), "--eval_interval", "0", "--seed", str(seed),
                            "--buffer_dir", buffer_dir, "--run_name", "critic_vs_actor", "--no-progress_bar", *extra],
                           train=True)


def earlier_actions(index: torch.Tensor, num_actions: int) -> torch.Tensor:
    """[E, T] action indices -> [E, T, A] bool: the action was taken earlier in the rollout."""
    E, T = index.shape
    seen = torch.zeros(E, T, num_actions, dtype=torch.bool)
    for t in range(1, T):
        seen[:, t] = seen[:, t - 1]
        seen[torch.arange(E), t, index[:, t - 1]] = True
    return seen


def share_of_repeats(index: torch.Tensor, num_actions: int) -> float:
    """[E, T] action indices -> the share of steps after the first whose action was taken earlier in the rollout."""
    taken = earlier_actions(index, num_actions).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return round(float(taken[:, 1:].float().mean()), 3)


@torch.no_grad()
def measure(trainer: AMAGOTrainer, steps: int, deterministic: bool | None) -> dict:
    loss = trainer.loss.eval()
    policy = trainer.policy.fresh_copy()
    policy.deterministic = deterministic
    policy.eval()
    torch.manual_seed(1)
    ro = trainer.eval_env.rollout(steps, policy, break_when_any_done=False)
    ro["mask"] = torch.ones(ro.shape, dtype=torch.bool)
    s = loss._backbone(ro, ro["mask"])[:, :-1]
    q = loss._critic(loss.critic_head_params, s).float()[..., -1, :].mean(-2)  # [E, T, A]: gamma 0.999, mean of C
    probs = loss.actor_head.dist(loss._actor(loss.actor_head_params, s)).probs[..., -1, :]  # [E, T, A]
    action = ro["action"]
    index = action.argmax(-1) if action.ndim == 3 else action.long().reshape(ro.shape)
    E, T, A = q.shape
    repeat = earlier_actions(index, A)
    both = repeat.any(-1) & (~repeat).any(-1)  # steps with repeats and fresh actions
    q_rep = (q * repeat).sum(-1)[both] / repeat.sum(-1)[both]
    q_new = (q * ~repeat).sum(-1)[both] / (~repeat).sum(-1)[both]
    return {"policy": "greedy" if deterministic else "sampled",
            "mean_Q_repeats": round(float(q_rep.mean()), 4), "mean_Q_fresh": round(float(q_new.mean()), 4),
            "frac_steps_Q_repeats_below_fresh": round(float((q_rep < q_new).float().mean()), 3),
            "frac_steps_critic_argmax_repeat": round(float(repeat.gather(-1, q.argmax(-1, keepdim=True))
                                                           .squeeze(-1)[both].float().mean()), 3),
            "frac_steps_policy_argmax_is_critic_argmax": round(float((probs.argmax(-1) == q.argmax(-1))[both]
                                                                     .float().mean()), 3),
            "policy_mass_on_repeats": round(float((probs * repeat).sum(-1)[both].mean()), 3),
            "frac_actions_repeats": share_of_repeats(index, A),
            "policy_entropy": round(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()), 3),
            "return_per_env": round(float(ro["next", "reward"].reshape(E, T).sum(1).mean()), 3)}


@torch.no_grad()
def critic_rollout(trainer: AMAGOTrainer, steps: int):
    """Roll out the critic as a policy: at every step the argmax of its mean Q (gamma 0.999) given the episode so far,
    the first step uniformly random. Returns the rollout [E, steps]."""
    loss = trainer.loss.eval()
    env = trainer.eval_env
    torch.manual_seed(1)
    td = env.reset()
    history = []
    for t in range(steps):
        step = td.clone()
        if t == 0:
            step = env.rand_action(step)
        else:
            ro = torch.stack(history, dim=1)
            ro["mask"] = torch.ones(ro.shape, dtype=torch.bool)
            s = loss._backbone(ro, ro["mask"])[:, -1:]  # the state after the last step: [E, 1, D]
            q = loss._critic(loss.critic_head_params, s).float()[:, 0, ..., -1, :].mean(-2)  # [E, A]
            step["action"] = torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).to(env.action_spec.dtype)
        step = env.step(step)
        history.append(step)
        td = step_mdp(step)
    return torch.stack(history, dim=1)


def critic_greedy(trainer: AMAGOTrainer, steps: int) -> dict:
    """The critic acting on its own (`critic_rollout`): its share of repeats and its return. Against the actor's,
    this says whether the critic has learned not to repeat."""
    ro = critic_rollout(trainer, steps)
    index = ro["action"].argmax(-1)
    return {"policy": "critic_argmax", "frac_actions_repeats": share_of_repeats(index, ro["action"].shape[-1]),
            "return_per_env": round(float(ro["next", "reward"].sum(-2).mean()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="BattleshipEasy")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=64, help="rollout length (BattleshipEasy: one 64-shot episode)")
    args, extra = ap.parse_known_args(argv)  # every other flag goes to examples/03_popgym.py
    args.extra = extra
    with tempfile.TemporaryDirectory() as tmp:
        trainer = train(args.env, args.epochs, args.seed, args.extra, tmp)
        for deterministic in (None, True):
            print(json.dumps({"env": args.env, "epochs": args.epochs, "seed": args.seed, "extra": args.extra,
                              **measure(trainer, args.steps, deterministic)}), flush=True)
        print(json.dumps({"env": args.env, "epochs": args.epochs, "seed": args.seed, "extra": args.extra,
                          **critic_greedy(trainer, args.steps)}), flush=True)
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
