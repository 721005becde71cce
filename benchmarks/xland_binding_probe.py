"""Can the agent's network learn which XLand object is the right one from what earlier attempts showed, when it is
told the answer? A supervised probe next to what RL training put in the memory.

In the hidden-rule task with one distractor, once an attempt has picked up an object X, the right object is known for
the rest of the trial: X if that pick succeeded, the other one if not. Every later step where the agent faces a floor
object gets the label "this is the right object" (the latest earlier attempt's first pick decides). Trials are
collected in the run's training envs by its policy with its exploration at the end of its schedule. Two probes, each
fitted on four fifths of the trials and scored on the rest:
- `fresh`: the run's architecture (timestep + trajectory encoder, from the run's flags) newly initialized and trained
  end to end with a linear head on the labels alone, at the run's batch size and learning rate: can this network
  learn to tell them apart from this data?
- `trained`: a linear classifier on the run's own state embedding (frozen): did RL put it into the memory?
Prints one JSON line for the data (trials, labelled steps, the majority label's share), then one per probe and
checkpoint: test accuracy over all labelled steps and split by the previous pick's outcome.

    python benchmarks/xland_binding_probe.py --run runs/xland -- --epochs 120
Flags after `--` go to the example and must build the same model and env as the run's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
from tensordict import TensorDictBase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_probe import fit_linear  # noqa: E402
from run_files import load_example, split_argv, trained_policy  # noqa: E402
from xland_attempts import PICK_UP  # noqa: E402

from torchrl_amago.envs.libs.xland import _PICKABLE as PICKABLE  # noqa: E402

CHECKPOINTS = (100, 250, 500, 1000, 2000, 3000, 5000)


def binding_labels(grid: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, attempt: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(label, previous_outcome), ints ``[N, T]`` (-1: no label) for whole trials: ``grid`` ``[N, T, v, v, 2]`` the
    agent's view (it stands at the bottom centre facing up), ``action`` ``[N, T]`` ids, ``reward`` ``[N, T]`` the
    step's reward, ``attempt`` ``[N, T]`` the attempt index, ``mask`` ``[N, T]`` False on padding. A step facing a
    floor object after an attempt that picked one up gets ``label = (faced == X) == succeeded`` for the latest such
    attempt's first pick X (right with one distractor), ``previous_outcome`` 1 if that pick succeeded, else 0."""
    v = grid.shape[-2]
    front = grid[:, :, v - 2, v // 2].long()
    faces = torch.isin(front[..., 0], torch.tensor(PICKABLE))
    label = torch.full(action.shape, -1)
    outcome = torch.full(action.shape, -1)
    for i in range(action.shape[0]):
        known, first, current = None, None, 0  # known: (X, succeeded) of the latest earlier attempt that picked
        for t in range(action.shape[1]):
            if not mask[i, t]:
                break
            if int(attempt[i, t]) != current:
                known = first if first is not None else known
                first, current = None, int(attempt[i, t])
            obj = tuple(front[i, t].tolist())
            if faces[i, t] and known is not None:
                label[i, t], outcome[i, t] = int((obj == known[0]) == known[1]), int(known[1])
            if faces[i, t] and int(action[i, t]) == PICK_UP and first is None:  # an attempt starts with an empty pocket
                first = (obj, bool(reward[i, t] > 0))
    return label, outcome


def trial_windows(td: TensorDictBase, max_len: int) -> TensorDictBase:
    """The finished trials of a rollout ``[n, steps]`` as rows ``[N, max_len]`` padded with zeros, ``mask`` set (a
    trial starts where ``is_init``; each slot's last trial, which may be cut short, is dropped)."""
    rows = []
    for i in range(td.shape[0]):
        starts = td[i]["is_init"].reshape(-1).nonzero().reshape(-1).tolist()
        rows += [td[i, s:e] for s, e in zip(starts, starts[1:])]
    if not rows or max(len(r) for r in rows) > max_len:
        raise ValueError(f"no finished trial, or one longer than max_seq_len {max_len}")
    out = rows[0][:1].expand(len(rows), max_len).clone().zero_()
    for j, r in enumerate(rows):
        out[j, :len(r)] = r
    out.set("mask", torch.arange(max_len).expand(len(rows), max_len) < torch.tensor([len(r) for r in rows])[:, None])
    return out


def collect(trainer, trials: int) -> TensorDictBase:
    """At least `trials` whole trials from the trainer's training envs, acting as `trainer.actor` (the policy and its
    exploration, set to the end of its schedule)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    env, steps = trainer.train_env, trainer.cfg.max_seq_len
    if trainer.exploration is not None:
        trainer.exploration.global_step.fill_(trainer.exploration.steps_anneal)
    n = env.batch_size[0]
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        td = env.rollout((trials // n + 2) * steps, trainer.actor, break_when_any_done=False)
    return trial_windows(td, steps)


def accuracy(pred: torch.Tensor, label: torch.Tensor, outcome: torch.Tensor) -> dict:
    """Share of labelled steps where ``pred`` (0 / 1) agrees with ``label``: all, after a right and a wrong pick."""
    hit = pred.long() == label
    out = {}
    for name, sel in (("all", label >= 0), ("after_right", outcome == 1), ("after_wrong", outcome == 0)):
        out[name] = round(float(hit[sel].float().mean()), 3) if sel.any() else None
    return out


def states(loss, data: TensorDictBase, rows: torch.Tensor) -> torch.Tensor:
    """`loss`'s state embedding ``[len(rows), T, D]`` of the trials `rows` (as it is: train or eval mode)."""
    return loss._backbone(data[rows], data["mask"][rows])[:, :-1]


def fresh_probe(loss, data, label, outcome, train_rows, test_rows, steps: int, batch_size: int, lr: float,
                seed: int):
    """Yield ``(step, test accuracy)`` at `CHECKPOINTS` while training `loss`'s encoders and a linear head on their
    state embedding, end to end, with binary cross-entropy on the labelled steps (tested in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(states(loss, data, train_rows[:1]).shape[-1], 1)
    opt = torch.optim.AdamW(list(head.parameters()) + list(loss.parameters()), lr=lr)
    for step in range(1, steps + 1):
        loss.train()
        rows = train_rows[torch.randint(len(train_rows), (batch_size,), generator=g)]
        y, logits = label[rows], head(states(loss, data, rows))[..., 0]
        if (y >= 0).any():
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(logits[y >= 0], y[y >= 0].float()).backward()
            opt.step()
        if step in CHECKPOINTS or step == steps:
            loss.eval()
            with torch.no_grad():
                logits = torch.cat([head(states(loss, data, test_rows[k:k + 64]))[..., 0]
                                    for k in range(0, len(test_rows), 64)])
            yield step, accuracy(logits > 0, label[test_rows], outcome[test_rows])


def linear_read(loss, data, label, outcome, train_rows, test_rows) -> dict:
    """Test accuracy of `memory_probe.fit_linear` on `loss`'s state embedding (eval mode, frozen) at the labelled
    steps, fitted on the training trials' steps."""
    loss.eval()
    with torch.no_grad():
        emb = {name: torch.cat([states(loss, data, rows[k:k + 64]) for k in range(0, len(rows), 64)])
               for name, rows in (("train", train_rows), ("test", test_rows))}
    known = label[train_rows] >= 0
    predict = fit_linear(emb["train"][known], label[train_rows][known], 2)
    with torch.no_grad():
        return accuracy(predict(emb["test"]), label[test_rows], outcome[test_rows])


def main(argv=None):
    own, passed = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run folder of examples/11_xland_minigrid.py")
    ap.add_argument("--trials", type=int, default=2500, help="collect at least this many trials (a fifth is held out)")
    ap.add_argument("--steps", type=int, default=3000, help="probe updates")
    ap.add_argument("--seed", type=int, default=0, help="seeds the envs, the fresh network and the batches")
    args = ap.parse_args(own)
    args.ckpt, args.eval_envs = "latest", 1
    from torchrl_amago.trainers import build_agent_modules, build_loss

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = trained_policy(load_example("11_xland_minigrid"), args, passed, tmp)
        try:
            flags = trainer.run_folder.settings
            if flags["benchmark"] != "local-hidden-rule" or flags["num_distractors"] != 1:
                raise SystemExit("xland_binding_probe.py labels the local-hidden-rule ruleset with one distractor; "
                                 "the flags after `--` must build it (--benchmark local-hidden-rule "
                                 "--num_distractors 1, the example's defaults)")
            trainer.train_env.set_seed(args.seed)
            data = collect(trainer, args.trials)
            label, outcome = binding_labels(data["grid"], data["action"].argmax(-1), data["next", "reward"][..., 0],
                                            data["episode_count"][..., 0], data["mask"])
            order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(args.seed))
            test_rows, train_rows = order[: len(order) // 5], order[len(order) // 5:]
            y = label[test_rows][label[test_rows] >= 0].float()
            print(json.dumps({"run": args.run, "trials": data.shape[0], "labelled_steps": int((label >= 0).sum()),
                              "test_majority": round(float(max(y.mean(), 1 - y.mean())), 3)}), flush=True)
            cfg = trainer.cfg
            fresh = build_loss(cfg, build_agent_modules(cfg, trainer.train_env.observation_spec,
                                                        trainer.train_env.action_spec))
            for step, acc in fresh_probe(fresh, data, label, outcome, train_rows, test_rows, args.steps,
                                         cfg.batch_size, cfg.learning_rate, args.seed):
                print(json.dumps({"probe": "fresh", "step": step, "test_accuracy": acc}), flush=True)
            print(json.dumps({"probe": "trained", "test_accuracy": linear_read(trainer.loss, data, label, outcome,
                                                                                train_rows, test_rows)}), flush=True)
        finally:
            trainer.close()


if __name__ == "__main__":
    main()
