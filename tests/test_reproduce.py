"""`scpdiff reproduce`: failure isolation, a report replaced only by a batch that finished, kill-safety, index
coverage, metrics files, full-run tolerance."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from scp_core import cli
from scp_core import reproduce as rp
from scp_core.io import portable
from scp_core.study.settings import PROFILE_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "toy"\nsmoke = None\nout_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "00_quickstart.ipynb", "from pathlib import Path\n"
              "p = Path(out_dir) / 'metrics' / '00_quickstart.json'; p.parent.mkdir(parents=True, exist_ok=True)\n"
              "p.write_text('{\"ok\": 1}')")
    _notebook(nbdir / "01_mismatch_study.ipynb", "raise RuntimeError('deliberate failure for the test')")
    _notebook(nbdir / "02_noise_priors.ipynb",
              "import time; time.sleep(float(__import__('os').environ.get('NB_SLEEP', '0')))")
    monkeypatch.setattr(rp, "NOTEBOOK_DIR", nbdir)
    return nbdir


def test_a_failing_notebook_does_not_stop_the_batch(tmp_path, fake_notebooks):
    out = tmp_path / "report"
    run = rp.reproduce("toy", only=["00_quickstart", "01_mismatch_study", "02_noise_priors"], out=out)
    st = {k: v["status"] for k, v in run["notebooks"].items()}
    assert st == {"00_quickstart": "ok", "01_mismatch_study": "failed", "02_noise_priors": "ok"}
    assert "deliberate failure" in run["notebooks"]["01_mismatch_study"]["error"]
    kept = Path(run["failed_report"])  # the batch's own report, beside the (here empty) one it did not replace
    assert kept.parent == out / "_failed" and sorted(p.name for p in out.iterdir()) == ["_failed"]
    index = (kept / "index.md").read_text()
    assert "**FAILED**" in index and "deliberate failure" in index
    assert (kept / "html" / "00_quickstart.html").is_file() and (kept / "notebooks" / "02_noise_priors.ipynb").is_file()
    assert not (kept / "notebooks" / "01_mismatch_study.ipynb").exists(), "a failed notebook is not passed off as done"
    assert (kept / "notebooks" / "01_mismatch_study.failed.ipynb").is_file()


def _report_like_a_committed_one(out: Path) -> dict[str, bytes]:
    """A report folder as a finished batch leaves it (index, runs record, a notebook's outputs); its bytes by path."""
    files = {"index.md": "# the previous report\n", "runs.json": json.dumps({"notebooks": {"00_quickstart": {
        "name": "00_quickstart", "status": "ok", "error": None, "wall_s": 1.0}}, "batch_wall_s": 9.0,
        "commit": "abc1234", "finished": "earlier"}),
        "metrics/00_quickstart.json": '{"ok": 0}', "notebooks/00_quickstart.ipynb": "{}",
        "tables/00_quickstart.md": "| a |\n", "figures/00_quickstart.png": "png"}
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return _bytes(out)


def _bytes(out: Path) -> dict[str, bytes]:
    """Every file of a report folder but the batches' own (``_failed``) and hidden ones, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and not any(part.startswith((".", "_failed")) for part in p.relative_to(out).parts)}


def test_a_batch_with_a_failed_notebook_leaves_the_previous_report_whole(tmp_path, fake_notebooks, capsys,
                                                                         monkeypatch):
    """00 runs (and rewrites its metrics), 01 fails: the report's index, runs record and 00's committed outputs stay
    byte for byte; the batch's own index and notebooks go to _failed/<time>/, which the one-line error names."""
    from test_cli import run_main  # scpdiff ARGV in this process: (exit status, stderr)

    out = tmp_path / "report"
    before = _report_like_a_committed_one(out)
    code, err = run_main(["reproduce", "--only", "00_quickstart", "01_mismatch_study", "--jobs", "1", "--out", out],
                         capsys)
    assert code == 1 and _bytes(out) == before
    [kept] = (out / "_failed").iterdir()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (f"scpdiff reproduce: error: 1 of 2 notebooks failed (01_mismatch_study); {out} is left as it "
                   f"was; this batch's index and notebooks: {kept / 'index.md'}\n")
    runs = json.loads((kept / "runs.json").read_text())
    assert {n: r["status"] for n, r in runs["notebooks"].items()} == {"00_quickstart": "ok",
                                                                      "01_mismatch_study": "failed"}
    assert json.loads((kept / "metrics" / "00_quickstart.json").read_text()) == {"ok": 1}, "the batch's own numbers"
    assert (kept / "notebooks" / "01_mismatch_study.failed.ipynb").is_file()
    assert not (kept / "tables").exists(), "the copied files the batch left alone are not kept twice"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no stage folder is left behind"


def test_a_batch_that_finished_replaces_the_notebooks_it_ran_and_names_the_report(tmp_path, fake_notebooks):
    """Every notebook ran: its files replace theirs in the report (the others' stay); what it recorded names the
    report folder, not the copy it ran in."""
    out = tmp_path / "report"
    before = _report_like_a_committed_one(out)
    (out / "cache").mkdir()  # scratch shared by every batch: linked into the batch's copy, never moved
    (out / "cache" / "entry.npy").write_text("x")
    run = rp.reproduce("toy", only=["00_quickstart", "02_noise_priors"], out=out)
    assert "failed_report" not in run and not (out / "_failed").exists()
    after = _bytes(out)
    assert json.loads(after["metrics/00_quickstart.json"]) == {"ok": 1}
    assert after["tables/00_quickstart.md"] == before["tables/00_quickstart.md"], "files no notebook rewrote stay"
    assert set(json.loads(after["runs.json"])["notebooks"]) == {"00_quickstart", "02_noise_priors"}
    executed = nbformat.read(out / "notebooks" / "02_noise_priors.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters["out_dir"] == portable(str(out)) == ".../report"
    assert ".batch-" not in (out / "notebooks" / "02_noise_priors.ipynb").read_text()
    assert (out / "cache" / "entry.npy").read_text() == "x" and not (out / "cache").is_symlink()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no stage folder is left behind"


def test_a_partial_run_keeps_the_whole_batchs_time_and_records_itself(tmp_path, fake_notebooks):
    out = tmp_path / "report"
    out.mkdir()
    whole = {"commit": "abc1234", "finished": "earlier", "batch_wall_s": 1751.6,
             "notebooks": {"02_noise_priors": {"name": "02_noise_priors", "status": "ok", "wall_s": 33.6}}}
    (out / "runs.json").write_text(json.dumps(whole))
    run = rp.reproduce("toy", only=["00_quickstart"], out=out)
    assert (run["batch_wall_s"], run["commit"], run["finished"]) == (1751.6, "abc1234", "earlier")
    assert [p["notebooks"] for p in run["partial_runs"]] == [["00_quickstart"]] and run["partial_runs"][0]["wall_s"] > 0
    assert set(run["notebooks"]) == {"00_quickstart", "02_noise_priors"} and run["notebooks"]["00_quickstart"]["commit"]
    assert "batch wall time 1751.6 s. Later re-run alone: 00_quickstart" in (out / "index.md").read_text()


def test_a_missing_notebook_or_unwritable_report_is_recorded_not_raised(tmp_path, fake_notebooks):
    """run_notebook records a missing notebook or an unwritable report as a failure; the batch goes on."""
    rec = rp.run_notebook("05_diversity", tmp_path / "report", {"profile": "toy"})
    assert rec["status"] == "failed" and "no notebook" in rec["error"]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the report folder should be")
    rec = rp.run_notebook("00_quickstart", blocked, {"profile": "toy"})
    assert rec["status"] == "failed" and rec["error"]


def test_unknown_notebook_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown notebook"):
        rp.reproduce("toy", only=["99_nothing"], out=tmp_path)


def test_a_killed_run_leaves_no_half_written_file_and_a_rerun_completes(tmp_path, fake_notebooks):
    out = tmp_path / "report"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from scp_core import reproduce as rp; "
            f"from pathlib import Path; rp.NOTEBOOK_DIR = Path({str(fake_notebooks)!r}); "
            f"rp.reproduce('toy', only=['02_noise_priors'], out=Path({str(out)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**__import__("os").environ, "NB_SLEEP": "60"},
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".batch-*/notebooks/.*")):
        time.sleep(0.5)  # wait until papermill is writing its (temporary) output into the batch's copy
    assert list(out.glob(".batch-*/notebooks/.*")), "papermill should be writing a temporary file"
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _bytes(out) == {}, f"report files written by a killed batch: {sorted(_bytes(out))}"
    run = rp.reproduce("toy", only=["02_noise_priors"], out=out)
    assert run["notebooks"]["02_noise_priors"]["status"] == "ok"
    assert (out / "index.md").is_file() and (out / "notebooks" / "02_noise_priors.ipynb").is_file()


