"""Does what an attempt revealed survive the soft reset into the next one? A linear probe on the agent's memory.

Trains `examples/15_hidden_door.py` (flags after `--` go to it; its defaults otherwise), then acts greedily in its
eval envs and records the state embedding the actor reads (the trajectory encoder's output) at the first step of
every attempt after the first. Two facts are probed with a linear classifier fitted on half of the samples and scored
on the other half:
- `goal`: the trial's goal door. Ceiling: what the trial has shown (1 where an earlier attempt found the goal, else
  1 / the doors not yet ruled out); part of it is in the step's own input (the last pick and its reward).
- `first_pick`: the door picked first in the previous attempt, where that attempt needed a second pick. Nothing in
  the step's input shows it (the input holds only the second pick): a probe above chance (1 / (doors - 1)) reads it
  from the memory across the soft reset.
Prints one JSON line per attempt and fact.

    python benchmarks/memory_probe.py --seed 0 -- --epochs 60
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import example_trainer, load_example, split_argv  # noqa: E402


def record(trainer, steps: int) -> dict[tuple[int, str], tuple]:
    """{(attempt, fact): (embeddings [n, D], labels [n], ceiling [n])} at the first step of attempts 2, 3, ...,
    acting greedily in the trainer's eval envs (reset first)."""
    env, policy = trainer.eval_env, trainer.policy.fresh_copy().eval()
    base, n = env.base_env, env.batch_size[0]
    policy.deterministic = True
    seen: list[torch.Tensor] = []
    rows: dict[tuple, list] = {}
    first = torch.full((n,), -1)  # the current attempt's first pick
    prev_first = torch.full((n,), -1)  # the previous attempt's first pick, where it needed a second one

    def act(td):
        start, k, goal, picks = base.attempt_start.clone(), base.k.clone(), base.goal.clone(), base.picks.clone()
        ceiling = torch.where(base.found, 1.0, 1.0 / (base.n_doors - base.tried.sum(-1)).float())
        td = policy(td)
        action = base._action_index(td)
        for j in (start & (k > 0)).nonzero().flatten().tolist():
            rows.setdefault((int(k[j]), "goal"), []).append((seen[-1][j], goal[j], ceiling[j]))
            if prev_first[j] >= 0:
                rows.setdefault((int(k[j]), "first_pick"), []).append((seen[-1][j], prev_first[j].clone(),
                                                                       torch.tensor(1.0)))
        prev_first.copy_(torch.where(start, -1, prev_first))
        prev_first.copy_(torch.where(picks == 1, first, prev_first))  # a second pick: the first one stays unseen
        first.copy_(torch.where(picks == 0, action, first))
        return td

    hook = policy.actor_head.register_forward_hook(lambda m, a, out: seen.append(a[0].detach().reshape(n, -1)))
    with torch.no_grad():
        env.rollout(steps, act, break_when_any_done=False)
    hook.remove()
    return {key: tuple(torch.stack(x) for x in zip(*r)) for key, r in sorted(rows.items())}


def fit_linear(x: torch.Tensor, labels: torch.Tensor, classes: int):
    """A linear classifier of standardized `x` ``[n, D]`` fitted to `labels` (300 full-batch Adam steps); returns
    ``predict(x_new) -> class [m]``."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = torch.nn.Linear(x.shape[-1], classes)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf((x - mu) / sd), labels).backward()
        opt.step()
    return lambda x_new: clf((x_new - mu) / sd).argmax(-1)


def probe(emb: torch.Tensor, labels: torch.Tensor, classes: int, seed: int) -> float:
    """Test accuracy of a linear classifier fitted on a random half of the samples (the other half scores it)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    predict = fit_linear(emb[train], labels[train], classes)
    return float((predict(emb[test]) == labels[test]).float().mean())


def main(argv=None):
    own, passed = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--buffer_dir", default="runs/memory_probe")
    args = ap.parse_args(own)
    trainer = example_trainer(load_example("15_hidden_door"), ["--seed", str(args.seed), "--buffer_dir",
                                                             args.buffer_dir, "--run_name", f"probe_s{args.seed}",
                                                             "--no-progress_bar", "--eval_envs", "512", *passed],
                              train=True)
    doors = trainer.eval_env.base_env.n_doors
    data = record(trainer, 4 * trainer.eval_env.base_env.max_trial_steps)
    trainer.close()
    for (attempt, fact), (emb, label, ceiling) in data.items():
        chance = 1 / doors if fact == "goal" else 1 / (doors - 1)
        print(json.dumps({"seed": args.seed, "attempt": attempt + 1, "fact": fact, "samples": len(label),
                          "probe_accuracy": round(probe(emb, label, doors, args.seed), 3),
                          "ceiling": round(float(ceiling.mean()), 3), "chance": round(chance, 3)}), flush=True)


if __name__ == "__main__":
    main()
