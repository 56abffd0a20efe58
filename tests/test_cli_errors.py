"""``scpdiff``: a value that can be checked is refused before any work starts, and an output that cannot be written
ends the run, each in one line naming the problem and the fix, without a traceback (issue 33). Every test here
stops before a notebook, a model or a dataset is loaded (the heavy functions are replaced where reached)."""
from __future__ import annotations

import argparse
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from scp_core import cli, distributed
from scp_core.cli import args as cli_args
from scp_core.data import dataset_splits
from scp_core.io import atomic_folder
from test_cli import run_main  # scpdiff ARGV in this process: (exit status, stderr)

ROOT = Path(__file__).resolve().parents[1]


def refused_when_parsed(err: str, message: str) -> None:
    """argparse's refusal: the usage, then one line that names the argument and what is allowed."""
    assert "Traceback" not in err, err
    assert message in err.strip().splitlines()[-1], err


def one_line(err: str, message: str) -> None:
    """A refusal made when the command starts: exactly one line on stderr."""
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and message in err, err


@pytest.fixture
def no_notebook(monkeypatch):
    """A notebook started is a failure: every refusal comes before the batch."""
    from scp_core import reproduce

    monkeypatch.setattr(reproduce, "run_notebook", lambda *a, **k: pytest.fail("a notebook was started"))


# ----------------------------------------------------------------------------- scpdiff reproduce
def test_an_unknown_profile_is_refused_when_parsed_naming_the_profiles(tmp_path, capsys, no_notebook):
    code, err = run_main(["reproduce", "--profile", "nope", "--out", tmp_path / "r"], capsys)
    assert code == 2
    refused_when_parsed(err, "scpdiff reproduce: error: argument --profile: invalid choice: 'nope' (choose from "
                             "'toy', 'toy-gv'")
    for command in ("priors", "sample"):
        code, err = run_main([command, "--profile", "nope", "--out", tmp_path / "p"], capsys)
        assert code == 2
        refused_when_parsed(err, f"scpdiff {command}: error: argument --profile: invalid choice: 'nope'")
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("argv, message", [
    (["--eval-splits", "nosuch"], "argument --eval-splits: toy-city has no split 'nosuch'; choose from train, val"),
    (["--eval-splits", "val", "holdout"],
     "argument --eval-splits: toy-city has no split 'holdout'; choose from train, val"),
    (["--profile", "camvid", "--eval-splits", "val", "tset"],
     "argument --eval-splits: camvid has no split 'tset'; choose from train, val, test, holdout"),
])
def test_evaluation_splits_a_dataset_lacks_are_refused_before_any_notebook(argv, message, tmp_path, capsys,
                                                                           no_notebook):
    code, err = run_main(["reproduce", *argv, "--smoke", "--out", tmp_path / "r"], capsys)
    assert code == 2
    one_line(err, f"scpdiff reproduce: error: {message}")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def camvid_on_disk(tmp_path, monkeypatch):
    """What the camvid batch's preflight looks for, and nothing it would read: a CamVid root with the SegNet layout's
    train and val folders (empty), a weights folder with TAEF2's two files (empty)."""
    root = tmp_path / "camvid"
    for d in ("train", "trainannot", "val", "valannot"):
        (root / d).mkdir(parents=True)
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("taef2_encoder.safetensors", "taef2_decoder.safetensors"):
        (weights / name).write_bytes(b"")
    monkeypatch.setenv("SCP_DATA_ROOT", str(root))
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(weights))
    return root


def test_the_splits_each_profile_has_are_taken(camvid_on_disk):
    parser = cli.build_parser()
    for argv in (["--eval-splits", "train", "val"], ["--profile", "camvid", "--eval-splits", "val", "holdout"]):
        cli.study.check_reproduce(parser.parse_args(["reproduce", *argv]))


