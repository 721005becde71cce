"""Every example runs end to end with tiny settings (in-process) and has a working `--help`.

The examples' file names start with digits, so they are loaded from their paths, not imported by name.
"""
import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TINY = ["--epochs", "2", "--grads_per_epoch", "2", "--parallel_envs", "2", "--eval_envs", "2",
        "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2", "--tstep_hidden", "16", "--tstep_out", "16",
        "--actor_hidden", "16", "--critic_hidden", "16", "--batch_size", "4", "--dset_max_size", "2000",
        "--min_trials_to_learn", "1", "--lr_warmup_steps", "2", "--no-progress_bar", "--num_threads", "1",
        "--seed", "0"]

# name -> (example flags, timesteps_per_epoch (one trial per env fits in it), eval keys the summary must hold)
CASES = {
    "00_meta_frozen_lake": (["--lake_size", "3", "--k_episodes", "2", "--test_mult", "2"], 18,
                            ["eval_episode_0_success", "eval_episode_0_return"]),
    "01_basic_gym": (["--max_episode_steps", "20", "--max_seq_len", "16", "--final_eval_timesteps", "25"], 20, []),
    "03_popgym": (["--max_seq_len", "16", "--final_eval_timesteps", "52"], 51, []),
    "04_tmaze": (["--horizon", "4"], 5, ["eval_success"]),
    "05_dark_key_door": (["--meta_horizon", "12", "--room_size", "3", "--episode_length", "4", "--test_mult", "2"],
                         12, ["eval_success", "eval_episode_0_success"]),
    "13_mazerunner_relabeling": (["--maze_size", "7", "--goals", "2", "--time_limit", "12", "--test_mult", "2",
                                  "--relabel", "all"], 12, ["eval_success"]),
}

OWN_FLAGS = {
    "00_meta_frozen_lake": ["--lake_size", "--k_episodes", "--hard_mode", "--recover_mode", "--slip_chance",
                            "--max_episode_steps", "--hide_k_progress"],
    "01_basic_gym": ["--env", "--max_episode_steps", "--final_eval_timesteps"],
    "03_popgym": ["--env", "--multidomain", "--games", "--warmup_episodes", "--num_actions"],
    "04_tmaze": ["--horizon"],
    "05_dark_key_door": ["--meta_horizon", "--room_size", "--episode_length", "--light_room_observation",
                         "--randomize_actions"],
    "13_mazerunner_relabeling": ["--maze_size", "--goals", "--time_limit", "--randomized_actions", "--relabel"],
    "02_gymnax": ["--env", "--env_param", "--episode_length", "--final_eval_timesteps"],
    "06_alchemy": ["--level", "--num_trials", "--steps_per_trial", "--test_mult", "--exploration"],
    "07_metaworld": ["--benchmark", "--k", "--split", "--eval_split", "--episode_length", "--final_eval_trials"],
    "08_ale": ["--games", "--cnn", "--resolution", "--grayscale", "--frame_skip", "--sticky_action_prob",
                "--time_limit_frames", "--action_space", "--terminal_on_life_loss", "--drqv2_aug", "--traj_save_len"],
    "09_multitask_procgen": ["--games", "--distribution", "--train_seeds", "--cnn", "--horizon",
                             "--final_eval_timesteps"],
    "10_babyai": ["--tasks", "--eval_tasks", "--k_episodes", "--train_seeds", "--obs_kind", "--grid_net",
                  "--mission_net", "--attempt_steps", "--test_mult"],
    "11_xland_minigrid": ["--benchmark", "--k_episodes", "--rooms", "--grid_size", "--max_steps",
                          "--num_distractors", "--final_eval_timesteps"],
    "12_half_cheetah_vel": ["--task_min_velocity", "--task_max_velocity", "--cheetah_version", "--episode_length",
                            "--velocity_buckets"],
    "14_offline": ["--dataset", "--format", "--env", "--online_after_epoch", "--offline_weight", "--make_dataset",
                   "--max_episode_steps"],
}


