"""The order a batch of notebooks runs in, derived from what each notebook reads of the others.

A notebook reads another notebook's numbers only through ``study.read_metrics(s, "<name>")`` and writes its own
through ``study.write_metrics(s, "<name>", ...)``, each with the name written out in its source.
:func:`metrics_names` reads those names from a notebook's code cells without running it; :func:`waits_for` gives
every notebook the notebooks whose metrics it reads (notebook 05 quotes Table 1 of notebook 03, 06 tabulates
it), so that in a batch it starts once they have finished and quotes this batch's numbers.

:data:`SHARED_IMAGES` adds the notebooks that ask for images a longer one makes first (the same stack, prior, mu,
seeds and maps, which the image cache shares): they start after it, so that two lanes never make the same images
at once.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

__all__ = ["READ", "WRITE", "SHARED_IMAGES", "code_of", "metrics_names", "waits_for"]

READ, WRITE = "read_metrics", "write_metrics"
SHARED_IMAGES = {n: ("03_prior_comparison",) for n in ("04_mu_sweep", "08_global_factors", "10_prior_transfer",
                                                       "11_training_seeds")}


def code_of(path: Path) -> str:
    """The code cells of notebook ``path``, joined (IPython magics and shell lines left out)."""
    cells = json.loads(Path(path).read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
             if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def metrics_names(path: Path) -> dict[str, set[str]]:
    """``{"read_metrics": names, "write_metrics": names}``: the metrics files notebook ``path`` reads and writes.

    Raises:
        ValueError: a call whose name is not a string written out (the batch could not be ordered by it).
    """
    found = {READ: set(), WRITE: set()}
    for node in ast.walk(ast.parse(code_of(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if func not in found:
            continue
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            raise ValueError(f"{Path(path).name}, line {node.lineno}: {func} names its metrics file by an "
                             "expression; write the name out (\"prior_comparison\") so that the batch can be "
                             "ordered by it")
        found[func].add(name.value)
    return found


def waits_for(folder: Path) -> dict[str, tuple[str, ...]]:
    """For each notebook of ``folder``: the notebooks it starts after (whose metrics it reads, and
    :data:`SHARED_IMAGES`).

    Raises:
        ValueError: a notebook reads metrics that no notebook of ``folder`` writes.
    """
    names = {p.stem: metrics_names(p) for p in sorted(Path(folder).glob("*.ipynb"))}
    writer = {m: nb for nb, io in names.items() for m in io[WRITE]}
    order = {}
    for nb, io in names.items():
        unknown = sorted(io[READ] - set(writer))
        if unknown:
            raise ValueError(f"{nb} reads metrics {unknown} that no notebook writes")
        inputs = {writer[m] for m in io[READ]} | set(SHARED_IMAGES.get(nb, ()))
        order[nb] = tuple(sorted(inputs - {nb}))
    return order