def _scpdiff_timed(argv, env=None) -> tuple[float, int, str]:
    """``python -m scp_core.cli ARGV`` in a fresh process, as a user types it: (CPU seconds, exit status, stderr).

    CPU seconds (user + system) of the process, not wall time: a test run shares the CPU with whatever else runs,
    which stretches the wall time but not the work done before the refusal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "scp_core.cli", *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.returncode, done.stderr


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def test_a_batch_without_its_dataset_ends_in_seconds_and_writes_nothing(tmp_path):
    """A newcomer's first try: no CamVid where the profile looks. One line naming the folder, where it was looked
    for and the fix, before any notebook starts; a report folder like the committed one stays byte for byte."""
    import shutil

    report = tmp_path / "report"
    shutil.copytree(ROOT / "reports" / "camvid", report)
    before = _tree(report)
    seconds, code, err = _scpdiff_timed(["reproduce", "--profile", "camvid", "--out", report],
                                        env={"SCP_DATA_ROOT": str(tmp_path / "nothing")})
    assert code == 2
    one_line(err, f"scpdiff reproduce: error: the camvid dataset is missing: no folder {tmp_path / 'nothing'} "
                  "(--data-root, else SCP_DATA_ROOT, else data/camvid); put it there or give --data-root DIR; "
                  "data/README.md (CamVid) says what goes there")
    assert _tree(report) == before and not list(tmp_path.glob("nothing*"))
    assert seconds < 20, f"refused after {seconds:.1f} CPU s"  # about 6 on a 2-core CPU, mostly imports
    print(f"missing dataset refused after {seconds:.1f} CPU s")


@pytest.mark.parametrize("argv, env, message", [
    (["--eval-splits", "val", "test"], {},
     "split 'test' of camvid is missing: no folder {root}/test under the data root {root} (--data-root, else "
     "SCP_DATA_ROOT, else data/camvid); data/README.md (CamVid) says what goes there, or choose other --eval-splits"),
    ([], {"SCP_WEIGHTS_DIR": "{tmp}/empty"},
     "weight file taef2_encoder.safetensors (the TAEF2 autoencoder of zoo/camvid/pipeline) is missing: not in the "
     "weights folder {tmp}/empty (SCP_WEIGHTS_DIR, else weights/); put it there or set SCP_WEIGHTS_DIR to the "
     "folder that holds it"),
    (["--segmenter", "{tmp}/empty"], {},
     "the camvid segmenter is missing: no {tmp}/empty/config.json; give --segmenter DIR (or SCP_SEGMENTER)"),
    (["--pipeline", "{tmp}/empty"], {},
     "the camvid pipeline folder {tmp}/empty has no scp_pipeline.json; give --pipeline DIR (or SCP_PIPELINE) "
     "naming a pipeline folder"),
], ids=["split", "weights", "segmenter", "pipeline"])
def test_what_the_batch_reads_is_checked_before_it_starts(argv, env, message, camvid_on_disk, tmp_path, capsys,
                                                          monkeypatch, no_notebook):
    (tmp_path / "empty").mkdir()
    fill = dict(root=camvid_on_disk, tmp=tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**fill))
    code, err = run_main(["reproduce", "--profile", "camvid", *[a.format(**fill) for a in argv], "--out",
                          tmp_path / "r"], capsys)
    assert code == 2
    one_line(err, f"scpdiff reproduce: error: {message.format(**fill)}")
    assert not (tmp_path / "r").exists()


def test_a_profile_whose_stack_is_not_trained_yet_names_the_command_that_trains_it(camvid_on_disk, tmp_path,
                                                                                     capsys, no_notebook):
    if (ROOT / "zoo" / "camvid-sd" / "pipeline").exists():
        pytest.skip("zoo/camvid-sd/pipeline is trained here")
    code, err = run_main(["reproduce", "--profile", "camvid-sd", "--out", tmp_path / "r"], capsys)
    assert code == 2
    one_line(err, "scpdiff reproduce: error: the camvid-sd pipeline is missing: no folder zoo/camvid-sd/pipeline; "
                  "train it with `scpdiff train --profile camvid-sd`, or give --pipeline DIR")


def test_evaluation_splits_are_refused_in_the_seconds_of_the_other_checks(tmp_path, capsys, monkeypatch,
                                                                           no_notebook):
    """Split names come from the dataset's table, never from building it; a fresh process refuses a split it
    lacks in the time it refuses a folder that is not there."""
    from scp_core.data import datasets, toy_city

    for cls in (datasets.CamVid, toy_city.ToyCity):
        monkeypatch.setattr(cls, "__init__", lambda *a, **k: pytest.fail("a dataset was built"))
    for profile in ("toy", "camvid"):
        code, err = run_main(["reproduce", "--profile", profile, "--eval-splits", "nosuch", "--out", tmp_path / "r"],
                             capsys)
        assert code == 2 and "has no split 'nosuch'" in err
    split = _scpdiff_timed(["reproduce", "--eval-splits", "nosuch", "--out", tmp_path / "r"])[0]
    folder = _scpdiff_timed(["reproduce", "--data-root", tmp_path / "none", "--out", tmp_path / "r"])[0]
    print(f"--eval-splits nosuch refused after {split:.1f} CPU s, --data-root (not a folder) after {folder:.1f}")
    assert split < folder + 2, (split, folder)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("jobs, message", [("0", "0 is too small"), ("-3", "-3 is too small"),
                                           ("two", "'two' is not an integer")])
def test_jobs_below_1_is_refused_when_parsed(jobs, message, tmp_path, capsys, no_notebook):
    code, err = run_main(["reproduce", f"--jobs={jobs}", "--out", tmp_path / "r"], capsys)
    assert code == 2
    refused_when_parsed(err, f"argument --jobs: {message}; --jobs is an integer >= 1")
    assert cli.build_parser().parse_args(["reproduce", "--jobs", "1"]).jobs == 1


def test_a_notebook_that_does_not_exist_is_refused_naming_the_ones_that_do(tmp_path, capsys, no_notebook):
    code, err = run_main(["reproduce", "--only", "03_prior_comparison", "nosuch", "--smoke", "--out",
                          tmp_path / "r"], capsys)
    assert code == 2
    one_line(err, "scpdiff reproduce: error: unknown notebook(s) ['nosuch']; choose from ['00_quickstart'")
    assert "'03_prior_comparison'" in err and "'10_prior_transfer'" in err
    assert not (tmp_path / "r").exists()


def test_reproduce_out_naming_a_file_is_refused_in_one_line(tmp_path, capsys, no_notebook):
    (tmp_path / "afile").write_text("x")
    code, err = run_main(["reproduce", "--smoke", "--out", tmp_path / "afile"], capsys)
    assert code == 2
    refused_when_parsed(err, f"argument --out: {tmp_path / 'afile'} is a file, not a folder; choose another --out")
    code, err = run_main(["reproduce", "--smoke", "--out", tmp_path / "afile" / "r"], capsys)
    assert code == 2
    refused_when_parsed(err, "which is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_real_scale_folders_that_are_not_there_are_refused(tmp_path, capsys, no_notebook):
    code, err = run_main(["reproduce", "--profile", "camvid", "--data-root", tmp_path / "none"], capsys)
    assert code == 2
    one_line(err, f"argument --data-root: {tmp_path / 'none'} is not a folder; give the folder itself")
    code, err = run_main(["reproduce", "--profile", "cityscapes", "--out", tmp_path / "r"], capsys)
    assert code == 2
    one_line(err, "profile 'cityscapes' is real scale: give the fine-tuned pipeline folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_folder_as_out_is_refused_in_one_line(tmp_path, capsys, no_notebook):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for argv in (["reproduce", "--smoke"], ["sample"], ["priors"]):
            code, err = run_main([*argv, "--out", ro / "new"], capsys)
            assert code == 2
            refused_when_parsed(err, f"argument --out: {ro / 'new'} is in a read-only folder ({ro}); choose a "
                                     "writable --out")
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def test_a_read_only_folder_as_out_is_refused_as_os_access_says(tmp_path, capsys, monkeypatch, no_notebook):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access  # root may write anywhere: the folder is read-only as os.access says
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    code, err = run_main(["reproduce", "--smoke", "--out", ro], capsys)
    assert code == 2
    refused_when_parsed(err, f"argument --out: {ro} is in a read-only folder ({ro}); choose a writable --out")


# ----------------------------------------------------------------------------- outputs that cannot be written
def _writer_failing(error: OSError, seen: list):
    """A stand-in for ``sample_distributed``: writes its first file into ``out``'s temporary folder, as the real
    one does, then fails with ``error``."""
    def sample_distributed(pipeline, dataset, root, split, n, out, **kw):
        seen.append(out)
        with atomic_folder(out, overwrite=kw.get("overwrite", False), marker="samples.json") as tmp:
            (tmp / "000000.png").write_bytes(b"half")
            raise error
    return sample_distributed


@pytest.mark.parametrize("error, reason, fix", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device",
     "free space on that disk or choose an --out on another one"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system",
     "that file system is mounted read-only; choose an --out on a writable one"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied",
     "choose an --out in a folder you may write to"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "Not a directory",
     "a part of that path is a file, not a folder; choose another --out"),
    (FileExistsError(errno.EEXIST, "File exists"), "File exists", "a file is in the way; move it or choose another"),
])
def test_an_output_that_cannot_be_written_ends_sample_in_one_line_leaving_nothing(error, reason, fix, tmp_path,
                                                                                  capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(distributed, "sample_distributed", _writer_failing(error, seen))
    out = tmp_path / "samples"
    code, err = run_main(["sample", "--n", "1", "--device", "cpu", "--out", out], capsys)
    assert seen == [str(out)], "the stand-in writer was not reached"
    assert code == 1
    one_line(err, f"scpdiff sample: cannot write {out}: {reason}; {fix}")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


def test_the_path_an_error_names_is_the_one_reported(tmp_path, capsys, monkeypatch):
    part = tmp_path / "samples" / "000003.png"
    monkeypatch.setattr(distributed, "sample_distributed",
                        _writer_failing(OSError(errno.ENOSPC, "No space left on device", str(part)), []))
    code, err = run_main(["sample", "--out", tmp_path / "samples"], capsys)
    assert code == 1
    one_line(err, f"scpdiff sample: cannot write {part}: No space left on device; free space")


def test_another_os_error_is_not_hidden(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "sample_distributed", _writer_failing(OSError(errno.EIO, "I/O error"), []))
    with pytest.raises(OSError, match="I/O error"):  # not an output problem the user can fix: a bug to show
        cli.main(["sample", "--out", str(tmp_path / "samples")])


def test_write_error_names_path_reason_and_fix():
    line = cli_args.write_error("priors", OSError(errno.ENOSPC, "No space left on device"), "out/p")
    assert line == ("scpdiff priors: cannot write out/p: No space left on device; free space on that disk or choose "
                    "an --out on another one")
    assert cli_args.write_error("priors", OSError(errno.EIO, "I/O error"), "out/p") is None


# ----------------------------------------------------------------------------- sample / priors splits
def test_a_split_the_dataset_lacks_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "sample_distributed", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(distributed, "build_priors_distributed", lambda *a, **k: pytest.fail("encoded"))
    for command in ("sample", "priors"):
        code, err = run_main([command, "--split", "test", "--out", tmp_path / "o"], capsys)
        assert code == 2
        one_line(err, f"scpdiff {command}: error: argument --split: toy-city has no split 'test'; choose from "
                      "train, val")
    code, err = run_main(["sample", "--dataset", "camvid", "--split", "holdout", "--out", tmp_path / "o"], capsys)
    assert code == 2  # camvid without the camvid profile's hold-out option has none
    one_line(err, "argument --split: camvid has no split 'holdout'; choose from train, val, test")
    assert not (tmp_path / "o").exists()


def test_dataset_splits_reads_each_registered_dataset():
    assert dataset_splits("toy-city") == dataset_splits("toy-city-gv") == ["train", "val"]
    assert dataset_splits("camvid") == ["train", "val", "test", "holdout"]
    assert dataset_splits("cityscapes") == ["train", "val", "test"]
    assert "validation" in dataset_splits("ade20k")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_splits("nope")


# ----------------------------------------------------------------------------- one --device, lazy parsing
def test_device_is_one_option_checked_when_parsed(capsys):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    having = {name: [a for a in p._actions if "--device" in a.option_strings] for name, p in sub.choices.items()}
    assert {n for n, acts in having.items() if acts} == {"train", "finetune", "priors", "sample"}
    assert all(len(acts) == 1 and acts[0].type is cli_args.device for acts in having.values() if acts)
    assert cli.build_parser().parse_args(["train", "--device", "cuda:1"]).device == "cuda:1"
    code, err = run_main(["finetune", "--dataset", "toy-city", "--out", "x", "--device", "gpu"], capsys)
    assert code == 2
    refused_when_parsed(err, "argument --device: 'gpu' is not allowed; --device is auto, cpu, cuda or cuda:N")


def test_building_the_parser_loads_no_study_and_python_m_refuses_in_one_line():
    probe = ("import sys; from scp_core import cli; cli.build_parser().parse_args(['reproduce']); "
             "print(sorted(m for m in ('pandas', 'papermill', 'scp_core.study', 'scp_core.training') "
             "if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "scp_core.cli", "reproduce", "--jobs", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("scpdiff reproduce: error: argument --jobs: 0 is too small; "
                                                    "--jobs is an integer >= 1")


# ----------------------------------------------------------------------------- scpdiff train
@pytest.fixture
def stacks(monkeypatch):
    """Every training function ``scpdiff train`` can reach, replaced by one that records its call."""
    from scp_core.training import camvid, toy

    calls = []

    def recorder(name, result):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            return result
        return record

    for module, name in ((toy, "train_toy_stack"), (toy, "train_toy_gv"), (toy, "train_toy_seed"),
                         (toy, "train_toy_locked"), (camvid, "train_stack")):
        monkeypatch.setattr(module, name, recorder(name, {"trained": name}))
    for name in ("write_training_pack", "rewrite_report"):
        monkeypatch.setattr(camvid, name, recorder(name, Path("written") / name))
    return calls


def test_train_defaults_are_the_entry_points_own():
    from scp_core.training import TRAIN_OPTIONS

    args = cli.build_parser().parse_args(["train"])
    assert {name: getattr(args, name) for name in TRAIN_OPTIONS} == TRAIN_OPTIONS


@pytest.mark.parametrize("argv, message", [
    (["--profile", "toy-gv", "--small"], "--small is an option of toy, camvid, camvid-sd only; profile 'toy-gv' "
                                         "takes --resume, --schedule, --seed, --out"),
    (["--profile", "toy", "--device", "cpu"], "--device cpu is an option of camvid, camvid-sd only; profile 'toy' "
                                              "takes"),
    (["--profile", "toy", "--seed", "3"], "--seed 3 is an option of toy-gv, toy-seed, camvid, camvid-sd only"),
    (["--profile", "camvid", "--stage", "unet"], "--stage unet is an option of toy only"),
    (["--profile", "toy-gv", "--seed", "1", "--schedule", "zero-snr"],
     "--seed trains toy-gv's ControlNet stage on SD's schedule; leave --schedule out"),
    (["--profile", "toy-locked", "--schedule", "zero-snr"],
     "--schedule zero-snr is an experiment of the toy profiles (toy, toy-gv); profile 'toy-locked' takes --resume, "
     "--out"),
])
def test_train_refuses_an_option_the_profile_does_not_take(argv, message, capsys, stacks):
    code, err = run_main(["train", *argv], capsys)
    assert code == 2 and stacks == []
    one_line(err, f"scpdiff train: error: {message}")


def test_train_refuses_an_unknown_profile_and_two_modes_when_parsed(capsys, stacks):
    code, err = run_main(["train", "--profile", "sd21"], capsys)
    assert code == 2
    refused_when_parsed(err, "argument --profile: invalid choice: 'sd21' (choose from 'toy', 'toy-gv', 'toy-locked', "
                             "'toy-seed', 'camvid', 'camvid-sd')")
    code, err = run_main(["train", "--profile", "camvid", "--write-pack", "p", "--report-only"], capsys)
    assert code == 2
    refused_when_parsed(err, "argument --report-only: not allowed with argument --write-pack")
    assert stacks == []


def test_train_picks_each_profiles_trainer_with_its_defaults(capsys, stacks):
    from scp_core.training.recipes import TOY_SMALL, recipe_for
    from scp_core.training.toy import GV_ZERO_SNR_PIPELINE_DIR, PIPELINE_DIR, RUNS, runs_dir

    small = ROOT / "runs" / "camvid-small"
    for argv in (["--profile", "toy"], ["--small", "--schedule", "zero-snr", "--stage", "unet"],
                 ["--profile", "toy-gv", "--schedule", "zero-snr"], ["--profile", "toy-seed", "--seed", "2"],
                 ["--profile", "toy-locked", "--out", "elsewhere", "--resume", "latest"],
                 ["--profile", "camvid", "--small"], ["--profile", "camvid", "--device", "cuda", "--write-pack", "f"],
                 ["--profile", "camvid", "--report-only"], ["--profile", "toy-gv", "--seed", "1"]):
        assert cli.main(["train", *argv]) == 0
    assert len(stacks) == 9
    assert stacks[0] == ("train_toy_stack", (None,), dict(out=PIPELINE_DIR, resume=None,
                                                          stages=("vae", "unet", "controlnet"), work=RUNS,
                                                          report=True, schedule="sd", vae_work=RUNS))
    work = runs_dir("toy-small", "zero-snr")
    assert stacks[1] == ("train_toy_stack", (TOY_SMALL,), dict(out=work / "pipeline", resume=None, stages=("unet",),
                                                               work=work, report=False, schedule="zero-snr",
                                                               vae_work=runs_dir("toy-small")))
    assert stacks[2] == ("train_toy_gv", (), dict(out=GV_ZERO_SNR_PIPELINE_DIR, resume=None, schedule="zero-snr",
                                                  base_work=runs_dir("toy", "zero-snr"), vae_work=RUNS,
                                                  work=runs_dir("toy-gv", "zero-snr")))
    assert stacks[3] == ("train_toy_seed", (2,), dict(resume=None))
    assert stacks[4] == ("train_toy_locked", (), dict(out="elsewhere", resume="latest"))
    assert stacks[5] == ("train_stack", ("camvid",), dict(out=small / "zoo", work=small, data_root=None, resume=None,
                                                          recipe=recipe_for("camvid", small=True), limit=8, device=None,
                                                          pack=None))
    assert stacks[6] == ("write_training_pack", ("f", "camvid"), dict(data_root=None, work=None, limit=None,
                                                                      recipe=recipe_for("camvid", gpu=True)))
    assert stacks[7][0] == "rewrite_report" and stacks[7][2]["recipe"] == recipe_for("camvid")
    assert stacks[8] == ("train_toy_seed", (1,), dict(resume=None, stack="toy-gv"))
    out = capsys.readouterr().out
    assert '"trained": "train_toy_gv"' in out and str(Path("written") / "write_training_pack") in out
