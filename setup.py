"""Installable package `torchrl_amago`: AMAGO (in-context RL) as TorchRL components."""
from setuptools import find_packages, setup

# Ranges, so that installing into an existing TorchRL 0.14 environment keeps its versions; the tested versions are
# pinned in requirements/tested.txt (used as constraints by the Makefile and CI). torch: TorchRL 0.14's generation
# (its replay buffers need torch >= 2.7; torchrl 0.15 pairs with torch 2.14); only 2.13.0 is tested.
CORE = [
    "torch>=2.7,<2.14",
    "torchrl>=0.14,<0.15",
    "tensordict>=0.14,<0.15",
    "gymnasium>=1.0",
    "numpy",
    "tqdm",
    "matplotlib",
]
DOMAINS = {  # one extra per env suite of the examples (see README "Examples")
    "popgym": ["popgym"],
    "gymnax": ["jax", "gymnax>=1.0.1", "six"],  # gymnax 1.0.1 imports six without declaring it
    "xland": ["jax", "xminigrid>=0.9.3"],
    "babyai": ["minigrid>=3.0"],
    "atari": ["ale-py>=0.9"],  # wheels ship the ROMs
    "mujoco": ["gymnasium[mujoco]>=1.0"],
    "metaworld": ["metaworld>=3.1"],
    "procgen": ["procgen-mirror>=0.10.7"],  # pins numpy<2: install it in its own env (not part of "envs")
    "offline": ["h5py"],
    "minari": ["minari", "h5py"],
    "dm_env": ["dm-env"],  # dm_alchemy itself is not on PyPI: pip install git+https://github.com/google-deepmind/dm_alchemy.git
}
EXTRAS = {
    # popgym, h5py, dm-env: small pure-Python/wheel packages that let CI exercise those adapters for real;
    # ray: the remote collectors run for real on a local Ray instance (tests/trainers/test_remote_collection.py);
    # wandb: runs log to it for real, offline (tests/trainers/test_config_cli_metrics.py)
    "test": ["pytest>=7", "pytest-timeout", "popgym", "h5py", "dm-env", "ray>=2.60", "wandb"],
    "flash": ["flash-attn"],
    "mamba": ["mamba-ssm"],
    "wandb": ["wandb"],
    "ray": ["ray>=2.60"],  # collection on many nodes: torchrl_amago.trainers.scale.remote_collection (docs/scaling.md)
    **DOMAINS,
    "envs": sorted({p for name, pkgs in DOMAINS.items() if name != "procgen" for p in pkgs}),
}

setup(
    name="torchrl_amago",
    version="0.2.0",
    description="AMAGO in-context RL agents built from TorchRL components",
    license="MIT",  # an SPDX expression (PEP 639): so no "License ::" classifier below
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=["torchrl_amago", "torchrl_amago.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require=EXTRAS,
)
