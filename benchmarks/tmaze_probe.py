"""Diagnostic: where and why a T-Maze policy leaves the corridor. Loads the weights of saved epochs of a
`examples/04_tmaze.py` run (branch points, `<run>/branches/epoch_<E>`, or checkpoint files), rolls out the greedy
policy for one trial in the eval envs and, at the first step of each trial where it does not move right before the
junction (a trial that wastes a step cannot reach a goal cell in time), compares the actor with the critic:

    python benchmarks/branch_run.py --branch_every 5 --example 04_tmaze -- --horizon 300 --epochs 80 --run_name tm300
    python benchmarks/tmaze_probe.py runs/tm300/branches/epoch_{60,65,70} -- --horizon 300

One JSON line per saved epoch: `success`, `frac_trials_wrong_side` (reached the junction, took the wrong goal cell),
`frac_trials_left_corridor` and the steps where they did (`first_wrong_step`: min / median / max), and at those
steps the acting discount's critic (mean over the ensemble, PopArt-normalized): `q_margin` = Q(right) − max
Q(other), `frac_critic_prefers_right`, the actor's `p_right`, and the discounts whose critic prefers right
(`frac_critic_prefers_right_per_gamma`, in the loss's gamma order). Along the corridor before any wrong step (every
trial): the smallest `p_right` and `q_margin`, the median step of the smallest margin and the median margin. A wrong
step the critic prefers right says the actor left its critic; one the critic prefers too says the critic's values
are wrong there. The flags after `--` are the run's example flags (`--horizon` at least). The eval envs are reseeded
for each saved epoch, so every epoch is probed on the same goal sides.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from branching import CKPT_FILE  # noqa: E402
from run_files import ROOT, example_trainer, load_example, split_argv  # noqa: E402

sys.path.insert(0, ROOT)

from torchrl_amago.trainers import AMAGOTrainer, example_args  # noqa: E402
from torchrl_amago.trainers.run.checkpoint import load_checkpoint, load_module_state  # noqa: E402

RIGHT = 0  # TMaze's action 0 moves right


def build_trainer(example, example_flags: list[str], buffer_dir: str) -> AMAGOTrainer:
    """The example's trainer, built but not run."""
    return example_trainer(example, [*example_flags, "--buffer_dir", buffer_dir, "--run_name", "tmaze_probe",
                                     "--no-progress_bar"], train=False)


def checkpoint_file(saved: str) -> str:
    path = os.path.join(saved, CKPT_FILE) if os.path.isdir(saved) else saved
    if not os.path.exists(path):
        raise SystemExit(f"{saved}: no checkpoint (expected a branch point folder <run>/branches/epoch_<E> or a .pt file)")
    return path


def corridor_steps(index: torch.Tensor, horizon: int) -> torch.Tensor:
    """[E, T] action indices -> [E] the first step t < horizon whose action is not right (horizon: none)."""
    wrong = index[:, :horizon] != RIGHT
    t = torch.arange(horizon).expand_as(wrong)
    return torch.where(wrong, t, horizon).min(1).values


def _median(x: torch.Tensor) -> float | None:
    return round(float(x.float().median()), 4) if x.numel() else None


def _finite_min(x: torch.Tensor) -> float | None:
    """The smallest value, None when every entry is +inf (no corridor step before a wrong one)."""
    m = float(x.min())
    return round(m, 4) if m != float("inf") else None


@torch.no_grad()
def probe(trainer: AMAGOTrainer, horizon: int) -> dict:
    """Greedy rollout of one trial per eval env and the actor / critic at each trial's first wrong step."""
    loss = trainer.loss.eval()
    policy = trainer.policy.fresh_copy()
    policy.deterministic = True
    policy.eval()
    torch.manual_seed(1)
    trainer.eval_env.set_seed(1)  # the same goal sides for every saved epoch probed
    ro = trainer.eval_env.rollout(horizon + 1, policy, break_when_any_done=False)
    ro["mask"] = torch.ones(ro.shape, dtype=torch.bool)
    s = loss._backbone(ro, ro["mask"])[:, :-1]
    q = loss._critic(loss.critic_head_params, s).float().mean(-3)  # [E, T, G, A]: mean over the ensemble
    probs = loss.actor_head.dist(loss._actor(loss.actor_head_params, s)).probs[..., -1, :]  # [E, T, A]: acting gamma
    index = ro["action"].argmax(-1)
    E = index.shape[0]
    first = corridor_steps(index, horizon)
    left = first < horizon
    margin_all = q[..., RIGHT] - q.clone().index_fill_(-1, torch.tensor([RIGHT]), -torch.inf).amax(-1)  # [E, T, G]
    margin = margin_all[..., -1]  # [E, T]: the acting gamma
    rows = torch.arange(E)[left]
    at = first[left]
    before = torch.arange(horizon).expand(E, horizon) < first.unsqueeze(1)  # corridor steps before any wrong one
    m_before = torch.where(before, margin[:, :horizon], torch.inf)
    p_before = torch.where(before, probs[:, :horizon, RIGHT], torch.inf)
    goal = ro["next", "reward"].reshape(E, -1)[:, horizon] > 0
    out = {"success": round(float(goal.float().mean()), 3),
           "frac_trials_left_corridor": round(float(left.float().mean()), 3),
           "frac_trials_wrong_side": round(float((~left & ~goal).float().mean()), 3),
           "first_wrong_step": ([int(at.min()), _median(at), int(at.max())] if at.numel() else None),
           "min_p_right_before": _finite_min(p_before), "min_q_margin_before": _finite_min(m_before),
           "median_q_margin_before": _median(margin[:, :horizon][before]),
           "median_step_of_min_margin": _median(m_before.argmin(1)[before.any(1)])}
    if at.numel():
        out.update(q_margin=round(float(margin[rows, at].mean()), 4),
                   frac_critic_prefers_right=round(float((margin[rows, at] > 0).float().mean()), 3),
                   frac_critic_prefers_right_per_gamma=[round(float(v), 3) for v in
                                                        (margin_all[rows, at] > 0).float().mean(0)],
                   p_right=round(float(probs[rows, at, RIGHT].mean()), 4))
    return out


def main(argv=None) -> int:
    argv, example_flags = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("saved", nargs="+", help="branch point folders or checkpoint files of one run")
    args = ap.parse_args(argv)
    paths = [checkpoint_file(s) for s in args.saved]
    with tempfile.TemporaryDirectory() as tmp:
        example = load_example("04_tmaze")
        horizon = example_args(example.extra, example_flags).horizon
        trainer = build_trainer(example, example_flags, tmp)
        try:
            for saved, path in zip(args.saved, paths):
                ckpt = load_checkpoint(path)
                load_module_state(trainer.loss, ckpt["loss"], "model", path)
                print(json.dumps({"saved": saved, **ckpt["counters"], **probe(trainer, horizon)}), flush=True)
        finally:
            trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