def test_committed_index_covers_every_notebook():
    index = ROOT / "reports" / "toy" / "index.md"
    assert index.is_file(), "the toy reference results (reports/toy/index.md) must be committed"
    text = index.read_text()
    for name in rp.NOTEBOOKS:
        assert (ROOT / "notebooks" / f"{name}.ipynb").is_file()
        assert f"`{name}`" in text, f"index.md does not list {name}"
    # every table and figure linked from the index exists
    for line in text.splitlines():
        if line.startswith("- [") and "](" in line:
            assert (index.parent / line.split("](")[1].rstrip(")")).is_file(), line


def test_every_notebook_is_in_the_batch_list():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(rp.NOTEBOOKS)


def test_committed_metrics_carry_settings_and_sample_counts():
    mdir = ROOT / "reports" / "toy" / "metrics"
    m = json.loads((mdir / "prior_comparison.json").read_text())
    assert set(m["tables"]) == {"toy", "toy-gv"}, "Table 1 runs on both toy-city settings"
    for rows in m["tables"].values():
        assert {r["prior"] for r in rows} == {"normal", "spatial", "categorical", "joint"}
        assert all(r["n"] == m["settings"]["n_eval"] and r["fd_ci"][1] > r["fd_ci"][0] for r in rows)
        assert all(r["metric"] == m["settings"]["metric"] for r in rows)
    assert m["settings"]["smoke"] is False
    from scp_core.metrics.verdict import relation_of_difference

    for setting, rows in m["tables"].items():  # the stated verdict follows from the rule the file records
        if "protocol" in m:  # the paired rule: the committed interval of the difference decides
            by = {(r["a"], r["b"], r["column"]): r for r in m["comparisons"][setting]}
            rec = by[("joint", "normal", "fd")]
            assert rec["verdict"] == relation_of_difference(rec["diff_ci"]) and rec["n_boot"] >= 1000
            assert rec["diff"] == pytest.approx(rec["value_a"] - rec["value_b"])
            assert rec["text"] in m["verdict"][setting], (setting, m["verdict"][setting])
        else:  # written before it (index.md and the claims say so): its own rule, disjoint marginal intervals
            by = {r["prior"]: r for r in rows}
            j, n = by["joint"]["fd_ci"], by["normal"]["fd_ci"]
            expect = "better" if j[1] < n[0] else ("worse" if j[0] > n[1] else "not distinguishable")
            assert expect in m["verdict"][setting], (setting, m["verdict"][setting])
            assert "Written before the paired-interval rule" in (ROOT / "reports" / "toy" / "index.md").read_text()


