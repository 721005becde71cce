"""What the examples' command lines offer from the third-party suites (games, levels, modes, dataset formats), kept
free of torch so that an example's `--help` answers without importing it. `envs.libs` and `data` re-export each
name; docs/api/envs.md and docs/api/data.md document them there."""
from __future__ import annotations

# Symbolic DeepMind Alchemy (envs.libs.alchemy)
ALCHEMY_LEVEL = "alchemy/perceptual_mapping_randomized_with_rotation_and_random_bottleneck"
ALCHEMY_NUM_TRIALS = 10
ALCHEMY_STEPS_PER_TRIAL = 20


def alchemy_episode_length(num_trials: int = ALCHEMY_NUM_TRIALS,
                           max_steps_per_trial: int = ALCHEMY_STEPS_PER_TRIAL) -> int:
    """Steps of one dm_env episode (= one AMAGO trial): every Alchemy trial runs its full step budget."""
    return num_trials * max_steps_per_trial


# Atari (envs.libs.atari)
#: the original example's 10 default games
ATARI_GAMES = ["Pong", "Boxing", "Breakout", "Gopher", "MsPacman", "ChopperCommand", "CrazyClimber", "BattleZone",
               "Qbert", "Seaquest"]
#: ALE's standard episode cap (30 minutes at 60 frames/s)
ATARI_TIME_LIMIT_FRAMES = 108_000
ATARI_ACTION_SPACES = ("discrete", "multibinary", "continuous")

# BabyAI (envs.libs.babyai)
#: per-step image shape of each observation kind
BABYAI_OBS_KINDS = {"partial-grid": (7, 7, 3), "full-grid": (22, 22, 3), "partial-image": (63, 63, 3),
                    "full-image": (63, 63, 3)}


def full_task_name(name: str) -> str:
    """``"GoToObj-v0"`` or ``"BabyAI-GoToObj-v0"`` -> ``"BabyAI-GoToObj-v0"``."""
    return name if name.startswith("BabyAI-") else f"BabyAI-{name}"


def babyai_max_trial_length(max_steps: int, k_episodes: int) -> int:
    """Longest possible trial: k attempts of ``max_steps`` plus one dummy step between attempts."""
    return k_episodes * max_steps + (k_episodes - 1)


# Meta-World (envs.libs.metaworld)
def canonical_benchmark_name(benchmark: str) -> str:
    """``"ML10"`` -> ``"ml10"``; ``"reach-v2"`` -> ``"reach-v3"`` (Meta-World 3.x only has v3 tasks)."""
    b = benchmark.strip()
    if b.lower() in ("ml10", "ml45"):
        return b.lower()
    return b[:-3] + "-v3" if b.endswith("-v2") else b


# Procgen (envs.libs.procgen)
#: pip package that provides ``import procgen`` on Python 3.11 (the official ``procgen`` stops at 3.10)
PROCGEN_PIP_PACKAGE = "procgen-mirror"
#: Level seeds above the train range, up to this bound, are the unseen evaluation levels.
PROCGEN_TEST_SEED_MAX = 10_000_000
#: the 16 procgen games, in the original's order
PROCGEN_GAMES = ("dodgeball", "caveflyer", "heist", "jumper", "maze", "miner", "fruitbot", "plunder", "chaser",
                 "leaper", "bigfish", "starpilot", "bossfight", "ninja", "coinrun", "climber")
#: the original example's settings per ``--distribution``
PROCGEN_SETTINGS = {
    "easy": dict(games=("climber", "coinrun", "jumper", "ninja", "leaper"), reward_scales={},
                 distribution_mode="easy", horizon=2000),
    "easy-rescaled": dict(games=("climber", "coinrun", "jumper", "ninja", "leaper"),
                          reward_scales={"coinrun": 100.0, "climber": 0.1}, distribution_mode="easy", horizon=2000),
    "memory-hard": dict(games=PROCGEN_GAMES, reward_scales={}, distribution_mode="memory-hard", horizon=5000),
}

# Offline datasets (data.offline)
DATASET_FORMATS = ("d4rl", "minari")

__all__ = ["ALCHEMY_LEVEL", "ALCHEMY_NUM_TRIALS", "ALCHEMY_STEPS_PER_TRIAL", "alchemy_episode_length", "ATARI_GAMES",
           "ATARI_TIME_LIMIT_FRAMES", "ATARI_ACTION_SPACES", "BABYAI_OBS_KINDS", "full_task_name",
           "babyai_max_trial_length", "canonical_benchmark_name", "PROCGEN_PIP_PACKAGE", "PROCGEN_TEST_SEED_MAX",
           "PROCGEN_GAMES", "PROCGEN_SETTINGS", "DATASET_FORMATS"]
