"""The package's shape: layers whose imports point only downward, and no import cycle.

Every ``import`` of every module under ``revsnn_jax/`` is parsed (including imports inside
functions and ``TYPE_CHECKING`` blocks: they are dependences too). A module's layer is its first
folder under ``revsnn_jax/`` (``cli.py`` belongs to ``commands``); docs/architecture.md lists
what each layer owns.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "revsnn_jax"

#: bottom to top: a module may import from its own layer or a lower one
LAYERS = ("core", "neurons", "reversible", "layers", "models", "steps", "memory", "data",
          "training", "commands")
#: top-level modules that are not a layer folder, and the layer they sit in
TOP_MODULES = {"cli": "commands", "surrogate": "neurons"}
#: the package's own facade: it maps names to every layer on first use
FACADE = {"revsnn_jax", "revsnn_jax.__main__"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of ``revsnn_jax.<first>...``, or None for the facade."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    first = parts[1]
    return first if first in LAYERS else TOP_MODULES.get(first)


def all_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(source: str, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every package module that ``source`` imports. ``from A import b``
    counts as importing ``A.b`` when that is a module (or a top-level alias such as
    ``revsnn_jax.surrogate``), else ``A``. The package uses absolute imports only."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("revsnn_jax")]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"line {node.lineno}: a relative import; use absolute ones"
            target = node.module or ""
            if not target.startswith("revsnn_jax"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = sub in known or (target == "revsnn_jax" and alias.name in TOP_MODULES)
                out.append((node.lineno, sub if is_module else target))
    return out


def violations(modules: dict[str, str]) -> list[str]:
    """Upward imports among ``{module name: source}``: one line each."""
    known = set(modules)
    bad = []
    for name, source in modules.items():
        if name in FACADE:
            continue
        own = layer_of(name)
        for line, target in imported_modules(source, known):
            theirs = layer_of(target)
            if theirs is None:
                bad.append(f"{name}:{line} imports the package facade {target}")
            elif LAYERS.index(theirs) > LAYERS.index(own):
                bad.append(f"{name}:{line} ({own}) imports {target} ({theirs}), a higher layer")
    return bad


def cycles(modules: dict[str, str]) -> list[list[str]]:
    """Import cycles among ``{module name: source}`` (each reported once, from its first
    module in name order)."""
    known = set(modules)
    graph = {name: sorted({t for _, t in imported_modules(src, known) if t in known
                           and t != name})
             for name, src in modules.items() if name not in FACADE}
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def package_sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in all_modules().items()}


def test_every_module_sits_in_a_layer():
    homeless = [n for n in all_modules() if n not in FACADE and layer_of(n) is None]
    assert not homeless, f"modules outside the layers {LAYERS}: {homeless}"


def test_imports_point_only_downward():
    bad = violations(package_sources())
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(package_sources())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("source, expected", [
    ("from revsnn_jax.models import create\n", 1),          # neurons -> models: upward
    ("def f():\n    from revsnn_jax import training\n", 1),  # lazy imports count too
    ("from revsnn_jax.core import ties\n", 0),               # downward
    ("from revsnn_jax.neurons import multistep\n", 0),       # own layer
])
def test_the_checker_finds_an_upward_import(source, expected):
    modules = {"revsnn_jax.neurons.planted": source, "revsnn_jax.neurons.multistep": "",
               "revsnn_jax.core.ties": "", "revsnn_jax.models": "", "revsnn_jax.training": "",
               "revsnn_jax.core": "", "revsnn_jax.neurons": ""}
    assert len(violations(modules)) == expected


def test_the_checker_finds_a_cycle():
    modules = {"revsnn_jax.reversible.engine": "from revsnn_jax.reversible.check import x\n",
               "revsnn_jax.reversible.check": "def f():\n"
                                              "    from revsnn_jax.reversible.engine import y\n"}
    assert cycles(modules) == [["revsnn_jax.reversible.check", "revsnn_jax.reversible.engine",
                                "revsnn_jax.reversible.check"]]
