"""`--mixed_precision auto`: bf16 autocast where the device computes bf16 natively, fp32 elsewhere;
the CPU's capability is read from /proc/cpuinfo's flags (faked here), a GPU's from torch.cuda.is_bf16_supported."""
import pytest
import torch

from torchrl_amago.trainers import TrainConfig
from torchrl_amago.trainers.scale import device as dev
from torchrl_amago.trainers.scale.device import autocast_dtype, cpu_flags, native_bf16, precision_name

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
# the first lines of /proc/cpuinfo of a Sapphire Rapids VM (AMX) and of a Skylake one (AVX-512, no BF16)
AMX = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl\n"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    (tmp_path / "amx").write_text(AMX)
    (tmp_path / "skylake").write_text(SKYLAKE)
    assert {"avx512_bf16", "amx_bf16", "avx512f"} <= cpu_flags(str(tmp_path / "amx"))
    assert "avx512_bf16" not in cpu_flags(str(tmp_path / "skylake")) and "avx512f" in cpu_flags(str(tmp_path / "skylake"))
    assert cpu_flags(str(tmp_path / "missing")) == set()  # not Linux: no flags, fp32


@pytest.mark.parametrize("flags, want", [({"avx512f", "avx512_bf16"}, torch.bfloat16), ({"amx_bf16", "amx_tile"}, torch.bfloat16),
                                         ({"avx512f", "avx2"}, None), (set(), None)])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch, flags, want):
    monkeypatch.setattr(dev, "cpu_flags", lambda path="/proc/cpuinfo": flags)
    assert native_bf16(CPU) is (want is not None)
    assert autocast_dtype("auto", CPU) is want
    assert autocast_dtype("no", CPU) is None and autocast_dtype("bf16", CPU) is torch.bfloat16  # explicit choices stay


def test_auto_on_gpus_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("auto", CUDA) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("auto", CUDA) is None  # e.g. a V100: fp32, not an error (bf16 asked for explicitly is one)
    assert autocast_dtype("auto", torch.device("mps")) is None


def test_auto_is_the_default_and_runs_name_their_precision():
    assert TrainConfig().mixed_precision == "auto"  # docs/scaling.md: the campaign and T-Maze-100 hold in bf16
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="--mixed_precision 'fp8' is not one of"):
        autocast_dtype("fp8", CPU)


@pytest.mark.parametrize("flags, want", [({"avx512f", "amx_bf16", "amx_tile"}, "bf16"), ({"avx512f", "avx2"}, "fp32")])
def test_a_run_reports_the_precision_auto_chose(tmp_path, monkeypatch, flags, want):
    """A tiny 04_tmaze run at the default on a CPU faked to have AMX (or not): the summary line and config.json say
    which precision it used; the config keeps "auto", so a run started from that config.json elsewhere chooses again."""
    import json

    from tests.examples.test_examples_smoke import TINY, load_example

    monkeypatch.setattr(dev, "cpu_flags", lambda path="/proc/cpuinfo": flags)
    summary = load_example("04_tmaze").main(TINY + ["--horizon", "4", "--timesteps_per_epoch", "5",
                                                    "--buffer_dir", str(tmp_path), "--run_name", "t"])
    stored = json.loads((tmp_path / "t" / "config.json").read_text())
    assert summary["precision"] == want and stored["precision"] == want
    assert stored["config"]["mixed_precision"] == "auto"


def test_a_run_recorded_in_fp32_resumes_in_fp32(tmp_path, monkeypatch):
    """A run whose config.json says `no` (e.g. one started before `auto` was the default) keeps fp32 when it is
    trained longer without the flag, on a CPU that would choose bf16."""
    import json

    from tests.examples.test_examples_smoke import TINY, load_example

    monkeypatch.setattr(dev, "cpu_flags", lambda path="/proc/cpuinfo": {"avx512f", "avx512_bf16"})
    main = load_example("04_tmaze").main
    flags = TINY + ["--horizon", "4", "--timesteps_per_epoch", "5", "--buffer_dir", str(tmp_path), "--run_name", "t"]
    assert main(flags + ["--mixed_precision", "no"])["precision"] == "fp32"
    summary = main(flags + ["--epochs", "3"])  # the last --epochs wins: train one epoch longer
    assert summary["precision"] == "fp32" and summary["grad_steps"] == 6  # resumed: 3 epochs of 2 updates
    assert json.loads((tmp_path / "t" / "config.json").read_text())["config"]["mixed_precision"] == "no"
