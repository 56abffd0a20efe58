"""``scpdiff reproduce``: run the study notebooks with papermill and render ``reports/<profile>/``.

For each notebook: execute it (papermill, parameters ``profile``, ``smoke``, ``out_dir`` and the
profile's counts of :data:`scp_core.study.settings.PROFILE_PARAMS`; every other count comes from
the same table, which the notebook reads itself; quick runs: ``SCP_QUICK=1`` in the kernels' environment)
into ``notebooks/<name>.ipynb`` and ``html/<name>.html``; the notebook itself writes tables, figures and
``metrics/<name>.json``. A notebook starts once the notebooks it reads have finished
(:func:`scp_core.notebook_order.waits_for`). A failing notebook is recorded (with its error) and the batch goes on.

The batch writes into a copy of the report folder (:mod:`scp_core.report_stage`), every file to a temporary name
and renamed. Once every notebook has run, the files it wrote replace theirs in the report, then ``index.md`` lists
every table and figure, the paper's numbers beside ours, and the run's metadata. A batch with a failed notebook
leaves the report as it was and its own files, ``runs.json`` and ``index.md`` in ``<report>/_failed/<time>/``.
"""
from __future__ import annotations

import json
import os
import platform
import time
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path


from . import _tv_compat  # noqa: F401
from .claims import rewrite_pages
from .index_md import NOTEBOOKS, write_index
from .io import REPO_ROOT, atomic_path, portable, write_text
from .notebook_order import waits_for
from .report_stage import keep_failed, open_stage, publish

DEFAULT_BATCH = [n for n in NOTEBOOKS if n != "07_training"]  # 07_training is optional (--with-training)
LONGEST = ["03_prior_comparison", "12_schedule_control", "11_training_seeds", "08_global_factors", "04_mu_sweep",
           "10_prior_transfer", "09_zero_snr", "01_mismatch_study"]
# experiments on the toy stacks (their retrained models exist for toy-city only)
TOY_ONLY = {"09_zero_snr", "10_prior_transfer", "11_training_seeds"}
# the schedule control of two CamVid stacks; on toy notebook 09 asks its question (`--only` still runs it there)
REAL_BATCH = {"12_schedule_control"}
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def batch_names(profile: str, only: list[str] | None = None, with_training: bool = False) -> list[str]:
    """The notebooks a batch runs: ``only``, else the default batch (with ``07_training`` if asked); on a profile
    other than toy without the toy-only ones, on toy without :data:`REAL_BATCH`. ``ValueError`` for an unknown name
    or a toy-only one asked for."""
    names = list(only) if only else (NOTEBOOKS if with_training else DEFAULT_BATCH)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    if profile == "toy" and not only:
        names = [n for n in names if n not in REAL_BATCH]
    if profile != "toy":
        if only and TOY_ONLY & set(names):
            raise ValueError(f"{sorted(TOY_ONLY & set(names))} run on the toy profile only (--profile toy)")
        names = [n for n in names if n not in TOY_ONLY]
    return names


def profile_params(profile: str) -> dict:
    """The counts where ``profile`` departs from the notebooks' (the study's table), by notebook."""
    from .study.settings import PROFILE_PARAMS  # the study package loads the models

    return PROFILE_PARAMS.get(profile, {})


def notebook_params(profile: str, name: str, smoke: bool, out: Path, eval_splits: list[str] | None = None) -> dict:
    """The papermill parameters of one notebook in a batch: the common ones, the profile's counts and,
    where given, the evaluation splits (a list: papermill writes tuples as text)."""
    return {"profile": profile, "smoke": bool(smoke), "out_dir": str(out), **profile_params(profile).get(name, {}),
            **({"eval_splits": list(eval_splits)} if eval_splits else {})}


def report_dir(profile: str, smoke: bool, out: str | Path | None = None, quick: bool = False) -> Path:
    if out:  # absolute: the notebooks run in notebooks/, a relative path would land there
        return Path(out).expanduser().absolute()
    return REPO_ROOT / "reports" / ("_smoke" if smoke else "_quick" if quick else "") / profile


@contextmanager
def _quick_kernels(quick: bool):
    """``SCP_QUICK`` for the kernels started in the block (the study table reads it), set either way so that an
    exported ``SCP_QUICK`` never shrinks a reference batch; restored afterwards."""
    before, os.environ["SCP_QUICK"] = os.environ.get("SCP_QUICK"), "1" if quick else "0"
    try:
        yield
    finally:
        os.environ.pop("SCP_QUICK") if before is None else os.environ.update(SCP_QUICK=before)


