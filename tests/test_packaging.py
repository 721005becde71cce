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


def setup_keywords() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    return {kw.arg: kw.value for kw in call.keywords}


def test_license_is_mit_and_ships_with_the_package():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert re.search(r"^Copyright \(c\) 2026 the torchrl_amago authors$", text, re.M)
    kw = setup_keywords()
    assert ast.literal_eval(kw["license"]) == "MIT"
    assert "LICENSE" in ast.literal_eval(kw["license_files"])
    classifiers = ast.literal_eval(kw["classifiers"])
    # setuptools >= 77 (PEP 639) rejects a "License ::" classifier beside a license expression
    assert classifiers and not any(c.startswith("License ::") for c in classifiers)


def test_citation_cff_has_the_fields_cff_1_2_0_requires_and_cites_both_papers():
    import yaml  # PyYAML comes with the "test" extra (ray and wandb require it)
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for field in ("message", "title", "authors"):  # the keys CFF 1.2.0 requires
        assert cff.get(field), field
    assert cff["license"] == "MIT"
    for person in cff["authors"]:
        assert person.get("name") or person.get("family-names"), person
    papers = {ref["title"]: ref for ref in cff["references"] if ref["type"] == "conference-paper"}
    arxiv = {title: {i["value"] for i in ref["identifiers"]} for title, ref in papers.items()}
    amago = "AMAGO: Scalable In-Context Reinforcement Learning for Adaptive Agents"
    amago2 = "AMAGO-2: Breaking the Multi-Task Barrier in Meta-Reinforcement Learning with Transformers"
    assert {"10.48550/arXiv.2310.09971", "https://arxiv.org/abs/2310.09971"} <= arxiv[amago]
    assert {"10.48550/arXiv.2411.11188", "https://arxiv.org/abs/2411.11188"} <= arxiv[amago2]
    assert papers[amago]["year"] == papers[amago2]["year"] == 2024
    assert "ICLR" in papers[amago]["conference"]["name"] and "NeurIPS" in papers[amago2]["conference"]["name"]
    for ref in cff["references"]:
        assert ref["authors"] and all(a.get("family-names") for a in ref["authors"])