def load_module(path: Path, name: str):
    """A script loaded from its path (example and benchmark file names are not importable names)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_example(name: str):
    return load_module(EXAMPLES / f"{name}.py", f"example_{name}")


def example_config(name: str, argv, **main_kwargs):
    """Run an example's `main(argv)` up to building its trainer: (module, config, trainer kwargs, train-env factory).
    Nothing is trained; the test checks the config and may build envs with the factory."""
    mod = load_example(name)
    seen = {}

    class _Stop(Exception):
        pass

    def fake_trainer(cfg, make_train, make_eval, **kw):
        seen.update(cfg=cfg, kw=kw, make_train=make_train)
        raise _Stop

    import torchrl_amago.trainers as trainers  # the examples import AMAGOTrainer from here once parsed

    orig, trainers.AMAGOTrainer = trainers.AMAGOTrainer, fake_trainer
    try:
        with pytest.raises(_Stop):
            mod.main(argv, **main_kwargs)
    finally:
        trainers.AMAGOTrainer = orig
    return mod, seen["cfg"], seen["kw"], seen["make_train"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_and_reports(name, tmp_path):
    if name == "03_popgym":
        pytest.importorskip("popgym")
    flags, steps, eval_keys = CASES[name]
    argv = TINY + ["--timesteps_per_epoch", str(steps), "--buffer_dir", str(tmp_path), "--run_name", "smoke"] + flags
    summary = load_example(name).main(argv)
    assert summary["env_steps"] == 2 * 2 * steps  # epochs * parallel_envs * timesteps_per_epoch
    assert summary["grad_steps"] == 2 * 2  # a trial finished in epoch 0, so both epochs learned
    assert math.isfinite(summary["wall_s"]) and summary["wall_s"] > 0
    assert math.isfinite(summary["eval_return"])
    for key in eval_keys:
        assert key in summary and math.isfinite(summary[key]), key
        if key.endswith("success"):
            assert 0.0 <= summary[key] <= 1.0
    assert os.path.exists(tmp_path / "smoke" / "logs" / "metrics.csv")
    # the saved run, evaluated by its own command with no other flag retyped: nothing written, the same keys
    before = _files(tmp_path / "smoke")
    quick = sum(([f, v] for f, v in zip(flags, flags[1:]) if f in ("--test_mult", "--final_eval_timesteps")), [])
    again = load_example(name).main(["--buffer_dir", str(tmp_path), "--run_name", "smoke", "--eval_only", "latest",
                                     "--num_threads", "1"] + quick)
    assert _files(tmp_path / "smoke") == before
    assert again["eval_weights"] == "latest" and (again["env_steps"], again["grad_steps"]) == (2 * 2 * steps, 4)
    assert set(again) >= {"eval_return", *eval_keys} and math.isfinite(again["eval_return"])


def _files(folder) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, fs in os.walk(folder) for f in fs}


CUDA_CASES = {  # name -> extra flags; every example of CASES, bf16 autocast once, the multi-task agent (two-hot critic)
    **{name: [] for name in CASES}, "04_tmaze+bf16": ["--mixed_precision", "bf16"],
    "03_popgym+multidomain": ["--multidomain", "--games", "MineSweeperEasy", "RepeatPreviousEasy", "--eval_interval",
                              "1", "--eval_timesteps", "110"],
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", sorted(CUDA_CASES))
def test_example_runs_on_cuda(case, tmp_path):
    """The learner and acting policy on CUDA, the envs on the CPU: episodes that end at different steps (partial
    resets: CartPole, POPGym) and the two-hot critic once crashed there on mixed devices."""
    name = case.split("+")[0]
    if name == "03_popgym":
        pytest.importorskip("popgym")
    flags, steps, eval_keys = CASES[name]
    if "--multidomain" in CUDA_CASES[case]:
        flags, steps = ["--max_seq_len", "32", "--final_eval_timesteps", "110"], 104
    argv = TINY + ["--timesteps_per_epoch", str(steps), "--buffer_dir", str(tmp_path), "--run_name", "cuda",
                   "--device", "cuda"] + flags + CUDA_CASES[case]
    summary = load_example(name).main(argv)
    assert summary["env_steps"] == 2 * 2 * steps and summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    for key in eval_keys:
        assert math.isfinite(summary[key]), key


def help_text(name: str, capsys) -> str:
    """The example's `--help` output (it must exit 0)."""
    with pytest.raises(SystemExit) as e:
        load_example(name).main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(OWN_FLAGS))
def test_example_help(name, capsys):
    """Every example (also those whose package is not installed): the common flags, its own, its docstring."""
    out = help_text(name, capsys)
    for flag in ["--timesteps_per_epoch", "--grads_per_epoch", "--max_seq_len", "--buffer_dir", "--run_name",
                 *OWN_FLAGS[name]]:
        assert flag in out, (name, flag)
    assert name.split("_")[0] + " " in out  # the module docstring opens the help ("00 — ...")


def test_mazerunner_relabeler_gives_every_goal_in_hindsight():
    """`--relabel all` on a trial that missed goals: the relabeled trial earns all k goals, in order."""
    from torchrl_amago.envs import MazeRunner, make_amago_env

    mod = load_example("13_mazerunner_relabeling")
    assert mod.make_relabeler("none", 30) is None
    k, T = 3, 30
    env = make_amago_env(MazeRunner(1, maze_dim=9, num_goals=k, time_limit=T, seed=0))
    env.set_seed(0)
    # north / south up and down the spawn pocket: visits a few cells, not all k random goals
    acts = torch.tensor([1, 1, 3, 3] * (T // 4 + 1))
    it = iter(acts.tolist())
    ro = env.rollout(T, lambda td: td.set("action", torch.nn.functional.one_hot(torch.tensor([next(it)]), 5)))[0]
    assert ro["next", "reward"].sum() < k and not ro["next", "terminated"][:-1].any()
    out = mod.make_relabeler("all", T)(ro)
    assert out["next", "reward"].sum().item() == k
    assert out["next", "terminated"][-1].item() and out["next", "done"][-1].item()
    assert out.batch_size[0] <= T
    # the prev_reward stream follows the new rewards
    assert torch.equal(out["next", "prev_reward"], out["next", "reward"])
