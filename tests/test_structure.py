"""The layout stays as docs/architecture.md draws it: no import circle, no import that runs up a layer,
small modules and functions, function-local imports only where a comment says why."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scp_core"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
LONG_REASON = "Long because"  # a function over the limit says why in its docstring


sys.path.insert(0, str(ROOT / "docs"))
import import_graph  # noqa: E402  (docs/import_graph.py: the graph the architecture picture is drawn from)

MODULES = import_graph.modules()


def _layer_of(module: str, layers: dict[str, int]) -> int | None:
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in layers:
            return layers[".".join(parts[:k])]
    return None


def test_there_is_no_import_circle():
    graph = import_graph.imports()
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    # a package's __init__ importing its own submodules, which import their siblings, is not a circle
    circles = [c for c in circles if not all(x.startswith(c[0]) or c[0].startswith(x) for x in c)]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_every_module_has_a_layer_and_none_imports_upwards():
    layers = import_graph.layers()
    assert layers, "docs/architecture.md has no layer table"
    missing = [m for m in MODULES if m != "scp_core" and _layer_of(m, layers) is None]
    assert not missing, f"modules without a layer in docs/architecture.md: {missing}"
    up = [f"{m} (layer {_layer_of(m, layers)}) imports {t} (layer {_layer_of(t, layers)})"
          for m, targets in import_graph.imports().items() if m != "scp_core" for t in targets
          if t != "scp_core" and _layer_of(t, layers) > _layer_of(m, layers)]
    assert not up, "imports that run up a layer:\n" + "\n".join(up)


def test_the_architecture_picture_is_drawn_from_the_code():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(.*?)\n```", text, flags=re.S)
    assert block, "docs/architecture.md has no mermaid picture"
    assert block.group(1) == import_graph.mermaid(), (
        "docs/architecture.md's picture is out of date: replace it with the output of `python docs/import_graph.py`")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines (at most {MAX_MODULE_LINES})"
    long_ = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                long_.append(f"{node.name} ({n} lines)")
    assert not long_, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines without '{LONG_REASON}': {long_}"


def _import_runs(fn: ast.AST):
    """Runs of consecutive import statements inside a function body (one comment may speak for a run)."""
    for node in ast.walk(fn):
        for field in ("body", "orelse", "finalbody"):
            run = []
            body = getattr(node, field, None)
            for stmt in (body if isinstance(body, list) else []) + [None]:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    run.append(stmt)
                elif run:
                    yield run
                    run = []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_local_imports_say_why(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    silent = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for run in _import_runs(fn):
                start, end = run[0].lineno - 1, run[-1].end_lineno
                if not any("#" in line for line in lines[start - 1:end]):
                    silent.append(f"line {run[0].lineno}: {lines[start].strip()}")
    assert not silent, f"{path.name}: function-local imports without a comment saying why: {silent}"


# The parts of the intended picture (docs/architecture.md) and the imports it rules out: each pair
# (importer part, imported part, why) must never appear as an import, function-local ones included.
PARTS = {
    "face": ("cli", "reproduce", "index_md", "claims", "protocol", "preflight", "notebook_order", "report_stage"),
    "scale": ("distributed",), "train": ("training",), "study": ("study",), "outside": ("release", "compose"),
    "reference": ("reference",), "pipeline": ("pipeline", "pipeline_folder"), "metrics": ("metrics",),
    "sampling": ("sampling",), "models": ("models", "taef2"), "data": ("data",), "priors": ("priors",),
    "base": ("io", "safe_pickle", "_tv_compat", "weights", "labels", "timing"),
}
NEVER = [
    ("priors", "sampling", "the math knows no sampler"),
    ("priors", "pipeline", "the math knows no pipeline"),
    ("priors", "models", "the math knows no network"),
    ("priors", "train", "no training in the math"),
    ("priors", "face", "no CLI in the math"),
    ("priors", "study", "the math knows no study"),
    ("priors", "data", "the math takes latents, not datasets"),
    ("data", "models", "data knows no model"),
    ("metrics", "train", "evaluation never trains"),
    ("metrics", "pipeline", "metrics score images, whatever made them"),
    ("scale", "train", "sharding knows no training recipes"),
    ("sampling", "pipeline", "the sampler knows no pipeline"),
    ("study", "train", "the study never trains (notebook 07 does)"),
    ("reference", "pipeline", "the reference set takes any encoder; the toy stack's folder is data.profiles'"),
    ("train", "study", "training reads no notebook settings; profiles and zoo folders are data.profiles'"),
]


def _part_of(module: str) -> str | None:
    top = import_graph.part(module)
    return next((name for name, tops in PARTS.items() if top in tops), None)


def test_every_module_is_on_a_part():
    loose = [m for m in MODULES if m != "scp_core" and _part_of(m) is None]
    assert not loose, f"modules on no part of tests/test_structure.py's PARTS: {loose}"


@pytest.mark.parametrize("src,dst,why", NEVER, ids=[f"{a}-never-{b}" for a, b, _ in NEVER])
def test_the_intended_picture_rules_out_this_import(src, dst, why):
    broken = sorted(f"{m} -> {t}" for m, targets in import_graph.imports().items() for t in targets
                    if _part_of(m) == src and _part_of(t) == dst)
    assert not broken, f"{src} never imports {dst} ({why}): {broken}"
