"""The house's layout rules, checked on the package's source (python/fastllm, read with `ast`).

- Floors: a module imports only from its own floor's package or from floors below it (the CLI and
  the demo sit on top; the model does not import generation). The one exception is named below.
- No import cycles among module-level imports.
- No private name (`_name`) of one module is imported or read by another; private *modules*
  (`fastllm._core`, `fastllm._io`, `fastllm._checks`, `fastllm._progress`, `fastllm.cli._errors`)
  are the package's shared internals and may be imported.
- `import fastllm`, `from fastllm import BPETokenizer`, `import fastllm.cli` (the CLI's --help
  stays fast), `fastllm.data.documents` and `fastllm.dedup` do not import torch.

Oracle: the rules above, written as data; a module added in the wrong room fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastllm

ROOT = Path(fastllm.__file__).resolve().parent

# Lower floors may be imported from higher ones; within one floor only inside the same package.
FLOORS = [
    {"fastllm._core", "fastllm._io", "fastllm._checks", "fastllm._progress"},
    {
        "fastllm.chat",
        "fastllm.config",
        "fastllm.tokenizer",
        "fastllm.kernels",
        "fastllm.data.documents",
        "fastllm.data.shards",
    },
    {"fastllm.data", "fastllm.model"},
    {"fastllm.train", "fastllm.generation", "fastllm.dedup"},
    {"fastllm.demo"},
    {"fastllm.cli"},
    {"fastllm.__main__"},
]
# (importer, imported): the only imports that reach up a floor, each with its reason.
ALLOWED_UP = {
    # `MiniGPT.generate(idx, n, **kw)`, the short form kept for nanoGPT users, calls
    # fastllm.generation inside the method; no module-level import, so the model imports alone.
    ("fastllm.model.gpt", "fastllm.generation"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(ROOT.rglob("*.py"))}


def _floor(name: str) -> tuple[int, str]:
    """(floor, the floor's package entry that contains `name`)."""
    best = None
    for i, entries in enumerate(FLOORS):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and (
                best is None or len(entry) > len(best[1])
            ):
                best = (i, entry)
    if best is None:
        raise AssertionError(f"{name} is in no floor: add it to FLOORS in tests/test_layout.py")
    return best


def _imports(module: str, tree: ast.Module) -> list[tuple[str, list[str], bool]]:
    """(imported module, imported names, at module level) for every fastllm import."""
    out = []
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], id(node) in top) for a in node.names if a.name.startswith("fastllm")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastllm"):
            out.append((node.module, [a.name for a in node.names], id(node) in top))
    # `if TYPE_CHECKING:` / try blocks at module level count as module level.
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("fastllm"):
                    out.append((sub.module, [a.name for a in sub.names], True))
    return out


MODULES = _modules()
# The compiled extension has a stub (_core.pyi), not a .py file.
KNOWN = set(MODULES) | {"fastllm._core"}


def _resolve(target: str, names: list[str]) -> list[str]:
    """`from fastllm.x import y` imports module fastllm.x.y when that is a module."""
    subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
    return subs or [target]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_reaches_up_a_floor(module):
    if module == "fastllm":
        return  # the root package re-exports lazily by name (strings), see fastllm/__init__.py
    here, here_pkg = _floor(module)
    for target, names, _ in _imports(module, MODULES[module]):
        for dep in _resolve(target, names):
            if dep == "fastllm":
                continue
            there, there_pkg = _floor(dep)
            allowed = there < here or there_pkg == here_pkg or (module, there_pkg) in ALLOWED_UP
            assert allowed, f"{module} (floor {here}) imports {dep} (floor {there}, {there_pkg})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module):
    for target, names, _ in _imports(module, MODULES[module]):
        for n in names:
            if n.startswith("_") and f"{target}.{n}" not in KNOWN and not n.startswith("__"):
                pytest.fail(f"{module} imports the private name {n} from {target}")
    # `mod._name` on a module imported as a name
    imported_modules = {}
    for node in ast.walk(MODULES[module]):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastllm") and a.asname:
                    imported_modules[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastllm"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in KNOWN:
                    imported_modules[a.asname or a.name] = full
    for node in ast.walk(MODULES[module]):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            target = imported_modules.get(node.value.id)
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if target and private and target != "fastllm._core" and f"{target}.{node.attr}" not in MODULES:
                pytest.fail(f"{module} reads the private name {node.attr} of {target}")


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, tree in MODULES.items():
        for target, names, top in _imports(module, tree):
            if top:
                graph[module].update(d for d in _resolve(target, names) if d in graph and d != module)
    # a package's __init__ importing its own submodules is not a cycle with them importing siblings
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d.startswith(m + "."):
                continue  # package -> its own submodule
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                if not all(c.startswith(d + ".") or c == d for c in cycle[1:-1]):
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


LIGHT = [
    "import fastllm",
    "from fastllm import BPETokenizer",
    "import fastllm.cli",
    "import fastllm.data.documents",
    "import fastllm.dedup",
]


@pytest.mark.parametrize("statement", LIGHT)
def test_light_imports_do_not_import_torch(statement):
    code = f"import sys\n{statement}\nsys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"`{statement}` imports torch"


def test_the_torch_check_can_fail():
    """The oracle of the test above sees torch when a statement does import it."""
    code = "import sys\nfrom fastllm import MiniGPT\nsys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 1
