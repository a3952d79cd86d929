"""The package's shape, read from its source (docs/architecture.md): imports point one way
(no import circles, type-hint imports included), the torch-free parts import no torch,
and no module grows past 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mia_guard"
MAX_LINES = 450
#: Modules that must not import these, even indirectly through other mia_guard modules.
TORCH_FREE = ("mia_guard.stats", "mia_guard.gate", "mia_guard.report.schema", "mia_guard.audit.config",
              "mia_guard.plugins", "mia_guard.cli")
HEAVY = ("torch", "transformers", "opacus")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str) -> list[tuple[str, bool]]:
    """``(imported module, only under TYPE_CHECKING)`` for every import statement of module ``name``,
    wherever it stands (module level or inside a function); ``from a import b`` counts as
    ``a.b`` when that is a module of the package, else as ``a``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in MODULES else source, typing_only))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def import_graph(*, include_typing: bool) -> dict[str, set[str]]:
    """Module -> the modules it imports (package modules and top-level third-party names)."""
    graph = {}
    for name in MODULES:
        targets = set()
        for target, typing_only in imports(name):
            if typing_only and not include_typing:
                continue
            targets.add(target if target.startswith("mia_guard") else target.split(".")[0])
        graph[name] = {t for t in targets if t != name and (t in MODULES or not t.startswith("mia_guard"))}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Everything ``start`` imports, directly or through package modules: ``{module: imported by}``."""
    seen = {start: ""}
    todo = [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen[target] = node
                todo.append(target)
    return seen


def test_the_graph_reads_real_imports():
    """The reader is not vacuous: known edges are found, type-hint imports are told apart."""
    graph = import_graph(include_typing=True)
    assert "mia_guard.audit.config" in graph["mia_guard.audit.auditor"]
    assert "torch" in graph["mia_guard.scoring.forward"]
    assert "mia_guard.plugins" in graph["mia_guard.attacks.registry"]
    assert "mia_guard.scoring.token_stats" in graph["mia_guard.attacks.registry"]  # under TYPE_CHECKING
    assert "mia_guard.scoring.token_stats" not in import_graph(include_typing=False)["mia_guard.attacks.registry"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_counting_type_hint_imports():
    found = cycles(import_graph(include_typing=True))
    assert found == [], f"{len(found)} import circle(s); make the arrows point one way: {found}"


@pytest.mark.parametrize("root", TORCH_FREE)
def test_torch_free_parts_import_no_torch_even_indirectly(root):
    graph = import_graph(include_typing=False)  # TYPE_CHECKING imports never run
    starts = [name for name in MODULES if name == root or name.startswith(root + ".")]
    assert starts, root
    for start in starts:
        chain = reachable(graph, start)
        for heavy in HEAVY:
            if heavy in chain:
                path, node = [heavy], heavy
                while chain[node]:
                    node = chain[node]
                    path.append(node)
                pytest.fail(f"{start} imports {heavy}: {' <- '.join(path)}")


def test_no_module_is_longer_than_450_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules along their seams: {long}"
