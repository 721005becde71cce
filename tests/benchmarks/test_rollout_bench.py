"""benchmarks/rollout.py's per-part profile of one env step: every part is timed, and the policy's own parts (timestep
encoder, memory step, actor head) lie inside the policy's time. No timing is asserted."""
from pathlib import Path

from tests.examples.test_examples_smoke import load_module

ROOT = Path(__file__).resolve().parents[2]


def test_each_part_of_a_step_is_timed_and_the_policy_holds_its_own_parts():
    ro = load_module(ROOT / "benchmarks" / "rollout.py", "rollout_bench")
    wall, cpu, parts = ro.measure(2, "transformer", steps=4, batches=2, corridor=3, max_seq_len=16)
    assert wall > 0 and cpu > 0
    assert set(parts) == {"policy", "timestep_encoder", "memory", "actor_head", "exploration", "env", "transforms",
                          "collector"}
    assert all(parts[k] > 0 for k in ("policy", "timestep_encoder", "memory", "actor_head", "exploration", "env"))
    assert parts["timestep_encoder"] + parts["memory"] + parts["actor_head"] <= parts["policy"]
