"""The package's import graph: no cycles, no library code taken from a CLI module.

The graph is built with ``ast`` from every module of ``u2seg`` (top-level AND function-level imports,
``from u2seg.x import y`` counting as an import of ``u2seg.x.y`` when that is a module), so a lazy import
inside a function cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import u2seg

PACKAGE_DIR = Path(u2seg.__file__).resolve().parent
DISPATCHER = "u2seg.cli"
ENTRY_POINT = "u2seg.__main__"  # `python -m u2seg`: calls the dispatcher
# compound stages: parse their segments with the dispatcher's stage parsers (each flag keeps one home)
COMPOUND_STAGES = ("u2seg.shard_pass_cli", "u2seg.pseudo.stuff.shard_cli")


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The u2seg modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import u2seg.a.b` imports u2seg.a.b
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("u2seg"):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (as a closed path) of the graph, or None. Package ``__init__`` modules are nodes too."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def is_cli_module(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "cli" or leaf.endswith("_cli")


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    """The walker counts imports inside functions and resolves ``from . import x``."""
    modules = {"u2seg": tmp_path / "__init__.py", "u2seg.a": tmp_path / "a.py", "u2seg.b": tmp_path / "b.py",
               "u2seg.c": tmp_path / "c.py"}
    (tmp_path / "a.py").write_text("def f():\n    from u2seg.b import thing\n    from . import c\n")
    assert imports_of("u2seg.a", tmp_path / "a.py", modules) == {"u2seg.b", "u2seg.c"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and "u2seg.pseudo.stuff.stego.model" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_dispatcher_imports_cli_modules():
    graph = import_graph()
    assert any(is_cli_module(m) for m in graph)
    bad = sorted(f"{name} imports {target}" for name, targets in graph.items() if name != DISPATCHER
                 for target in targets if is_cli_module(target)
                 and not (name in (ENTRY_POINT, *COMPOUND_STAGES) and target == DISPATCHER))
    assert not bad, "library code taken from CLI modules:\n" + "\n".join(bad)
