"""Imports run one way: no cycle among the modules of scaling/ and analysis/, counting module-level
AND function-level imports (a cycle closed by an import inside a function is still a cycle)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("scaling", "analysis")


def package_modules() -> dict[str, str]:
    """{dotted module name: file path} for every .py file under the packages."""
    mods = {}
    for pkg in PACKAGES:
        # followlinks=False: the repo-root `experiments` link is outside; scaling/experiments is real
        for folder, dirs, files in os.walk(os.path.join(ROOT, pkg)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    mods[".".join(rel)] = os.path.join(folder, f)
    return mods


def imported_modules(name: str, path: str, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file (every `import`/`from` node)."""
    is_pkg = os.path.basename(path) == "__init__.py"
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package holding `name`
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from pkg import module` imports pkg.module; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import scaling.x.attr`-like: the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = package_modules()
    known = set(mods)
    return {m: imported_modules(m, p, known) for m, p in mods.items()}


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (each holds a cycle)."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan; the graph is small, so recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sccs


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per knot (see `knots`)."""
    return [_cycle_in(graph, comp) for comp in knots(graph)]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (BFS)."""
    start = min(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {comp}")


def test_find_cycles_finds_function_level_and_relative_cycles(tmp_path):
    """The checker itself: it sees a cycle closed by a function-level relative import."""
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from p import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import os\nfrom p.a import thing\n")
    (pkg / "d.py").write_text("from p.c import x\n")
    known = {"p", "p.a", "p.b", "p.c", "p.d"}
    graph = {m: imported_modules(m, str(pkg / (m.split(".")[-1] + ".py")) if m != "p"
                                 else str(pkg / "__init__.py"), known) for m in known}
    assert graph["p.b"] == {"p.c"} and graph["p.c"] == {"p.a"}
    assert find_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]


def test_no_import_cycles():
    graph = import_graph()
    assert "scaling.sweeps.runner" in graph and "analysis.load" in graph
    found = [(_cycle_in(graph, comp), comp) for comp in knots(graph)]
    assert not found, "import cycles (module- or function-level):\n" + "\n".join(
        "  " + " -> ".join(cycle) + (f"   (modules in this knot: {', '.join(sorted(comp))})"
                                     if len(comp) > len(cycle) - 1 else "")
        for cycle, comp in found)


def test_sweep_modules_do_not_fit_or_plot():
    """The sweep runner runs and collects; the report (fit, plots) is analysis', called by the CLI."""
    graph = import_graph()
    sweeps = [m for m in graph if m.startswith("scaling.sweeps")]
    assert {"scaling.sweeps.plan", "scaling.sweeps.store", "scaling.sweeps.runner"} <= set(sweeps)
    assert not {m: sorted(t for t in graph[m] if t.startswith("analysis"))
                for m in sweeps if any(t.startswith("analysis") for t in graph[m])}
    assert "analysis.report" in graph["scaling.cli"]
    assert graph["scaling.sweeps.store"] <= {"scaling.errors", "scaling.fileio"}  # stdlib-light


def test_no_function_longer_than_100_lines():
    """The house rule of issue 12: every function in scaling/ and analysis/ reads in one sitting."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    long = []
    for pkg in ("scaling", "analysis"):
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 100:
                        long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