@pytest.mark.slow
def test_full_toy_reproduction_matches_the_committed_tables(tmp_path):
    """Re-run the whole toy study and compare every committed table (tolerance 1e-3 relative + 1e-3)."""
    run = rp.reproduce("toy", out=tmp_path)
    assert all(r["status"] == "ok" for r in run["notebooks"].values()), run["notebooks"]
    for ref in sorted((ROOT / "reports" / "toy" / "tables").glob("*.csv")):
        if ref.stem.startswith(("00_", "07_")):  # timings only
            continue
        a, b = pd.read_csv(ref), pd.read_csv(tmp_path / "tables" / ref.name)
        num = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c]) and not c.endswith("_s")]
        pd.testing.assert_frame_equal(a[num], b[num], rtol=1e-3, atol=1e-3)


def test_slim_notebook_keeps_results_and_drops_machine_traces():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    s = "/"
    where = f"{s}work{s}someone{s}project{s}reports{s}toy{s}figures{s}a.png"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="progress 10%\r"),
                    nbformat.v4.new_output("stream", name="stdout", text=f"saved {where}\n"),
                    nbformat.v4.new_output("display_data",
                                           data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]
    cell.metadata["papermill"] = {"duration": 1.0}
    nb.cells = [cell]
    nb.metadata["papermill"] = {"parameters": {"profile": "toy"}, "input_path": where, "duration": 3.0}
    slim = nbformat.reads(rp.slim_notebook(nbformat.writes(nb)), as_version=4)
    outs = slim.cells[0].outputs
    assert [o.output_type for o in outs] == ["stream", "display_data"] and outs[0].name == "stdout"
    assert outs[1].data["image/png"] == "iVBORw0KGgo=", "figures stay"
    assert f"{s}work{s}" not in nbformat.writes(slim) and "a.png" in outs[0].text
    assert slim.metadata.papermill == {"parameters": {"profile": "toy"}, "duration": 3.0}


def test_slim_notebook_leaves_image_payloads_byte_for_byte():
    """Base64 holds runs of '/' that look like absolute paths: the scrubber must not touch it."""
    import base64

    payload = base64.b64encode(bytes(range(256)) * 40).decode()
    s = "/"
    assert f"{s}{s}" in payload or payload.count(s) > 10
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    where = f"{s}work{s}someone{s}project{s}reports{s}a.png"
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": payload, "text/plain": where})]
    nb.cells = [cell]
    slim = nbformat.reads(rp.slim_notebook(nbformat.writes(nb)), as_version=4)
    assert slim.cells[0].outputs[0].data["image/png"] == payload
    assert f"{s}work{s}" not in slim.cells[0].outputs[0].data["text/plain"]


