"""The API reference cannot drift from the code: every public name (each subpackage's ``__all__``) has its own
docstring, TensorDict-facing classes name their keys in it, every public name appears in its docs/api page, and
every API name a docs/api page lists (table first cells, bullet heads, headings) still exists."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
#: docs/api page -> the subpackages whose ``__all__`` it documents
PAGES = {
    "envs.md": ["torchrl_amago.envs", "torchrl_amago.envs.builtin", "torchrl_amago.envs.libs", "torchrl_amago.suites"],
    "data.md": ["torchrl_amago.data"],
    "modules.md": ["torchrl_amago.modules", "torchrl_amago.modules.trajectory"],
    "objectives.md": ["torchrl_amago.objectives"],
    "trainers.md": ["torchrl_amago.trainers"],
}
#: names a page may list that are not ours: the TorchRL / tensordict namespaces they come from
FOREIGN = ["torchrl.modules", "torchrl.objectives", "torchrl.envs", "torchrl.collectors", "torchrl.trainers",
           "torchrl.data", "tensordict.nn", "tensordict"]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)


def public(module: str) -> dict[str, object]:
    mod = importlib.import_module(module)
    return {name: getattr(mod, name) for name in mod.__all__}


def all_public() -> dict[str, object]:
    out = {}
    for module in [m for mods in PAGES.values() for m in mods] + ["torchrl_amago", "torchrl_amago.keys"]:
        out.update(public(module))
    out.update({n: getattr(importlib.import_module("torchrl_amago.spaces"), n)
                for n in ("ActionSpace", "action_space_from_spec")})
    return out


def own_doc(obj) -> str:
    """The object's own docstring (a class does not inherit one; a dataclass's generated signature is not one)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if inspect.isclass(obj) and doc and re.fullmatch(rf"{obj.__name__}\(.*\)", doc.strip(), re.S):
        return ""
    return (doc or "").strip()


def documented_callables(module: str):
    return [(n, o) for n, o in public(module).items() if inspect.isclass(o) or inspect.isroutine(o)]


def td_facing(obj) -> bool:
    """Classes that read or write TensorDict entries: modules, transforms, envs, losses, replay buffers."""
    from tensordict.nn import TensorDictModuleBase
    from torchrl.data import ReplayBuffer
    from torchrl.envs import EnvBase, Transform
    from torchrl.objectives import LossModule

    return inspect.isclass(obj) and issubclass(obj, (TensorDictModuleBase, Transform, EnvBase, LossModule,
                                                     ReplayBuffer))


MODULES = [m for mods in PAGES.values() for m in mods]


@pytest.mark.parametrize("module", MODULES)
def test_every_public_class_and_function_has_a_docstring(module):
    missing = [n for n, o in documented_callables(module) if not own_doc(o)]
    assert not missing, f"{module}: public names without their own docstring: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_tensordict_classes_name_their_keys(module):
    missing = [n for n, o in documented_callables(module) if td_facing(o) and not re.search("key", own_doc(o), re.I)]
    assert not missing, f"{module}: TensorDict-facing classes whose docstring names no keys in / out: {missing}"


def listed(name: str, text: str) -> bool:
    return re.search(r"`" + re.escape(name) + r"(?=[`(.\[ =,])", text) is not None


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_public_name_is_in_its_api_page(page):
    text = (API / page).read_text()
    missing = [f"{m}.{n}" for m in PAGES[page] for n in public(m) if not listed(n, text)]
    assert not missing, f"docs/api/{page} does not mention (in backticks) {missing}"


def api_names(text: str) -> list[str]:
    """API names a page lists: backticked `Name` / `name(` heading a table row, a bullet or a heading."""
    names = []
    for line in FENCE.sub("", text).splitlines():
        heads = []
        m = re.match(r"^\|\s*(.*?)\s*\|", line)
        if m and not set(m.group(1)) <= set("-: "):
            heads.append(m.group(1))
        m = re.match(r"^\s*[-*]\s+(`.*)", line)
        if m:
            heads.append(m.group(1).split(":")[0])
        m = re.match(r"^#+\s+(`.*)", line)
        if m:
            heads.append(m.group(1))
        for head in heads:
            for name, paren in re.findall(r"`([A-Za-z_][\w.]*)(\(?)", head):
                root = name.split(".")[0]
                if (root[0].isupper() and any(c.islower() for c in root)) or paren:
                    names.append(name)
    return names


def stale_names(text: str) -> list[str]:
    known = all_public()
    classes = [o for o in known.values() if inspect.isclass(o)]
    foreign = [importlib.import_module(m) for m in FOREIGN]
    out = []
    for name in api_names(text):
        root, *rest = name.split(".")
        if root in known:
            obj = known[root]
            for part in rest:
                obj = getattr(obj, part, None)
            if obj is not None:
                continue
        elif any(hasattr(c, root) for c in classes) or any(hasattr(f, root) for f in foreign):
            continue  # a method of a public class (`resume(`), or TorchRL's own name (`LSTMModule`)
        out.append(name)
    return sorted(set(out))


@pytest.mark.parametrize("page", sorted(PAGES))
def test_api_pages_list_no_names_that_are_gone(page):
    stale = stale_names((API / page).read_text())
    assert not stale, f"docs/api/{page} lists names the package no longer has: {stale}"


def test_the_checks_catch_drift():
    text = "| `AMAGOLoss(...)` | ok |\n- `NoSuchThing(a)`: gone\n- `AMAGOLoss.multi_task(...)`: ok\n" \
           "- `AMAGOLoss.no_such_method()`: gone\n| `resume()` | a method |\n| `prev_action` | a key |\n"
    assert stale_names(text) == ["AMAGOLoss.no_such_method", "NoSuchThing"]
    assert listed("AMAGOLoss", text) and not listed("AMAGO", text)

    class Undocumented:
        pass

    @__import__("dataclasses").dataclass
    class Generated:
        x: int = 0

    assert own_doc(Undocumented) == "" and own_doc(Generated) == "" and own_doc(all_public()["AMAGOLoss"])
