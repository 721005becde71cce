"""Release check (`make release-check`, the last stage of `make test`): what a user of the release gets.

1. Build the sdist and the wheel from this checkout (`python -m build`: the wheel is built from the sdist, so the
   sdist must hold everything the build needs) and check their metadata (`twine check --strict`).
2. Check the wheel holds the package only (no tests, docs, examples, benchmarks or results), `py.typed` included, and
   that its metadata says the one version (`torchrl_amago.__version__`), the torch range and the project URLs.
3. Install the wheel alone into a fresh virtual environment (no repository files, no site packages) on the stack of
   requirements/release.txt (torch 2.14.1, the torch TorchRL 0.14.1 is built against), and run a short example from
   outside the checkout; the installed version must equal `__version__`.
4. In that environment, run the tests that need TorchRL's C++ extension (prioritized replay): they skip on the
   default suite's torch 2.13.0, where it does not load, so here they must run, none skipped.

Prints one JSON line with the time of each stage. `--keep DIR` keeps the build and the venv in DIR.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
RELEASE_STACK = ROOT / "requirements" / "release.txt"  # torch 2.14.1: TorchRL 0.14.1's C++ extension loads with it
EXTENSION_TESTS = ["tests/data/test_prioritized_replay.py"]
PACKAGE_ONLY = ("torchrl_amago/", )
URLS = {"Original AMAGO implementation, https://github.com/UT-Austin-RPL/amago",
        "AMAGO paper, https://arxiv.org/abs/2310.09971", "AMAGO-2 paper, https://arxiv.org/abs/2411.11188"}


def version() -> str:
    tree = ast.parse((ROOT / "torchrl_amago" / "__init__.py").read_text())
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__version__")


def run(cmd: list, **kw) -> str:
    print("+", " ".join(map(str, cmd)), flush=True)
    out = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)
    if out.returncode:
        sys.exit(f"release check: `{' '.join(map(str, cmd))}` failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                 f"{out.stderr[-3000:]}")
    return out.stdout


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"release check: {what}")


def check_wheel(wheel: Path, v: str) -> dict:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"torchrl_amago-{v}.dist-info/"
    stray = [n for n in names if not n.startswith(PACKAGE_ONLY + (dist_info,))]
    check(not stray, f"the wheel holds files outside the package: {stray[:10]}")
    check("torchrl_amago/py.typed" in names, "the wheel has no torchrl_amago/py.typed")
    check(not any(n.endswith((".csv", ".png", ".jsonl", ".md")) for n in names if n.startswith("torchrl_amago/")),
          "the wheel holds results or docs")
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(dist_info + "METADATA").decode())
    check(meta["Version"] == v, f"wheel version {meta['Version']} != torchrl_amago.__version__ {v}")
    check(meta["License-Expression"] == "MIT", f"License-Expression {meta['License-Expression']}")
    check(set(meta.get_all("Project-URL") or []) == URLS, f"Project-URL {meta.get_all('Project-URL')}")
    check(meta["Home-page"] is None, "a Home-page: this package has no public URL of its own")
    torch = [Requirement(r) for r in meta.get_all("Requires-Dist") or [] if Requirement(r).name == "torch"]
    check([r.specifier for r in torch] == [SpecifierSet(">=2.7,<2.15")], f"torch requirement: {torch}")
    check("Typing :: Typed" in (meta.get_all("Classifier") or []), "no 'Typing :: Typed' classifier")
    return {"wheel_files": len(names)}


def check_sdist(sdist: Path, v: str) -> dict:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for need in ("setup.py", "LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff",
                 "torchrl_amago/__init__.py", "torchrl_amago/py.typed"):
        check(need in names, f"the sdist has no {need}")
    stray = sorted(n for n in names if n.split("/")[0] in ("tests", "docs", "examples", "benchmarks"))
    check(not stray, f"the sdist holds files of the checkout beside the package: {stray[:10]}")
    return {"sdist_files": len(names)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="build and install in DIR and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="release_check_")) if args.keep is None else args.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    v, times, t = version(), {}, time.time()
    try:
        dist = work / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT])
        wheel, sdist = dist / f"torchrl_amago-{v}-py3-none-any.whl", dist / f"torchrl_amago-{v}.tar.gz"
        check(wheel.exists() and sdist.exists(), f"expected {wheel.name} and {sdist.name} in {sorted(os.listdir(dist))}")
        run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
        found = {**check_wheel(wheel, v), **check_sdist(sdist, v)}
        times["build_and_check_s"], t = round(time.time() - t, 1), time.time()

        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", venv])  # no --system-site-packages: the wheel and what it requires only
        py = venv / "bin" / "python"
        run([py, "-m", "pip", "install", "-q", "-c", RELEASE_STACK, "torch", wheel])
        times["install_s"], t = round(time.time() - t, 1), time.time()

        away = work / "user"  # outside the checkout: nothing of the repository is importable
        shutil.rmtree(away, ignore_errors=True)
        away.mkdir()
        shutil.copy(ROOT / "examples" / "04_tmaze.py", away)
        where = json.loads(run([py, "-c", "import importlib.metadata as m, json, torch, torchrl_amago as p; print("
                                "json.dumps([p.__file__, p.__version__, m.version('torchrl_amago'), "
                                "torch.__version__]))"], cwd=away))
        check(where[0].startswith(str(venv)), f"torchrl_amago imported from {where[0]}, not the venv")
        check(where[1] == where[2] == v, f"installed __version__ {where[1]}, metadata {where[2]}, expected {v}")
        check(run([py, "04_tmaze.py", "--help"], cwd=away).startswith("usage"), "04_tmaze.py --help printed no usage")
        out = run([py, "04_tmaze.py", "--horizon", "3", "--epochs", "2", "--timesteps_per_epoch", "4",
                   "--grads_per_epoch", "2", "--parallel_envs", "2", "--eval_envs", "2", "--eval_interval", "1",
                   "--test_mult", "1", "--max_seq_len", "4", "--memory_size", "16", "--memory_layers", "1",
                   "--tstep_hidden", "16", "--tstep_out", "16", "--no-progress_bar", "--buffer_dir", away / "runs",
                   "--run_name", "release"], cwd=away)
        summary = json.loads(out.strip().splitlines()[-1])
        check(summary.get("example") == "04_tmaze" and summary.get("grad_steps") == 4, f"example summary {summary}")
        times["example_s"], t = round(time.time() - t, 1), time.time()

        run([py, "-m", "pip", "install", "-q", "pytest", "pytest-timeout"])
        report = work / "extension_tests.xml"
        print(run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "slow or not slow",
                   "--junitxml", report, *EXTENSION_TESTS], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}
                  ).strip().splitlines()[-1], flush=True)
        suite = ET.parse(report).getroot().find("testsuite")
        ran, skipped = int(suite.get("tests")), int(suite.get("skipped"))
        check(ran >= 3 and skipped == 0, f"the extension tests ran {ran}, skipped {skipped} (must run on torch "
                                         f"{where[3]}, {RELEASE_STACK.name})")
        times["extension_tests_s"] = round(time.time() - t, 1)
        print(json.dumps({"release_check": "passed", "version": v, "torch": where[3], **found,
                          "extension_tests": ran, **times}), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
