"""The import map of both packages: a tree (no circles), and the service imports only public client modules.

Read with `ast`, every import counts, those under `if TYPE_CHECKING:` and inside functions too: a circle hidden
behind a lazy import is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[1]
PACKAGES: Final = {"breaker_service": ROOT / "breaker_service", "breaker_client": ROOT / "client" / "breaker_client"}


def module_name(package: str, directory: Path, path: Path) -> str:
    parts = [package, *path.relative_to(directory).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(package, directory, path): path
        for package, directory in PACKAGES.items()
        for path in sorted(directory.rglob("*.py"))
    }


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The first-party modules `module` imports (a package import counts as its `__init__`)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the module itself.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {module: imported(module, path, known) for module, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(edges[module]):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(edges):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_the_import_map_has_no_circles() -> None:
    edges = graph()
    assert "breaker_service.store.breaker_redis" in edges, "the walk must see the store modules"
    assert find_cycle(edges) is None, f"import circle: {' -> '.join(find_cycle(edges) or [])}"


def test_the_service_imports_no_private_client_module() -> None:
    private = {
        (module, target)
        for module, targets in graph().items()
        if module.startswith("breaker_service")
        for target in targets
        if target.startswith("breaker_client.") and any(part.startswith("_") for part in target.split(".")[1:])
    }
    assert private == set()


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_find_cycle_finds_a_circle_and_only_a_circle(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected
