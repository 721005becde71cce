"""docs/figures/make_diagrams.py: it runs, writes a PNG of the intended size, names only classes and functions that
exist, and the committed docs/figures/data_path.png is what it makes.

The committed PNG records the matplotlib that drew it in its "Software" text field. Under that same matplotlib the
regenerated image must be pixel-identical; under another one (fonts and anti-aliasing may move a pixel) only its
size must match, so the test stays green across matplotlib versions while still catching a stale file."""
import importlib
import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "figures" / "make_diagrams.py"
COMMITTED = ROOT / "docs" / "figures" / "data_path.png"


def load_script():
    spec = importlib.util.spec_from_file_location("make_diagrams", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    path = load_script().main(["--out", str(out)])
    assert path == out / "data_path.png"
    return path


def test_script_writes_a_png_of_the_intended_size(fresh):
    mod, path = load_script(), fresh
    assert 20_000 < path.stat().st_size < 2_000_000  # a drawing, not an empty canvas nor a photo
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (int(mod.WIDTH_IN * mod.DPI), int(mod.HEIGHT_IN * mod.DPI))
        assert img.info.get("Software") == f"matplotlib {matplotlib.__version__}"
        pixels = np.asarray(img.convert("L"))
    assert (pixels < 128).mean() > 0.01  # text and box edges are there


def test_committed_png_is_what_the_script_makes(fresh):
    with Image.open(COMMITTED) as old, Image.open(fresh) as new:
        assert old.size == new.size, "docs/figures/data_path.png is stale: run python docs/figures/make_diagrams.py"
        if old.info.get("Software") == new.info.get("Software"):
            assert np.array_equal(np.asarray(old.convert("RGBA")), np.asarray(new.convert("RGBA"))), \
                "docs/figures/data_path.png is stale: run python docs/figures/make_diagrams.py"


def test_boxes_name_real_public_names():
    for module, names in load_script().NAMES.items():
        mod = importlib.import_module(module)
        missing = [n for n in names if not hasattr(mod, n)]
        assert not missing, f"{module} has no {missing}"
