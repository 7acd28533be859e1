"""The repository's own import graph, read statically (ast, nothing imported): no module imports
itself back through others, and the client library imports only the standard library, grpc,
google.protobuf and itself (so `pip install ./client` needs nothing else)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import name -> the folder holding its top-level package.
PACKAGES = {
    "infercept": ROOT / "client",
    "svc_common": ROOT,
    "scheduler_svc": ROOT,
    "executor_svc": ROOT,
    "gateway": ROOT,
    "tooling": ROOT,
    "benchmarks": ROOT,
}
CLIENT_ALLOWED = {"grpc", "google", "infercept"}


def module_files() -> dict[str, Path]:
    """Every module of the packages (generated stubs excluded), by dotted name."""
    found: dict[str, Path] = {}
    for package, parent in PACKAGES.items():
        for path in (parent / package).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = path.relative_to(parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Dotted names `module` imports when it runs (in functions too; not under TYPE_CHECKING):
    for ``from a import b``, ``a.b`` (a submodule or a name of ``a``)."""
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from (name for branch in child.orelse for name in visit_one(branch))
                continue
            yield from visit_one(child)

    def visit_one(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)
        yield from visit(node)

    yield from visit(ast.parse(path.read_text(), str(path)))


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The repository module `name` lands in (its longest prefix that is one), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in imported_names(path, name):
            target = resolve(imported, modules)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as its modules in order (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_local_imports_are_read(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nfrom . import x\nfrom .y import z\n"
        "if TYPE_CHECKING:\n    import hidden\ndef f():\n    import inner.mod\n"
    )
    names = set(imported_names(source, "pkg.sub.m"))
    assert {"pkg.sub.x", "pkg.sub.y.z", "inner.mod", "typing.TYPE_CHECKING"} == names


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert package in graph, package
    assert "tooling.loadgen.sweep" in graph["tooling.loadgen.main"]


def test_no_module_imports_itself_back_through_others() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("name", sorted(n for n in module_files() if n.split(".")[0] == "infercept"))
def test_the_client_imports_only_the_standard_library_grpc_and_protobuf(name: str) -> None:
    path = module_files()[name]
    outside = {
        imported
        for imported in imported_names(path, name)
        if imported.split(".")[0] not in sys.stdlib_module_names | CLIENT_ALLOWED
        and imported != "__future__.annotations"
    }
    google = {imported for imported in imported_names(path, name) if imported.split(".")[0] == "google"}
    assert not outside, f"{name} imports {sorted(outside)}"
    assert all(g.startswith("google.protobuf") for g in google), sorted(google)
