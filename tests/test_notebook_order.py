"""The batch orders itself from what each notebook reads of the others (scp_core.notebook_order): the declaration is
each notebook's ``study.read_metrics`` calls, and these tests check that a notebook opens no other notebook's
metrics by any other route, in its own code or in the study functions it calls."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from scp_core import notebook_order
from scp_core.notebook_order import READ, WRITE, code_of, metrics_names, waits_for

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_05_and_06_wait_for_the_table_they_quote():
    """05 quotes Table 1 and 06 tabulates it: both start after 03 (05 once ran beside it and quoted the previous
    batch's Table 1); 04, 08, 10 and 11 still start after 03, whose images they share; the others wait for none."""
    order = waits_for(ROOT / "notebooks")
    after_03 = {"04_mu_sweep", "05_diversity", "06_comparison_table", "08_global_factors", "10_prior_transfer",
                "11_training_seeds"}
    assert {n for n, deps in order.items() if deps} == after_03
    assert all(order[n] == ("03_prior_comparison",) for n in after_03)
    assert metrics_names(ROOT / "notebooks" / "05_diversity.ipynb")[READ] == {"prior_comparison"}
    assert metrics_names(ROOT / "notebooks" / "06_comparison_table.ipynb")[READ] == {"prior_comparison"}


def _names_outside_the_calls(code: str) -> list[str]:
    """String constants of ``code`` that name the metrics folder or a JSON file, other than the names passed to
    ``read_metrics`` / ``write_metrics``."""
    tree = ast.parse(code)
    declared = {id(node.args[1]) for node in ast.walk(tree) if isinstance(node, ast.Call) and len(node.args) > 1
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in (READ, WRITE)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in declared and (n.value == "metrics" or "metrics/" in n.value or n.value.endswith(".json"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_opens_metrics_only_through_the_calls_it_is_ordered_by(path):
    """No path to the metrics folder or to a JSON file in a notebook's code but the names of its read_metrics /
    write_metrics calls: every metrics file it opens is one the batch's order knows of."""
    assert _names_outside_the_calls(code_of(path)) == [], f"{path.name} opens metrics another way"
    assert metrics_names(path)[WRITE], f"{path.name} writes no metrics file"


def test_the_study_functions_open_no_metrics_file_but_in_read_and_write_metrics():
    """The study functions a notebook calls build no path to the metrics folder, except the two that the order is
    read from (a function taking the folder, as comparison_table once did, would hide a read)."""
    found = []
    for path in sorted((ROOT / "scp_core" / "study").glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            if fn.name not in (READ, WRITE) and any(isinstance(c, ast.Constant) and c.value == "metrics"
                                                    for c in ast.walk(fn)):
                found.append(f"{path.name}:{fn.name}")
    assert found == []


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%matplotlib inline"), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)


def test_a_read_no_notebook_writes_or_a_name_not_written_out_is_refused(tmp_path):
    _notebook(tmp_path / "a.ipynb", 'study.write_metrics(s, "a", {})')
    _notebook(tmp_path / "b.ipynb", 'm = study.read_metrics(s, "a")\nstudy.write_metrics(s, "b", {})')
    assert waits_for(tmp_path) == {"a": (), "b": ("a",)}
    _notebook(tmp_path / "c.ipynb", 'study.read_metrics(s, "nobody")')
    with pytest.raises(ValueError, match=r"c reads metrics \['nobody'\] that no notebook writes"):
        waits_for(tmp_path)
    _notebook(tmp_path / "c.ipynb", 'name = "a"\nstudy.read_metrics(s, name)')
    with pytest.raises(ValueError, match="c.ipynb, line 2: read_metrics names its metrics file by an expression"):
        waits_for(tmp_path)


def test_shared_images_name_notebooks_that_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert set(notebook_order.SHARED_IMAGES) <= names
    assert {d for deps in notebook_order.SHARED_IMAGES.values() for d in deps} <= names