def run_notebook(name: str, out: Path, params: dict, timeout: int = 6 * 3600) -> dict:
    """Execute one notebook with papermill and render HTML; never raises for notebook errors."""
    import papermill as pm  # papermill and its kernels: loaded when a notebook runs

    src = NOTEBOOK_DIR / f"{name}.ipynb"
    t = time.time()
    rec = {"name": name, "status": "ok", "error": None}
    executed = None  # the executed notebook's text, once papermill has written any
    try:
        if not src.is_file():
            raise FileNotFoundError(f"no notebook {src}")
        with atomic_path(out / "notebooks" / f"{name}.ipynb") as tmp:
            try:
                pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                                    cwd=str(NOTEBOOK_DIR), progress_bar=False, execution_timeout=timeout)
            finally:
                executed = slim_notebook(tmp.read_text()) if tmp.exists() and tmp.stat().st_size else None
            tmp.write_text(executed)
        _html(out / "notebooks" / f"{name}.ipynb", out / "html" / f"{name}.html")
    except Exception as e:  # noqa: BLE001 - a failing notebook is recorded, the batch goes on
        rec["status"] = "failed"
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500]
        rec["traceback"] = traceback.format_exc()[-4000:]
        if executed:  # keep the executed notebook of a failure for reading; it is complete as far as it ran
            write_text(out / "notebooks" / f"{name}.failed.ipynb", executed)
    rec["wall_s"] = round(time.time() - t, 1)
    return rec


def slim_notebook(text: str) -> str:
    """An executed notebook made fit to commit and read: what a reader needs, nothing of this machine.

    Keeps every cell's results (tables, figures, printed lines); drops progress bars and warnings
    (stderr streams), widget state, per-cell timing metadata and papermill's record of paths and
    environment, and makes the absolute paths of this machine in the outputs (and in the parameters cell
    papermill injects) portable (:func:`scp_core.io.portable`); source cells and markdown stay as written.
    """
    import nbformat  # the notebook tools are loaded for a batch only

    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                continue
            if "data" in o:
                o["data"].pop("application/vnd.jupyter.widget-view+json", None)
                if not o["data"]:
                    continue
            kept.append(o)
        cell.outputs = kept
    pm_meta = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {k: pm_meta[k] for k in ("parameters", "duration") if k in pm_meta}
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):  # the one cell papermill writes from the run
            cell.source = portable(cell.source)
        for o in cell.get("outputs", []):  # the notebook's own source and prose stay as written
            _portable_output(o)
    nb.metadata = _portable_value(nb.metadata)
    return nbformat.writes(nb)


def _portable_value(value):
    """Strings inside nested dicts / lists made portable (:func:`scp_core.io.portable`)."""
    if isinstance(value, str):
        return portable(value)
    if isinstance(value, list):
        return [_portable_value(v) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _portable_value(v) for k, v in value.items()})
    return value


def _portable_output(o) -> None:
    """Paths scrubbed where text can name one (streams, text/* and JSON data, tracebacks), never in
    binary payloads such as ``image/png``, whose base64 holds runs of ``/`` that look like paths."""
    if "text" in o:
        o["text"] = portable(o["text"])
    for key in ("traceback", "evalue"):
        if key in o:
            o[key] = _portable_value(o[key])
    for mime, value in o.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            o["data"][mime] = _portable_value(value)


def _html(nb_path: Path, html_path: Path) -> None:
    import nbformat  # the notebook tools are loaded for a batch only
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
    write_text(html_path, body)


def run_lanes(names: list[str], jobs: int, one, after: dict | None = None) -> None:
    """Run ``one(name)`` for every name in ``jobs`` lanes: each lane takes the first name (in the given order) whose
    ``after`` notebooks in the batch have finished, and waits while none is ready. An exception in one lane stops
    the others from starting new notebooks and is raised once every lane has stopped."""
    after = after or {}
    started, done, errors = set(), set(), []
    cond = threading.Condition()

    def ready(n):
        return all(d in done or d not in names for d in after.get(n, ()))

    def lane():
        while True:
            with cond:
                while True:
                    todo = [n for n in names if n not in started]
                    if not todo or errors:
                        return
                    pick = next((n for n in todo if ready(n)), None)
                    if pick is not None:
                        started.add(pick)
                        break
                    cond.wait()
            try:
                one(pick)
            except BaseException as e:  # noqa: BLE001 -- re-raised below, after the other lanes stop
                errors.append(e)
            finally:
                with cond:
                    done.add(pick)
                    cond.notify_all()

    lanes = [threading.Thread(target=lane, name=f"lane-{i}") for i in range(max(1, min(jobs, len(names))))]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    if errors:
        raise errors[0]


