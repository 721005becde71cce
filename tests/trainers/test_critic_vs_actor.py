"""benchmarks/critic_vs_actor.py: which actions count as repeats, and a tiny run end to end."""
import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    spec = importlib.util.spec_from_file_location("critic_vs_actor", os.path.join(ROOT, "benchmarks",
                                                                                  "critic_vs_actor.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_repeats_are_the_actions_taken_earlier_in_the_rollout():
    seen = _script().earlier_actions(torch.tensor([[2, 0, 2, 1]]), 3)
    assert seen[0].tolist() == [[False, False, False], [False, False, True], [True, False, True],
                                [True, False, True]]


def test_tiny_battleship_run(capsys):
    pytest.importorskip("popgym")
    tiny = ["--grads_per_epoch", "2", "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2",
            "--parallel_envs", "2", "--eval_envs", "2", "--num_threads", "1", "--batch_size", "4"]
    assert _script().main(["--env", "BattleshipEasy", "--epochs", "2", "--steps", "20", *tiny]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["policy"] for x in lines] == ["sampled", "greedy"]
    for x in lines:
        assert 0.0 <= x["policy_mass_on_repeats"] <= 1.0 and 0.0 <= x["frac_actions_repeats"] <= 1.0
        assert 0.0 < x["policy_entropy"] <= torch.log(torch.tensor(64.0)).item() + 1e-4
