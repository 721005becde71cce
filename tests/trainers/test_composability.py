"""The docs page docs/torchrl_composability.md runs as written: the same agent trained by a hand-written
Collector + ReplayBuffer loop and by torchrl.trainers.Trainer, each using only public names, and both learn."""
import pathlib
import re

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "torchrl_composability.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _success_rate(ns, H):
    eval_policy = ns["policy"][0].fresh_copy()
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        ro = ns["env"].rollout(2 * (H + 1), eval_policy, break_when_any_done=False)
    done = ro["next", "done"].squeeze(-1)
    return float((ro["next", "reward"].squeeze(-1)[done] > 0.5).float().mean())


@pytest.mark.parametrize("which", ["hand_loop", "torchrl_trainer"])
def test_docs_pipeline_trains_the_agent(which):
    torch.manual_seed(0)
    setup, hand, trainer = _blocks()
    assert "torchrl_amago._" not in setup + hand + trainer  # public names only
    ns: dict = {}
    exec(setup, ns)
    before = {k: v.clone() for k, v in ns["loss"].target_critic_head_params.items(True, True)}
    exec(hand if which == "hand_loop" else trainer, ns)
    assert ns["replay"].num_trials() > 50
    after = ns["loss"].target_critic_head_params
    assert any(not torch.equal(before[k], after[k]) for k in before)  # SoftUpdate hook ran
    assert _success_rate(ns, ns["H"]) >= 0.9
