"""The package's layers, read from the source: imports flow one way, and the results layer
(plus what it imports) never imports torch, so reports, claims and the gate run without it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"

# Each layer may import itself and the layers listed (module-level and function-level imports).
ALLOWED = {
    "core": set(),
    "tasks": {"core"},
    "zo": {"core"},
    "backends": {"core", "tasks"},
    "protocol": {"core", "tasks", "backends"},
    "results": {"core", "protocol"},
    "measure": {"core", "tasks", "zo", "backends"},
    "recipes": {"core", "tasks", "zo", "backends", "protocol", "measure", "results"},
    "cli": {"core", "tasks", "backends", "protocol", "recipes", "results"},
}
HEAVY = {"torch", "transformers", "peft", "sglang", "tokenizers", "datasets"}
TORCH_FREE_LAYERS = ("results", "protocol", "core")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str) -> set[str]:
    """Every module this one imports, anywhere in the file (lazy imports included; those
    under `if TYPE_CHECKING:` are annotations only)."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in MODULES}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) is not None])
def test_imports_flow_one_way(module):
    own = layer(module)
    for target in imports(module):
        if target.startswith("harness.") and layer(target) != own:
            assert layer(target) in ALLOWED[own], f"{module} imports {target}: {own} may not import {layer(target)}"


def reachable(module: str) -> set[str]:
    """Modules imported from `module`, transitively through the package (the package's
    __init__, a no-op CPU shim, is not followed)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for target in imports(current):
            if target not in seen:
                seen.add(target)
                if target in MODULES and target != "harness":
                    todo.append(target)
    return seen


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m) in TORCH_FREE_LAYERS])
def test_results_protocol_and_core_never_import_torch(module):
    heavy = {target for target in reachable(module) if target.split(".")[0] in HEAVY}
    assert not heavy, f"{module} reaches {sorted(heavy)}"


def test_only_the_registry_names_backends():
    """No `backend == "..."` test outside harness.backends.registry: code asks the backend."""
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            if (any(isinstance(side, ast.Attribute) and side.attr == "backend" for side in sides)
                    and any(isinstance(side, ast.Constant) and isinstance(side.value, str) for side in sides)):
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


def test_no_test_imports_another_test_module():
    """Shared helpers are fixtures in conftest.py; importing a test module (or conftest) by name
    depends on sys.path and runs its tests' module code twice."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.rglob("*.py")}
    offenders = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            offenders += [f"{path.name} imports {name}" for name in targets if name.split(".")[0] in names | {"tests"}]
    assert offenders == []