def test_committed_reference_runs_include_their_executed_notebooks():
    """A reader sees every notebook's outputs without running anything (small enough to commit)."""
    for profile in ("toy",):
        folder = ROOT / "reports" / profile / "notebooks"
        for name in rp.batch_names(profile):
            path = folder / f"{name}.ipynb"
            assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run scpdiff reproduce --profile {profile}"
            nb = nbformat.read(path, as_version=4)
            assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has no outputs"
            assert path.stat().st_size < 3 * 2**20, f"{name}: executed notebook over 3 MB"


def test_toy_only_notebooks_leave_the_batch_of_other_profiles(tmp_path):
    """09 and 10 need the toy stacks (zero-SNR, locked): `--profile camvid` skips them, and asking for one says why."""
    for name in ("09_zero_snr", "10_prior_transfer", "11_training_seeds"):
        with pytest.raises(ValueError, match="toy profile only"):
            rp.reproduce("camvid", only=[name], out=tmp_path)
    assert rp.TOY_ONLY <= set(rp.DEFAULT_BATCH) and not list(tmp_path.iterdir())


def test_committed_index_rederives_from_the_committed_metrics(tmp_path):
    """write_index on the committed toy report (runs.json, metrics, tables, figures) gives its index.md exactly."""
    src = ROOT / "reports" / "toy"
    for d in ("metrics", "tables", "figures", "notebooks"):
        (tmp_path / d).symlink_to(src / d, target_is_directory=True)
    rp.write_index(tmp_path, json.loads((src / "runs.json").read_text()))
    assert (tmp_path / "index.md").read_bytes() == (src / "index.md").read_bytes()


