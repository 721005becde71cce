"""torchrl_amago subpackage."""
