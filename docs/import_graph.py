"""The package's import graph, read from the code (standard library only).

``python docs/import_graph.py`` prints the Mermaid picture that docs/architecture.md embeds:
one box per top-level part of ``scp_core`` (a module or a sub-package), one arrow per import
between parts, boxes grouped by the layers of architecture.md's table. ``tests/test_structure.py``
uses the same functions to check that the picture is current, that nothing imports a layer above
its own and that there is no import circle.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scp_core"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    """``scp_core.x.y`` -> its file, for every module of the package."""
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _targets(module: str, path: Path, node, known: dict) -> list[str]:
    """The scp_core modules one import statement names (``from pkg import name`` may name a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "scp_core"]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "scp_core":
        return []
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return subs or [target]


def imports() -> dict[str, set[str]]:
    """``module -> {scp_core modules it imports}``, function-local imports included."""
    known = modules()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {t for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                         for t in _targets(module, path, n, known) if t in known and t != module}
    return graph


def layers() -> dict[str, int]:
    """architecture.md's layer table (``| N | `a`, `b` | ... |``) as ``{"scp_core.a": N, ...}``."""
    table = {}
    for m in re.finditer(r"^\|\s*(\d+)\s*\|([^|]*)\|", ARCHITECTURE.read_text(encoding="utf-8"), flags=re.M):
        for name in re.findall(r"`([\w.]+)`", m.group(2)):
            table[f"scp_core.{name}"] = int(m.group(1))
    return table


def part(module: str) -> str:
    """The top-level part of ``scp_core`` a module belongs to (``scp_core.priors.scp`` -> ``priors``)."""
    return module.split(".")[1] if module.count(".") else module


def part_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, targets in imports().items():
        if m == "scp_core":
            continue
        out.setdefault(part(m), set()).update(part(t) for t in targets if t != "scp_core" and part(t) != part(m))
    return out


def mermaid() -> str:
    """The picture: parts grouped by layer (top layer first), arrows from importer to imported."""
    graph, table = part_graph(), layers()
    by_layer: dict[int, list[str]] = {}
    for p in sorted(graph):
        by_layer.setdefault(table.get(f"scp_core.{p}", 0), []).append(p)
    lines = ["flowchart TB"]
    for layer in sorted(by_layer, reverse=True):
        lines.append(f"  subgraph L{layer}[layer {layer}]")
        lines += [f"    {p.strip('_')}[{p}]" for p in by_layer[layer]]
        lines.append("  end")
    lines += [f"  {a.strip('_')} --> {b.strip('_')}" for a in sorted(graph) for b in sorted(graph[a])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(mermaid() + "\n")
