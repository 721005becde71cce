"""benchmarks/critic_vs_actor.py: which actions count as repeats, and a tiny run end to end."""
import json
import os
from pathlib import Path

import pytest
import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "critic_vs_actor.py", "critic_vs_actor")


def test_repeats_are_the_actions_taken_earlier_in_the_rollout():
    seen = _script().earlier_actions(torch.tensor([[2, 0, 2, 1]]), 3)
    assert seen[0].tolist() == [[False, False, False], [False, False, True], [True, False, True],
                                [True, False, True]]
    # steps after the first: env 0 repeats once of 3 (the second 2), env 1 three times of 3
    assert _script().share_of_repeats(torch.tensor([[2, 0, 2, 1], [1, 1, 1, 1]]), 3) == round(4 / 6, 3)


def test_tiny_battleship_run(capsys):
    pytest.importorskip("popgym")
    tiny = ["--grads_per_epoch", "2", "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2",
            "--parallel_envs", "2", "--eval_envs", "2", "--num_threads", "1", "--batch_size", "4"]
    assert _script().main(["--env", "BattleshipEasy", "--epochs", "2", "--steps", "20", *tiny]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["policy"] for x in lines] == ["sampled", "greedy", "critic_argmax"]
    critic = lines.pop()
    assert 0.0 <= critic["frac_actions_repeats"] <= 1.0 and -20 / 52 <= critic["return_per_env"] <= 1.0
    for x in lines:
        assert 0.0 <= x["policy_mass_on_repeats"] <= 1.0 and 0.0 <= x["frac_actions_repeats"] <= 1.0
        assert 0.0 < x["policy_entropy"] <= torch.log(torch.tensor(64.0)).item() + 1e-4


def test_the_critic_rollout_takes_the_argmax_of_the_critic_at_each_step(tmp_path):
    """Re-reading the whole critic rollout in one sequence pass: from the second step on, every action is the
    argmax of the critic's mean Q (gamma 0.999) at that step's state (no step off by one)."""
    pytest.importorskip("popgym")
    tiny = ["--grads_per_epoch", "2", "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2",
            "--parallel_envs", "2", "--eval_envs", "2", "--num_threads", "1", "--batch_size", "4"]
    script = _script()
    trainer = script.train("BattleshipEasy", 2, 0, tiny, str(tmp_path))
    try:
        ro = script.critic_rollout(trainer, 12)
        with torch.no_grad():
            ro["mask"] = torch.ones(ro.shape, dtype=torch.bool)
            loss = trainer.loss
            s = loss._backbone(ro, ro["mask"])[:, :-1]
            q = loss._critic(loss.critic_head_params, s).float()[..., -1, :].mean(-2)  # [E, T, A]
        taken = ro["action"].argmax(-1)
        assert torch.equal(taken[:, 1:], q.argmax(-1)[:, 1:])
    finally:
        trainer.close()
