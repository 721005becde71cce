"""A control for `examples/11_xland_minigrid.py`: every attempt of a trial starts on the trial's first layout (same
room, objects and start pose), so remembering where the right object stood suffices; in the example the layout is
drawn anew for every attempt and the agent must remember which object it was. Takes the example's flags; replay a
run with `benchmarks/xland_attempts.py --same_layout`.

    python benchmarks/xland_same_layout.py --epochs 120 --run_name xland_same_layout
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, load_example  # noqa: E402


def same_layout_env(base):
    """`base` (an `XLandTrialEnv`) as a copy whose soft resets redraw the trial's first layout."""
    from torchrl_amago.envs.libs.xland import XLandTrialEnv

    class SameLayout(XLandTrialEnv):
        def reset(self, key):
            obs, state = super().reset(key)
            state["layout_key"] = self.be.split(key, 2)[1]  # the key the parent's reset drew the layout with
            return obs, state

        def step(self, key, state, action):
            state = dict(state)
            layout = state.pop("layout_key")
            obs, new_state, reward, terminated, truncated = super().step(layout, state, action)
            return obs, {**new_state, "layout_key": layout}, reward, terminated, truncated

    env = SameLayout(base.env, base.params, base.sample_ruleset, base.k_episodes, backend="jax")
    env.rooms, env.grid_size, env.ruleset_benchmark = base.rooms, base.grid_size, base.ruleset_benchmark
    return env


def make_envs(a):
    """Example 11's `make_envs` hook: its train and eval factories on `same_layout_env` trials."""
    sys.path.insert(0, ROOT)
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
    from torchrl_amago.envs.libs.xland import XLandTrialEnv

    def factory(split: str):
        def make_env(n):
            base = XLandTrialEnv.from_xminigrid(
                k_episodes=a.k_episodes, rooms=a.rooms, grid_size=a.grid_size, ruleset_benchmark=a.benchmark,
                train_test_split=split, max_steps=a.max_steps or None, num_distractors=a.num_distractors)
            return make_amago_env(JaxBatchedEnv(same_layout_env(base), n, backend="jax"))

        return make_env

    return factory("train"), factory("test"), None


if __name__ == "__main__":
    load_example("11_xland_minigrid").main(sys.argv[1:], make_envs=make_envs)
