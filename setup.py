"""Installable package `torchrl_amago`: AMAGO (in-context RL) as TorchRL components."""
import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
#: the one version: `torchrl_amago.__version__`, read without importing the package (tests/test_packaging.py checks
#: that CITATION.cff and CHANGELOG.md's top entry say the same)
_INIT = ast.parse((HERE / "torchrl_amago" / "__init__.py").read_text())
VERSION = next(ast.literal_eval(node.value) for node in _INIT.body
               if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__")

# Ranges, so that installing into an existing TorchRL 0.14 environment keeps its versions; the tested versions are
# pinned in requirements/tested.txt (used as constraints by the Makefile and CI). torch: TorchRL 0.14's generation
# (its replay buffers need torch >= 2.7); TorchRL 0.14.1's C++ extension (prioritized samplers) is built against
# torch 2.14 and loads only there. CI runs the suite on 2.13.0 and the release check on 2.14.1 (README "Install").
CORE = [
    "torch>=2.7,<2.15",
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
    # wandb, tensorboard: runs log to them for real (offline) through TorchRL's loggers (--logger);
    # pytest-xdist: `make test` runs the default suite on two workers; build, twine: the release check
    "test": ["pytest>=7", "pytest-timeout", "pytest-xdist", "popgym", "h5py", "dm-env", "ray>=2.60", "wandb",
             "tensorboard", "build", "twine"],
    "flash": ["flash-attn"],
    "mamba": ["mamba-ssm"],
    "wandb": ["wandb"],
    "tensorboard": ["tensorboard"],
    "ray": ["ray>=2.60"],  # collection on many nodes: torchrl_amago.trainers.scale.remote_collection (docs/scaling.md)
    **DOMAINS,
    "envs": sorted({p for name, pkgs in DOMAINS.items() if name != "procgen" for p in pkgs}),
}

setup(
    name="torchrl_amago",
    version=VERSION,
    description="AMAGO in-context RL agents built from TorchRL components",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The torchrl_amago authors",
    # this package has no public repository or home page of its own yet, so no `url=`; these are the method's
    project_urls={
        "Original AMAGO implementation": "https://github.com/UT-Austin-RPL/amago",
        "AMAGO paper": "https://arxiv.org/abs/2310.09971",
        "AMAGO-2 paper": "https://arxiv.org/abs/2411.11188",
    },
    license_expression="MIT",  # PEP 639 (setuptools >= 77): so no "License ::" classifier below
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
    packages=find_packages(include=["torchrl_amago", "torchrl_amago.*"]),
    package_data={"torchrl_amago": ["py.typed"]},  # PEP 561: type checkers read the annotations
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require=EXTRAS,
)
