"""Install metadata: the package requires version ranges (so it installs into an existing TorchRL 0.14 environment
without replacing torch / TorchRL / tensordict), the tested versions are pinned in requirements/tested.txt, each
pin lies inside its range, and `make` installs with that file as constraints. `pip install --dry-run -c
requirements/tested.txt -e ".[test]"` in a fresh venv resolves to these pins (checked by hand: torch 2.13.0+cpu, no
nvidia-* package); this test keeps the files consistent with each other."""
import ast
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CORE_STACK = ("torch", "torchrl", "tensordict")


def core_requirements() -> dict[str, Requirement]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    core = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "CORE" for t in node.targets))
    reqs = [Requirement(ast.literal_eval(elt)) for elt in core.elts]
    return {r.name: r for r in reqs}


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "tested.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def test_core_stack_takes_ranges_that_hold_the_pinned_versions():
    core, pins = core_requirements(), pinned_versions()
    assert set(CORE_STACK) <= set(pins)
    for name in CORE_STACK:
        spec = core[name].specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned exactly in setup.py: {spec}"
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound: {spec}"
        assert spec.contains(pins[name]), f"tested {name}=={pins[name]} is outside setup.py's {spec}"


def test_makefile_installs_the_pinned_versions():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"TESTED := requirements/tested\.txt", text)
    assert re.search(r"pip install .*-c \$\(TESTED\) -e", text)
    assert re.search(r"^\$\(STAMP\): setup\.py \$\(TESTED\)", text, re.M)  # a changed pin reinstalls
