"""Installable package `torchrl_amago`: AMAGO (in-context RL) as TorchRL components."""
from setuptools import find_packages, setup

CORE = [
    "torch==2.13.0",
    "torchrl==0.14.1",
    "tensordict==0.14.3",
    "gymnasium>=1.0",
    "numpy",
    "tqdm",
    "matplotlib",
]
EXTRAS = {
    "test": ["pytest>=7", "pytest-timeout", "popgym"],  # popgym: pure Python, lets CI exercise the adapter
    "flash": ["flash-attn"],
    "mamba": ["mamba-ssm"],
    "wandb": ["wandb"],
    "envs": ["popgym", "minigrid", "ale-py", "mujoco", "metaworld", "minari", "h5py", "gymnax", "xminigrid", "jax"],
}

setup(
    name="torchrl_amago",
    version="0.1.0",
    description="AMAGO in-context RL agents built from TorchRL components",
    packages=find_packages(include=["torchrl_amago", "torchrl_amago.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require=EXTRAS,
)