def test_the_evaluation_splits_reach_every_notebook_and_the_record(tmp_path, fake_notebooks):
    args = cli.build_parser().parse_args(["reproduce", "--eval-splits", "val", "holdout"])
    assert args.eval_splits == ["val", "holdout"]
    assert rp.notebook_params("toy", "00_quickstart", True, tmp_path, ("val", "holdout"))["eval_splits"] == [
        "val", "holdout"]  # a list: papermill would write a tuple as its text
    out = tmp_path / "report"
    run = rp.reproduce("toy", only=["00_quickstart"], out=out, eval_splits=["val"])
    assert run["eval_splits"] == ["val"] and json.loads((out / "runs.json").read_text())["eval_splits"] == ["val"]
    executed = nbformat.read(out / "notebooks" / "00_quickstart.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters["eval_splits"] == ["val"]
    assert executed.metadata.papermill.parameters["out_dir"] == portable(str(out)), "the report, not its copy"
    assert "Evaluation splits of every notebook (given for this run): val." in (out / "index.md").read_text()


def test_the_batch_records_the_profiles_counts_from_the_study_table(tmp_path):
    assert rp.profile_params("camvid") is PROFILE_PARAMS["camvid"] and rp.profile_params("toy") == {}
    p = rp.notebook_params("camvid", "08_global_factors", False, tmp_path)
    assert (p["n_eval"], p["eval_splits"]) == (113, ["val", "holdout"])


def _committed_notebooks() -> list[Path]:
    """The executed notebooks of the committed reference runs (not scratch runs: _smoke, _quick)."""
    return sorted(p for p in (ROOT / "reports").glob("*/notebooks/*.ipynb")
                  if not p.parts[-3].startswith("_") and not p.name.endswith(".failed.ipynb")
                  and not p.name.startswith("."))  # a run in progress writes beside its target as .<name>.*


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_every_image_of_a_committed_notebook_decodes_and_is_its_figure_file(path):
    """What a notebook viewer shows: every image output decodes (PIL), carries the name of the figure file it
    shows, and is that file byte for byte (study.save_figure displays the file it wrote)."""
    import base64
    import io

    from PIL import Image

    nb = nbformat.read(path, as_version=4)
    images = [(o, o["data"]["image/png"]) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    for out, payload in images:
        raw = base64.b64decode(payload)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()                                  # the whole image, not only its header
            assert im.size[0] > 50 and im.size[1] > 50
        name = out.get("metadata", {}).get("image/png", {}).get("filename")
        assert name, f"{path.name}: an image output without the name of its figure file"
        figure = path.parents[1] / "figures" / name
        assert figure.is_file() and figure.read_bytes() == raw, f"{path.name}: {name} differs from figures/{name}"
    assert images, f"{path.name} shows no figure"


def test_lanes_start_a_notebook_only_after_the_one_whose_images_it_shares():
    """Two lanes: 'b' and 'c' wait for 'a' (as 08, 10 and 04 wait for 03); 'x' fills the other lane meanwhile."""
    events, lock = [], __import__("threading").Lock()

    def one(name):
        with lock:
            events.append(("start", name))
        time.sleep({"a": 0.3, "x": 0.05}.get(name, 0.01))
        with lock:
            events.append(("end", name))

    rp.run_lanes(["a", "b", "c", "x"], 2, one, after={"b": ("a",), "c": ("a",), "z": ("a",)})
    order = [e for e in events]
    assert {n for kind, n in order if kind == "end"} == {"a", "b", "c", "x"}
    for n in ("b", "c"):
        assert order.index(("end", "a")) < order.index(("start", n)), order
    assert order.index(("start", "x")) < order.index(("end", "a")), "the free lane ran x while a ran"
    # a dependency outside the batch does not hold a notebook back, and jobs=1 keeps the given order
    seen = []
    rp.run_lanes(["b", "x"], 1, seen.append, after={"b": ("a",)})
    assert seen == ["b", "x"]


def test_a_lane_error_stops_new_starts_and_is_raised():
    seen = []

    def one(name):
        seen.append(name)
        if name == "a":
            raise RuntimeError("lane failure")
    with pytest.raises(RuntimeError, match="lane failure"):
        rp.run_lanes(["a", "b", "c"], 1, one, after={})
    assert seen == ["a"]


def test_kernels_side_by_side_run_one_thread_each_for_torch_and_blas(tmp_path, monkeypatch):
    """Two lanes on two cores: each kernel inherits one torch thread and one OpenBLAS thread (numpy / scipy's
    BLAS would otherwise start a thread per core in every kernel and the two kernels' threads fight)."""
    for key in rp.SINGLE_THREADED:
        monkeypatch.setenv(key, "2")  # restored after the test
    seen = []

    def fake(name, out, params):
        seen.append({k: os.environ[k] for k in rp.SINGLE_THREADED})
        return {"status": "ok", "wall_s": 0.0, "error": None}
    monkeypatch.setattr(rp, "run_notebook", fake)
    monkeypatch.setattr(rp, "write_index", lambda out, run: None)
    rp.reproduce("toy", only=["00_quickstart", "02_noise_priors"], smoke=True, jobs=2, out=tmp_path)
    assert seen == [{"SCP_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"}] * 2


def test_the_batch_starts_a_notebook_after_the_ones_whose_metrics_it_reads(tmp_path, monkeypatch):
    """05 reads 03's Table 1 (study.read_metrics in its source): in two lanes it waits for 03 while 00 runs."""
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "03_prior_comparison.ipynb", 'study.write_metrics(s, "prior_comparison", {})')
    _notebook(nbdir / "05_diversity.ipynb", 'm1 = study.read_metrics(s, "prior_comparison")')
    _notebook(nbdir / "00_quickstart.ipynb", 'study.write_metrics(s, "00_quickstart", {})')
    monkeypatch.setattr(rp, "NOTEBOOK_DIR", nbdir)
    events = []

    def fake(name, out, params):
        events.append(("start", name))
        time.sleep({"03_prior_comparison": 0.5}.get(name, 0.05))
        events.append(("end", name))
        return {"status": "ok", "wall_s": 0.0, "error": None}
    monkeypatch.setattr(rp, "run_notebook", fake)
    monkeypatch.setattr(rp, "write_index", lambda out, run: None)
    rp.reproduce("toy", only=["05_diversity", "00_quickstart", "03_prior_comparison"], jobs=2, out=tmp_path / "r")
    assert events.index(("end", "03_prior_comparison")) < events.index(("start", "05_diversity")), events
    assert events.index(("start", "00_quickstart")) < events.index(("end", "03_prior_comparison")), events


def test_the_real_versus_real_line_names_the_splits_of_the_run():
    """A run on the test split says train against test, where the line once said validation whatever the run."""
    from scp_core import index_md

    m = json.loads((ROOT / "reports" / "camvid" / "metrics" / "prior_comparison.json").read_text())
    m["settings"]["eval_splits"] = ["test"]
    text = index_md._table1(m)
    assert "real training images against the test reference (train against test)" in text
    assert "real test images" in text and "validation" not in text
    m["settings"]["eval_splits"] = ["val", "holdout"]
    assert "against the validation + held-out reference (train against val + holdout)" in index_md._table1(m)
