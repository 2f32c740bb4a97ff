"""The house has no import circle: every relative import in the package, lazy ones inside functions
included, drawn as an arrow between modules, and the arrows searched for a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pianosynth

PACKAGE = Path(pianosynth.__file__).parent


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = (package,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def import_graph(root: Path = PACKAGE, package: str = "pianosynth") -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body), by relative imports and
    by absolute ones that name the package (``from pianosynth.midi import ...``)."""
    files = {_module_name(p, root, package): p for p in root.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        # the package a relative import is resolved against: the module's own package
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):  # `import pianosynth.midi`: that module, and the package above it
                for alias in node.names:
                    parts = alias.name.split(".")
                    edges.update(m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules)
                continue
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").split(".")[0] == package):
                continue
            base = here[: len(here) - (node.level - 1)] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from . import synthesize`: the submodule itself
                    edges.add(sub)
                elif target in modules:  # `from .midi import MAX_SECONDS`: the module that holds it
                    edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring the nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_imports_in_no_circle():
    graph = import_graph()
    assert "pianosynth.cli" in graph and "pianosynth.commands.train" in graph["pianosynth.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checkpoint_room_is_below_training_synthesis_and_the_registry():
    graph = import_graph()
    assert graph["pianosynth.checkpoint"].isdisjoint({"pianosynth.train", "pianosynth.synthesize", "pianosynth.registry"})
    for name in ("pianosynth.train", "pianosynth.synthesize", "pianosynth.registry"):
        assert "pianosynth.checkpoint" in graph[name]


def test_the_library_never_imports_the_command_line():
    graph = import_graph()
    above = {n for n in graph if n in ("pianosynth.cli", "pianosynth.__main__") or n.startswith("pianosynth.commands")}
    for name, edges in graph.items():
        if name not in above:
            assert edges.isdisjoint(above), f"{name} imports {sorted(edges & above)}"


def test_the_search_finds_a_circle_made_on_purpose(tmp_path):
    # a lazy import inside a function closes the circle a -> b -> c -> a
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import g\n    return g\n")
    (tmp_path / "c.py").write_text("def g():\n    from . import a\n")
    (tmp_path / "__init__.py").write_text("")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "c.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    # absolute imports of the package count too
    (tmp_path / "c.py").write_text("def g():\n    import pkg.a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "c.py").write_text("from pkg.a import f\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
