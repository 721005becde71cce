"""benchmarks/tmaze_probe.py: the first step that leaves the corridor, and a tiny run probed end to end."""
import json
import os
from pathlib import Path

import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--horizon", "4", "--grads_per_epoch", "2", "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2",
        "--parallel_envs", "2", "--eval_envs", "16", "--num_threads", "1", "--batch_size", "4"]


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "tmaze_probe.py", "tmaze_probe")


def test_first_wrong_step_is_the_first_non_right_action_before_the_junction():
    index = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 2], [3, 0, 0, 0]])  # horizon 3: step 3 is the junction
    assert _script().corridor_steps(index, 3).tolist() == [2, 3, 0]


def test_tiny_run_probed_at_two_branch_points(tmp_path, capsys):
    """The probe re-reads each greedy rollout in one sequence pass: at a trial's first wrong step the actor does not
    rank right first (p_right <= 1/2), and on every corridor step before it right was the greedy choice (>= 1/4)."""
    branching = load_module(Path(ROOT) / "benchmarks" / "branching.py", "branching")
    branching.run_example("04_tmaze", [*TINY, "--epochs", "2", "--buffer_dir", str(tmp_path), "--run_name", "src",
                                       "--no-progress_bar", "--eval_interval", "0"], branch_every=1)
    capsys.readouterr()
    points = [str(tmp_path / "src" / "branches" / f"epoch_{e}") for e in (1, 2)]
    assert _script().main([*points, "--", *TINY]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["epoch"] for x in lines] == [1, 2] and [x["grad_steps"] for x in lines] == [2, 4]
    for x in lines:
        parts = x["success"] + x["frac_trials_wrong_side"] + x["frac_trials_left_corridor"]
        assert abs(parts - 1.0) < 2e-3
        if x["first_wrong_step"] is not None:
            lo, _, hi = x["first_wrong_step"]
            assert 0 <= lo <= hi < 4 and x["p_right"] <= 0.5 + 1e-6
            assert len(x["frac_critic_prefers_right_per_gamma"]) == 7
        if x["min_p_right_before"] is not None:
            assert x["min_p_right_before"] >= 0.25 - 1e-4


def test_a_policy_that_always_moves_right_never_leaves_the_corridor(tmp_path):
    """An actor head whose output is its bias, logits (5, 0, 0, 0) for every gamma: every corridor step moves right
    with p = e^5 / (e^5 + 3); at the junction "right" stays in place, so every trial ends on the wrong side."""
    script = _script()
    trainer = script.build_trainer(script.load_example("04_tmaze"), TINY, str(tmp_path))
    try:
        params = trainer.loss.actor_head_params
        with torch.no_grad():
            params["net", "net", "8", "weight"].zero_()
            params["net", "net", "8", "bias"].copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]).repeat(7))
        out = script.probe(trainer, 4)
    finally:
        trainer.close()
    assert (out["success"], out["frac_trials_wrong_side"], out["frac_trials_left_corridor"]) == (0.0, 1.0, 0.0)
    assert out["first_wrong_step"] is None and "p_right" not in out
    assert abs(out["min_p_right_before"] - torch.tensor(5.0).exp().item() / (torch.tensor(5.0).exp().item() + 3)) < 1e-3
