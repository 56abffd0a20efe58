"""The path scrubber rewrites absolute paths of a machine, and only in a notebook's outputs: source cells,
markdown and path-like templates (``reports/<profile>/metrics/<name>.json``) stay as written."""
import nbformat

from scp_core import reproduce as rp
from scp_core.io import REPO_ROOT, portable

TEMPLATES = ["reports/<profile>/metrics/<name>.json", "(<out>/priors/<setting>)", "`<reports>/cache/`",
             "reports/<profile>/notebooks/"]


def test_templates_are_not_paths_and_machine_paths_are(tmp_path):
    for text in TEMPLATES:
        assert portable(text) == text
    assert portable(f"saved {REPO_ROOT / 'reports' / 'toy' / 'a.png'}") == "saved reports/toy/a.png"
    assert portable(f"in {tmp_path / 'run' / 'x.json'}") == "in .../x.json"


def test_slim_notebook_scrubs_outputs_only(tmp_path):
    where = str(tmp_path / "reports" / "toy" / "metrics" / "a.json")
    template = "reports/<profile>/metrics/<name>.json"
    nb = nbformat.v4.new_notebook()
    prose = nbformat.v4.new_markdown_cell(f"Each notebook writes `{template}`; its priors: `<out>/priors/<setting>`.")
    code = nbformat.v4.new_code_cell(f"# writes {template} (<out>/priors/<setting>)\npath = {where!r}")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"saved {where}\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": repr(where)}, execution_count=1)]
    params = nbformat.v4.new_code_cell(f"# Parameters\nout_dir = {str(tmp_path / 'report')!r}\n")
    params.metadata["tags"] = ["injected-parameters"]
    nb.cells = [prose, params, code]
    slim = nbformat.reads(rp.slim_notebook(nbformat.writes(nb)), as_version=4)
    assert slim.cells[0].source == prose.source, "markdown stays as written"
    assert slim.cells[2].source == code.source, "a source cell stays as written, its templates and paths too"
    outs = slim.cells[2].outputs
    assert outs[0].text == "saved .../a.json\n" and outs[1].data["text/plain"] == "'.../a.json'"
    assert str(tmp_path) not in slim.cells[1].source and "out_dir = '.../report'" in slim.cells[1].source
