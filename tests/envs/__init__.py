"""Tests for torchrl_amago.envs."""
