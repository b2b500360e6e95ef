"""The package's layout: imports run one way (shared/ARCHITECTURE.md), with no cycle.

Every `import` in every module counts, also those inside functions (they are deferred for
start-up time, not to hide a dependency).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "maskformer"

# Which rooms a room may import besides itself; `config` and `errors` are at the bottom.
BOTTOM = {"config", "errors"}
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "experiments": BOTTOM,
    "resize": BOTTOM,
    "images": BOTTOM,
    "plots": BOTTOM,
    "modeling": BOTTOM | {"resize"},
    "objective": BOTTOM | {"resize"},
    "postprocess": BOTTOM | {"resize"},
    "evaluation": BOTTOM,
    "data": BOTTOM,
    "model_dir": BOTTOM | {"modeling", "data"},
    "conversion": BOTTOM | {"modeling", "model_dir", "data", "experiments"},
    "inference": BOTTOM | {"modeling", "postprocess", "evaluation", "data", "model_dir",
                           "images"},
    "visualize": BOTTOM | {"evaluation", "inference", "images"},
    "predict": BOTTOM | {"inference", "visualize", "data", "images"},
    "export": BOTTOM | {"modeling", "postprocess", "inference", "data", "model_dir"},
    "training": BOTTOM | {"modeling", "objective", "data", "evaluation", "inference",
                          "model_dir", "visualize", "plots", "conversion"},
    "demo": BOTTOM | {"data", "training", "inference", "evaluation", "visualize", "experiments",
                      "plots", "images"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The maskformer modules `path` imports (`from maskformer.x import y` counts x.y when
    x.y is a module, else x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if _is_module(candidate):
                    names.append(candidate)
        else:
            continue
        found.update(n for n in names if n == "maskformer" or n.startswith("maskformer."))
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    assert len(graph) > 30, "the package was not found"
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "maskformer"


def test_import_graph_has_no_cycle():
    graph = _graph()
    # A package's __init__ re-exporting its modules is not a cycle with them.
    edges = {m: {d for d in deps if not m.startswith(d + ".") and d != m}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep in edges and state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if state.get(module) is None:
            visit(module)


def test_imports_run_downward():
    wrong = []
    for module, deps in _graph().items():
        room = _room(module)
        if room not in ALLOWED:
            continue  # the top: cli, the package's __init__ and __main__
        for dep in deps:
            other = _room(dep)
            if other != room and other not in ALLOWED[room]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layout:\n" + "\n".join(sorted(wrong))
