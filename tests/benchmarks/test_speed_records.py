"""docs/results/speed/*.json: every recorded speed comparison says on what machine, when, with which versions and
by which command it was measured, and holds the benchmark's own output lines. No timing is asserted."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEED = ROOT / "docs" / "results" / "speed"


def records():
    files = sorted(SPEED.glob("*.json"))
    assert {f.name for f in files} >= {"learner_vs_original.json", "acting_step_vs_original.json",
                                       "encoder_step.json"}
    return [(f, json.loads(f.read_text())) for f in files]


def test_each_record_names_machine_date_versions_and_commands():
    for path, rec in records():
        assert rec["date"] and rec["what"] and rec["how"], path.name
        assert rec["machine"]["cpu_model"] and rec["machine"]["cpus"] >= 1, path.name
        assert {"python", "torch", "torchrl", "tensordict", "torchrl_amago"} <= set(rec["versions"]), path.name
        assert rec["runs"], path.name
        for run in rec["runs"]:
            assert run["command"].startswith("OMP_NUM_THREADS=") and "python benchmarks/" in run["command"]
            assert run["output"] and all(isinstance(line, dict) for line in run["output"])


def test_comparisons_hold_both_systems_and_the_original_is_described():
    for path, rec in records():
        if "original" not in path.name:
            continue
        assert "never" in rec["original"]["what"] or "none of its code" in rec["original"]["what"]
        assert rec["original"]["files"] and rec["original"]["interpreter_versions"]["torch"]
        for run in rec["runs"]:
            compares = [line for line in run["output"] if "compare" in line]
            assert compares, path.name
            for line in compares:
                assert line["ratio"] > 0
                assert any(k.startswith("ours_") for k in line) and any(k.startswith("original_") for k in line)