# Kernels run side by side: one thread each, for torch (SCP_THREADS, read by study.load_pipeline) and for numpy /
# scipy's OpenBLAS, which otherwise starts a thread per core in every kernel: two kernels' BLAS threads spinning on
# two cores made each resampled Frechet distance 26x slower (77 ms against 2.9 ms per draw at 300 x 2048 beside a
# busy batch), a quarter of the toy batch's time.
SINGLE_THREADED = {"SCP_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def reproduce(profile: str = "toy", only: list[str] | None = None, smoke: bool = False,
              with_training: bool = False, out: str | Path | None = None, jobs: int = 2,
              eval_splits: list[str] | None = None, quick: bool = False) -> dict:
    """Run the notebooks and write ``index.md``; returns the run record.

    Args:
        smoke / quick: tiny counts (``reports/_smoke/``) or a student's quick run (``reports/_quick/``), not both.
        eval_splits: the evaluation splits of every notebook (default: each notebook's in the study's table).
        jobs: notebooks run at once. With ``jobs > 1`` each kernel uses one thread
            (torch and BLAS: :data:`SINGLE_THREADED`): on a 2-core CPU two single-threaded kernels beat one
            two-threaded kernel for these small models. A notebook starts once those it reads (05 and 06: 03's
            Table 1) and those whose images it shares (:data:`scp_core.notebook_order.SHARED_IMAGES`) have finished.

    Returns:
        The run record (``runs.json``); where a notebook failed, ``failed_report`` names the folder holding the
        batch's own index (``<report>/_failed/<time>``), and the report is as it was.
    """
    if smoke and quick:
        raise ValueError("smoke and quick runs exclude each other (tiny counts, or a student's small ones): choose one")
    names = batch_names(profile, only, with_training)
    out = report_dir(profile, smoke, out, quick)
    order = waits_for(NOTEBOOK_DIR)
    out.mkdir(parents=True, exist_ok=True)
    stage = open_stage(out)
    t0 = time.time()
    records = {}

    def one(name):
        print(f"[scpdiff] running {name} ...", flush=True)
        rec = run_notebook(name, stage.path, notebook_params(profile, name, smoke, stage.path, eval_splits))
        records[name] = rec
        print(f"[scpdiff] {name}: {rec['status']} in {rec['wall_s']} s"
              + (f" ({rec['error']})" if rec["error"] else ""), flush=True)

    # longest first (by the toy batch's wall times, reports/toy/runs.json), so the two lanes end together
    first = sorted(names, key=lambda n: LONGEST.index(n) if n in LONGEST else len(LONGEST))
    with _quick_kernels(quick):
        if jobs > 1 and len(first) > 1:
            os.environ.update(SINGLE_THREADED)  # inherited by the kernels
        run_lanes(first, jobs, one, after=order)
    from .study import git_commit, quick_counts  # the study package loads the models

    finished, wall, commit = time.strftime("%Y-%m-%d %H:%M:%S %Z"), round(time.time() - t0, 1), git_commit()
    run = {"profile": profile, "smoke": smoke, **({"quick": quick_counts()} if quick else {}), "commit": commit,
           "python": platform.python_version(), "finished": finished, "batch_wall_s": wall,
           "profile_params": profile_params(profile), **({"eval_splits": list(eval_splits)} if eval_splits else {}),
           "notebooks": {n: {**r, "commit": commit} for n, r in records.items()}}
    if any(r["status"] != "ok" for r in records.values()):  # the report stays whole; the batch's files go aside
        failed = keep_failed(stage, out)
        write_text(failed / "runs.json", json.dumps(run, indent=2, default=str) + "\n")
        write_index(failed, run)
        return {**run, "failed_report": str(failed)}
    publish(stage, out)
    # merge with the records on disk at write time: earlier (or concurrent) batches keep theirs
    runs_path = out / "runs.json"
    previous = json.loads(runs_path.read_text()) if runs_path.is_file() else {}
    run["notebooks"] = {**previous.get("notebooks", {}), **run["notebooks"]}
    if only and set(names) != set(DEFAULT_BATCH) and "batch_wall_s" in previous:
        # a partial run (--only) keeps the last whole batch's time and says what it re-ran
        run.update({k: previous[k] for k in ("commit", "finished", "batch_wall_s") if k in previous})
        run["partial_runs"] = previous.get("partial_runs", []) + [
            {"notebooks": names, "commit": commit, "finished": finished, "wall_s": wall}]
    write_text(runs_path, json.dumps(run, indent=2, default=str) + "\n")
    write_index(out, run)
    if out.resolve() == (REPO_ROOT / "reports" / profile).resolve():  # the reference report: the pages' blocks too
        rewrite_pages(REPO_ROOT, out, profile)
    return run
