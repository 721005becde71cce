"""--own_eval_rng: evals on their own random streams, so that the eval settings do not change the training run."""
import random

import numpy as np
import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer
from torchrl_amago.trainers.eval_rng import eval_seed, own_random_streams

from .test_trainer import _make_env, _tiny_cfg


def _trained_weights(tmp_path, name, **kw):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path / name, epochs=4, eval_interval=1, **kw), _make_env, _make_env)
    tr.train()
    state = {k: v.clone() for k, v in tr.loss.state_dict().items()}
    tr.close()
    return state


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("own", [True, False])
def test_eval_settings_change_the_trained_weights_only_without_own_streams(tmp_path, own):
    # sampled eval actions (the default) draw from torch's generator: 6 vs 14 eval steps per eval
    short = _trained_weights(tmp_path, "short", eval_timesteps=6, own_eval_rng=own)
    long = _trained_weights(tmp_path, "long", eval_timesteps=14, own_eval_rng=own)
    assert _same(short, long) is own


def test_an_eval_leaves_every_generator_where_it_was_and_repeats_at_the_same_update(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, own_eval_rng=True, eval_envs=4, eval_timesteps=20), _make_env, _make_env)
    tr.eval_env.set_seed(3)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = tr.evaluate()
    after = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    tr.eval_env.set_seed(3)
    again = tr.evaluate()
    assert first["eval/return"] == again["eval/return"]
    tr.close()


def test_own_streams_are_seeded_per_run_and_update_and_restored():
    assert len({eval_seed(0, 0), eval_seed(0, 40), eval_seed(1, 0)}) == 3
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    with own_random_streams(eval_seed(0, 40)):
        inside = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(torch.rand(3), expected_next)  # training's stream goes on as if nothing had run
    with own_random_streams(eval_seed(0, 40)):
        assert torch.equal(torch.rand(3), inside[0]) and np.random.rand() == inside[1] and random.random() == inside[2]
