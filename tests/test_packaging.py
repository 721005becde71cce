"""Install metadata: the package requires version ranges (so it installs into an existing TorchRL 0.14 environment
without replacing torch / TorchRL / tensordict), the tested versions are pinned in requirements/tested.txt (the
default suite's stack) and requirements/release.txt (the release check's: the torch TorchRL 0.14.1 is built for),
each pin lies inside its range, and `make` installs with the tested pins as constraints. One version, said once
(`torchrl_amago.__version__`), repeated by CITATION.cff and CHANGELOG.md's top entry; the wheel's own metadata is
checked by the release check (.ci/release_check.py), which builds and installs it."""
import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CORE_STACK = ("torch", "torchrl", "tensordict")


def core_requirements() -> dict[str, Requirement]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    core = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "CORE" for t in node.targets))
    reqs = [Requirement(ast.literal_eval(elt)) for elt in core.elts]
    return {r.name: r for r in reqs}


def pinned_versions(name: str = "tested.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


@pytest.mark.parametrize("pins", ["tested.txt", "release.txt"])
def test_core_stack_takes_ranges_that_hold_the_pinned_versions(pins):
    core, pins = core_requirements(), pinned_versions(pins)
    assert set(CORE_STACK) <= set(pins)
    for name in CORE_STACK:
        spec = core[name].specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned exactly in setup.py: {spec}"
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound: {spec}"
        assert spec.contains(pins[name]), f"tested {name}=={pins[name]} is outside setup.py's {spec}"


def test_the_two_stacks_are_the_default_suites_and_the_one_torchrl_is_built_for():
    """The suite runs on torch 2.13.0 (its CPU wheel), the release check on 2.14.1: TorchRL 0.14.1's C++ extension
    (prioritized replay) loads only there (tests/data/test_prioritized_replay.py)."""
    tested, release = pinned_versions(), pinned_versions("release.txt")
    assert tested["torch"] == "2.13.0" and release["torch"] == "2.14.1"
    assert {k: tested[k] for k in ("torchrl", "tensordict")} == {k: release[k] for k in ("torchrl", "tensordict")}
    assert '"requirements" / "release.txt"' in (ROOT / ".ci" / "release_check.py").read_text()


def test_makefile_installs_the_pinned_versions_and_ci_runs_every_stage():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"TESTED := requirements/tested\.txt", text)
    assert re.search(r"pip install .*-c \$\(TESTED\) -e \.$", text, re.M)  # make demo: the core only
    assert re.search(r"pip install .*-c \$\(TESTED\) -e \"\.\[test\]\"", text)
    assert re.search(r"^\$\(CORE\): setup\.py \$\(TESTED\)", text, re.M)  # a changed pin reinstalls
    assert re.search(r"^demo: \$\(CORE\)$", text, re.M)
    assert re.search(r"^test: test-default test-slow release-check$", text, re.M)
    assert re.search(r"^\t\$\(PYTEST\) (-n 2 --dist loadfile )?-m slow tests$", text, re.M)
    assert re.search(r"^\t\$\(PY\) \.ci/release_check\.py$", text, re.M)
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("\nmake test")


def _version() -> str:
    tree = ast.parse((ROOT / "torchrl_amago" / "__init__.py").read_text())
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__version__")


CHANGELOG_HEADING = re.compile(r"^## (\S+)(.*)$", re.M)


def test_one_version_in_the_package_setup_citation_and_the_changelogs_dated_top_entry():
    """`torchrl_amago.__version__` is the version: setup.py reads it (asked here), CITATION.cff and the changelog's top
    entry repeat it; every changelog entry is `## X.Y.Z — YYYY-MM-DD`, newest first, the citation's date the top's."""
    import subprocess
    import sys

    import yaml  # PyYAML comes with the "test" extra (ray and wandb require it)

    import torchrl_amago

    v = torchrl_amago.__version__
    assert v == _version() and re.fullmatch(r"\d+\.\d+\.\d+", v)
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == v, out.stderr[-500:]
    entries = CHANGELOG_HEADING.findall((ROOT / "CHANGELOG.md").read_text())
    assert entries, "CHANGELOG.md has no '## X.Y.Z — date' entry"
    for version, rest in entries:
        assert re.fullmatch(r" — \d{4}-\d{2}-\d{2}", rest), f"CHANGELOG.md: '## {version}{rest}' has no date"
    versions = [tuple(map(int, ver.split("."))) for ver, _ in entries]
    dates = [rest[3:] for _, rest in entries]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert dates == sorted(dates, reverse=True)
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert entries[0][0] == str(cff["version"]) == v
    assert str(cff["date-released"]) == dates[0]


def test_py_typed_ships_and_no_url_is_claimed_for_this_package():
    """PEP 561: `py.typed` is package data. The project URLs are the original implementation's and the papers' (this
    package has no public repository of its own: no `url=`, and the citation says so)."""
    kw = setup_keywords()
    assert (ROOT / "torchrl_amago" / "py.typed").exists()
    assert ast.literal_eval(kw["package_data"]) == {"torchrl_amago": ["py.typed"]}
    assert "url" not in kw and "download_url" not in kw
    urls = ast.literal_eval(kw["project_urls"])
    assert urls["Original AMAGO implementation"] == "https://github.com/UT-Austin-RPL/amago"
    assert all(u.startswith(("https://github.com/UT-Austin-RPL/amago", "https://arxiv.org/abs/")) for u in urls.values())
    assert "Typing :: Typed" in ast.literal_eval(kw["classifiers"])
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert "repository-code" not in cff and "no public repository" in cff["message"]
    assert cff["title"].endswith(ast.literal_eval(kw["description"]))  # the citation names what setup.py describes


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
    assert ast.literal_eval(kw["license_expression"]) == "MIT"
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
