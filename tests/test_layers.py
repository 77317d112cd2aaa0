"""colinux's layers import downward only: no cycle between its sub-packages.

Every ``import`` of every module is read with ``ast`` (late imports inside
functions too: a late import is how a cycle hides), and each is an edge from
the importing module's sub-package (``colinux.engine.uml`` -> ``engine``; a
top-level module such as ``colinux.cli`` is a node of its own) to the imported
one's. A cycle between two nodes, of any length, fails with the imports that
make it; so does ``config/`` importing anything of colinux but its errors,
since every other layer reads the machine it describes.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import colinux

PACKAGE = Path(colinux.__file__).parent

Edges = dict[str, dict[str, list[str]]]  # node -> imported node -> "module imports name"


def _node(module: str) -> str:
    """A module's layer: its sub-package, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "colinux"


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[: -node.level]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from colinux import trace` names the module colinux.trace
            names += [f"{base}.{alias.name}" if base == "colinux" else base for alias in node.names]
    return [name for name in names if name == "colinux" or name.startswith("colinux.")]


def import_graph() -> Edges:
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for name in _imports(path, module):
            source, target = _node(module), _node(name)
            if source != target:
                line = f"{module} imports {name}"
                if line not in edges[source][target]:
                    edges[source][target].append(line)
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_cycle_between_sub_packages() -> None:
    edges = import_graph()
    problems = []
    for component in cycles(edges):
        members = set(component)
        why = [
            line
            for source in component
            for target, lines in edges[source].items()
            if target in members
            for line in lines
        ]
        problems.append(f"cycle {' <-> '.join(component)}:\n  " + "\n  ".join(why))
    assert not problems, "\n".join(problems)


def test_config_imports_only_errors() -> None:
    allowed = {"config", "errors"}
    wrong = [
        line
        for target, lines in import_graph()["config"].items()
        if target not in allowed
        for line in lines
    ]
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_imports() -> None:
    # A walk that found nothing would pass the two tests above: it must see the
    # daemon using the engine and the engine reading the configuration.
    edges = import_graph()
    assert "engine" in edges["daemon"] and "config" in edges["engine"]
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == [["a", "b", "c"]]
