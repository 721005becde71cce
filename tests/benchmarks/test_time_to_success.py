"""benchmarks/time_to_success.py reads a run's metrics.csv: the first eval with success 1.0, or how a run without
one ended (so a crashed run is not mistaken for a slow learner)."""
from pathlib import Path

from tests.examples.test_examples_smoke import load_module

TTS = load_module(Path(__file__).parents[2] / "benchmarks" / "time_to_success.py", "time_to_success")
HEADER = "env_steps,grad_steps,wall_s,epoch,eval/success\n"


def test_first_success_is_the_first_eval_at_one(tmp_path):
    m = tmp_path / "metrics.csv"
    m.write_text(HEADER + "100,40,5.0,0,0.5\n200,80,9.0,1,\n300,120,14.0,2,1.0\n400,160,19.0,3,1.0\n")
    assert TTS.first_success(str(m)) == {"grad_steps": 120, "env_steps": 300, "epoch": "2"}
    assert TTS.first_success(str(tmp_path / "missing.csv")) is None


def test_a_run_without_success_says_how_it_ended(tmp_path):
    m, err = tmp_path / "metrics.csv", tmp_path / "stderr.txt"
    m.write_text(HEADER + "100,40,5.0,0,0.0\n200,80,9.0,1,\n300,120,14.0,2,0.5625\n")
    err.write_text("".join(f"line {i}\n" for i in range(20)) + "RuntimeError: boom\n")
    finished = TTS.how_it_ended(str(m), 0, str(err))
    assert finished == {"returncode": 0, "grad_steps": 120, "eval_success": [0.0, 0.562]}
    crashed = TTS.how_it_ended(str(m), 1, str(err))
    assert crashed["returncode"] == 1 and crashed["stderr_tail"][-1] == "RuntimeError: boom"
    assert len(crashed["stderr_tail"]) == 8
    assert TTS.how_it_ended(str(tmp_path / "none.csv"), None, str(err)) == {
        "returncode": None, "grad_steps": 0, "eval_success": []}
