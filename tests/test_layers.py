"""The layering of the code, read from its imports (module- and function-level, via ``ast``).

    schemas/            tables and reasons; imports nothing of the project
    curation/ (core)    storage, the stage contract and lifecycle, crawl/, imagehash/, fetch/, sample/, output/: schemas only
    filters/, models/   pure rules and scorers: the core and schemas
    jobs/stages/        one module per stage (+ the run config): everything above, never a sibling stage
    jobs/ (the rest)    the Spark entry points (jobs/dedup/ one file per step) and the CLI (jobs/cli/): everything

Run ``python -m tests.test_layers`` for the figures (cycles, arrows that run back up, sizes).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "jobs", "filters", "models", "schemas")
# the per-stage units of work, one module each in jobs/stages/
STAGE_UNITS = ("extract", "filter_text", "download", "dedup", "annotate", "select", "report", "semdedup")
ALLOWED = {  # layer -> the layers it may import
    "schemas": {"schemas"},
    "core": {"core", "schemas"},
    "filters": {"filters", "core", "schemas"},
    "models": {"models", "core", "schemas"},
    "stages": {"stages", "filters", "models", "core", "schemas"},
    "jobs": {"jobs", "stages", "filters", "models", "core", "schemas"},
}
MAX_MODULE_LINES = 500
MAX_JOB_LINES = 150


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its __init__)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = here.split(".")[: len(here.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return set()
    out = set()
    for name in names:
        while name and name not in known:  # import a.b.c -> the longest project module it names
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its body (function-level imports count)."""
    modules = project_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        for node in ast.walk(tree):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        edges.discard(name)
        graph[name] = edges
    return graph


def layer_of(module: str) -> str:
    top, _, rest = module.partition(".")
    if top == "curation":
        return "core"
    if top == "jobs" and rest.split(".")[0] == "stages":
        return "stages"
    return top


def stage_unit(module: str) -> str | None:
    """The stage a module is the unit of (jobs.stages.download -> download), else None."""
    parts = module.split(".")
    if parts[:2] == ["jobs", "stages"] and len(parts) == 3 and parts[2] in STAGE_UNITS:
        return parts[2]
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports into a layer the importer may not see (the core into filters/models/stages/jobs, ...)."""
    return sorted((a, b) for a, bs in graph.items() for b in bs if layer_of(b) not in ALLOWED[layer_of(a)])


def sibling_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in graph.items() for b in bs if stage_unit(a) and stage_unit(b))


def is_job(module: str) -> bool:
    """A Spark job or dedup step (jobs/), not the CLI and not the stage layer (which has the module limit)."""
    return module.startswith("jobs.") and module.split(".")[1] not in ("cli", "stages")


def line_counts() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in project_modules().items()}


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_no_import_runs_back_up_a_layer():
    assert upward_arrows(import_graph()) == []


def test_the_core_imports_only_schemas_and_libraries():
    graph = import_graph()
    assert {b for a, bs in graph.items() if layer_of(a) == "core" for b in bs if layer_of(b) not in ("core", "schemas")} == set()


def test_no_stage_imports_a_sibling_stage():
    assert sibling_arrows(import_graph()) == []


def test_every_stage_has_its_module_in_the_stage_layer():
    modules = project_modules()
    assert [s for s in STAGE_UNITS if f"jobs.stages.{s}" not in modules] == []
    assert [s for s in STAGE_UNITS if f"curation.{s}" in modules or f"curation.stages.{s}" in modules] == []


def test_no_module_over_500_lines_and_no_job_over_150():
    counts = line_counts()
    assert {m: n for m, n in counts.items() if n > MAX_MODULE_LINES} == {}
    jobs = {m: n for m, n in counts.items() if is_job(m)}
    assert {m: n for m, n in jobs.items() if n > MAX_JOB_LINES} == {}


def report() -> None:
    graph = import_graph()
    found = cycles(graph)
    print(f"modules: {len(graph)}, arrows: {sum(len(v) for v in graph.values())}")
    print(f"cycles (SCCs > 1): {len(found)}")
    for c in found:
        print("  ", " <-> ".join(c))
    up = upward_arrows(graph)
    print(f"arrows that run back up: {len(up)}")
    for a, b in up:
        print(f"   {a} -> {b}   ({layer_of(a)} -> {layer_of(b)})")
    sib = sibling_arrows(graph)
    print(f"arrows between sibling stages: {len(sib)}")
    for a, b in sib:
        print(f"   {a} -> {b}")
    counts = line_counts()
    big = sorted(((n, m) for m, n in counts.items() if n > MAX_MODULE_LINES), reverse=True)
    print(f"modules over {MAX_MODULE_LINES} lines: {big}")
    jobs = sorted(((n, m) for m, n in counts.items() if is_job(m) and n > MAX_JOB_LINES), reverse=True)
    print(f"jobs over {MAX_JOB_LINES} lines (the CLI aside): {jobs}")


if __name__ == "__main__":
    report()
