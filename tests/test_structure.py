"""The package's import graph has no cycle between modules (read from the source, nothing imported).

An edge is an import of another hemo_mtl module; importing one's own parent package (``from . import
heads``) is not an edge to that package's ``__init__``, only to the submodule named.
"""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "hemo_mtl"


def module_graph() -> nx.DiGraph:
    files = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = nx.DiGraph()
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph.add_node(name)
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in files and target != name and target not in ancestors:
                    graph.add_edge(name, target)
    return graph


def test_graph_is_read():
    graph = module_graph()
    assert graph.has_edge("hemo_mtl.engine.trainer", "hemo_mtl.evaluation.loop")
    assert graph.has_edge("hemo_mtl.evaluation.loop", "hemo_mtl.models.gating")


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(module_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])
