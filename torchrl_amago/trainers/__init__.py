"""The ready trainer: config and CLI, the epoch loop, logging, `scale/`, `run/` (imported on first use)."""
import importlib

_EXPORTS = {
    "cli": ["Derived", "build_parser", "checked", "example_args", "example_flags", "parse_config", "parse_key_values",
            "run_main",
            "positive_int", "nonneg_int", "probability", "finite_float"],
    "config": ["TrainConfig", "SECTIONS", "RETIRED", "field_default", "at_least", "between", "positive"],
    "presets": ["CPU_PRESET", "cpu_preset", "MANY_ACTIONS", "MANY_ACTION_PRESET", "many_action_preset",
                "SAMPLED_DISCRETE_PRESET", "sampled_discrete_preset", "LONG_HORIZON_PRESET", "share_of_run",
                "action_presets", "ACTION_PRESETS_HELP", "derived_from"],
    "factory": ["AgentModules", "build_agent_modules", "build_exploration", "build_heads", "build_loss",
                "build_policy", "build_timestep_encoder", "build_trajectory_encoder"],
    "run.checkpoint": ["CheckpointError"],
    "run.guards": ["NonFiniteError"],
    "logging": ["RunLogger", "print_summary"],
    "metrics": ["episode_metrics", "finished_trial_returns", "return_metrics", "adaptation_report",
                "combine_adaptation_reports"],
    "scale.graphed_update": ["GraphedUpdate"],
    "trainer": ["AMAGOTrainer"],
    "learner": ["Learner"],
    "saved_run": ["SavedRun", "load_run"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
