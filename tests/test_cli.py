"""``scpdiff priors`` / ``sample``: a run's outputs are one unit (locked, built aside, renamed into place),
and arguments are checked when parsed, saying why and what is allowed (issue 22)."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from scp_core import cli
from scp_core.io import AtomicFolder, OutputFolderError, atomic_folder
from scp_core.data.profiles import TOY_PIPELINE_DIR as PIPELINE_DIR

ROOT = Path(__file__).resolve().parents[1]
needs_toy = pytest.mark.skipif(not (PIPELINE_DIR / "scp_pipeline.json").is_file(),
                               reason="needs the committed toy pipeline (zoo/toy/pipeline)")
TINY = ["--n", "2", "--steps", "1", "--batch-size", "2", "--device", "cpu"]


def run_main(argv, capsys) -> tuple[int, str]:
    """``scpdiff ARGV`` in this process: (exit status, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse refuses an argument
        code = e.code
    return code, capsys.readouterr().err


def holds_one_run(folder: Path) -> list[str]:
    """The images of ``folder``, asserting that its manifest lists exactly the files present."""
    manifest = json.loads((folder / "samples.json").read_text())
    present = sorted(p.name for p in folder.iterdir())
    assert present == sorted([*manifest["files"], "samples.json"]), (present, manifest["files"])
    assert manifest["files"] == [f"{i:06d}.png" for i in range(manifest["n"])]
    return manifest["files"]


def kill_then_rerun(args, seed: int, latest: float, holds_one) -> None:
    """``scpdiff ARGS`` in a subprocess, SIGKILLed at 0.5 s and at two seeded moments up to ``latest`` s; after each
    kill ``holds_one(delay)`` must hold; then a run to the end must succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "scp_core.cli", *args]
    for delay in (0.5, *np.random.default_rng(seed).uniform(2.0, latest, size=2)):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert holds_one(delay), delay
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def no_debris(folder: Path) -> None:
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


# ----------------------------------------------------------------------------- the atomic folder
def test_atomic_folder_refuses_a_used_folder_unless_overwrite_and_then_replaces_it_whole(tmp_path):
    out = tmp_path / "run"
    with atomic_folder(out, marker="m.json") as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
        (tmp / "m.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="holds an earlier run; pass --overwrite"):
        with atomic_folder(out, marker="m.json"):
            pass
    with atomic_folder(out, overwrite=True, marker="m.json") as tmp:
        (tmp / "m.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["m.json"]  # b and a went with the earlier run
    with pytest.raises(RuntimeError):  # a failed run leaves the earlier one as it was
        with atomic_folder(out, overwrite=True, marker="m.json") as tmp:
            (tmp / "half").write_text("1")
            raise RuntimeError
    assert sorted(p.name for p in out.iterdir()) == ["m.json"]
    no_debris(out)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(OutputFolderError, match="holds no m.json"):  # never removes what is not a run
        with atomic_folder(mine, overwrite=True, marker="m.json"):
            pass
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        AtomicFolder(tmp_path / "afile").open()


def test_atomic_folder_lock_keeps_a_second_writer_out_and_a_dead_ones_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = AtomicFolder(out)
    first.open()
    with pytest.raises(OutputFolderError, match=rf"being written by another run \(pid {os.getpid()}"):
        AtomicFolder(out).open()
    first.close()
    no_debris(out)
    # a killed writer leaves its lock file (with its pid) and its temporary folders behind
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".run.lock").write_text(dead.stdout)
    (tmp_path / ".run.tmp-1-abc").mkdir()
    (tmp_path / ".run.tmp-1-abc" / "000000.png").write_text("half")
    with atomic_folder(out) as tmp:
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.tmp-")] == [tmp.name]
        (tmp / "x").write_text("1")
    assert [p.name for p in out.iterdir()] == ["x"]
    no_debris(out)


def test_a_run_killed_between_the_renames_gets_its_complete_folder_back(tmp_path):
    out = tmp_path / "run"
    old = tmp_path / ".run.old-7-xyz"  # commit moved the earlier run aside, then the process died
    old.mkdir()
    (old / "m.json").write_text("{}")
    (tmp_path / ".run.tmp-7-abc").mkdir()
    folder = AtomicFolder(out, marker="m.json")
    with pytest.raises(OutputFolderError, match="earlier run"):
        folder.open()
    assert [p.name for p in out.iterdir()] == ["m.json"]
    no_debris(out)


# ----------------------------------------------------------------------------- scpdiff sample / priors outputs
@needs_toy
def test_sample_into_a_used_folder_is_refused_and_overwrite_replaces_the_run_whole(tmp_path, capsys):
    out = tmp_path / "samples"
    assert run_main(["sample", *TINY, "--n", "3", "--out", out], capsys)[0] == 0
    assert holds_one_run(out) == ["000000.png", "000001.png", "000002.png"]
    code, err = run_main(["sample", *TINY, "--out", out], capsys)
    assert code == 2 and "holds an earlier run; pass --overwrite" in err
    assert len(holds_one_run(out)) == 3  # untouched
    assert run_main(["sample", *TINY, "--out", out, "--overwrite"], capsys)[0] == 0
    assert holds_one_run(out) == ["000000.png", "000001.png"]  # no image of the larger run is left
    no_debris(out)
    code, err = run_main(["sample", *TINY, "--n", "100000", "--out", tmp_path / "big"], capsys)
    assert code == 2 and "--n 100000 is more than the" in err and "pass --n 500 at most" in err
    assert not (tmp_path / "big").exists()
    no_debris(tmp_path / "big")


@needs_toy
@pytest.mark.slow  # long; its kin runs by default (see the README's testing note)
def test_sigkill_during_sample_over_a_used_folder_always_leaves_one_complete_run(tmp_path, capsys):
    out = tmp_path / "samples"
    assert run_main(["sample", *TINY, "--n", "3", "--seed", "5", "--out", out], capsys)[0] == 0
    # from the start, through loading, sampling, renaming: the earlier run or the new one, never parts of both
    kill_then_rerun(["sample", *TINY, "--out", str(out), "--overwrite"], 22, 7.0,
                    lambda delay: len(holds_one_run(out)) in (2, 3))
    assert holds_one_run(out) == ["000000.png", "000001.png"]
    no_debris(out)


@needs_toy
def test_priors_min_count_0_and_n_0_are_refused_before_any_encoding(tmp_path, capsys, monkeypatch):
    from scp_core import distributed

    monkeypatch.setattr(distributed, "accumulate_shards", lambda *a, **k: pytest.fail("encoded"))
    for args, name in ((["--min-count", "0"], "--min-count"), (["--n", "0"], "--n")):
        code, err = run_main(["priors", *args, "--out", tmp_path / "p"], capsys)
        assert code == 2 and f"argument {name}: 0 is too small; {name} is an integer >= 1" in err
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- arguments checked when parsed
@pytest.mark.parametrize("argv, message", [
    (["--guidance=nan"], "argument --guidance: 'nan' is not allowed; --guidance is a finite number in [1, inf)"),
    (["--guidance=-1"], "--guidance is a finite number in [1, inf)"),
    (["--guidance=0.5"], "--guidance is a finite number in [1, inf)"),
    (["--guidance=inf"], "--guidance is a finite number in [1, inf)"),
    (["--seed", str(2**63)], "argument --seed: '9223372036854775808' is not allowed; a seed is an integer in [0, 2"),
    (["--seed=-1"], "a seed is an integer in [0, 2**63 - 1]"),
    (["--batch-size", "0"], "argument --batch-size: 0 is too small; --batch-size is an integer >= 1"),
    (["--batch-size=-1"], "--batch-size is an integer >= 1"),
    (["--n", "0"], "argument --n: 0 is too small"),
    (["--n=-5"], "argument --n: -5 is too small"),
    (["--n", "2.5"], "argument --n: '2.5' is not an integer"),
    (["--steps", "0"], "argument --steps: 0 is too small"),
    (["--mu", "0"], "argument --mu: '0' is not allowed; --mu is a finite number in (0, 1]"),
])
def test_sample_arguments_are_refused_when_parsed_with_the_reason_and_the_range(argv, message, tmp_path, capsys):
    code, err = run_main(["sample", "--out", tmp_path / "s", *argv], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "s").exists()


def test_out_that_is_a_file_or_in_a_read_only_folder_is_refused_when_parsed(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for cmd in ("sample", "priors"):
        code, err = run_main([cmd, "--out", tmp_path / "afile"], capsys)
        assert code == 2 and "argument --out:" in err and "is a file, not a folder" in err
        code, err = run_main([cmd, "--out", tmp_path / "afile" / "x"], capsys)
        assert code == 2 and "which is a file, not a folder" in err
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # root may write anywhere, so the read-only folder is what os.access says it is
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    code, err = run_main(["sample", "--out", ro / "new" / "samples"], capsys)
    assert code == 2 and "argument --out:" in err and "is in a read-only folder" in err


def test_every_option_of_every_subcommand_has_a_help_that_shows_its_default():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"scpdiff {name} {action.option_strings[0]} has no help"
            assert "default" in formatter._get_help_string(action), f"scpdiff {name} {action.option_strings[0]}"
    text = sub.choices["sample"].format_help()
    assert "finite number >= 1" in text and "--overwrite" in text and "--force" in text
    assert "(default: 10000)" in sub.choices["finetune"].format_help()


# ----------------------------------------------------------------------------- property: exit 0 means a whole run
def _bad(guidance, seed, batch_size, n) -> set[str]:
    bad = set()
    if not (math.isfinite(guidance) and guidance >= 1):
        bad.add("--guidance")
    if not 0 <= seed <= 2**63 - 1:
        bad.add("--seed")
    if batch_size < 1:
        bad.add("--batch-size")
    if n < 1:
        bad.add("--n")
    return bad


@needs_toy
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(guidance=st.one_of(st.sampled_from([1.0, 0.0, -2.0, 0.5, float("nan"), float("inf"), 3.0]),
                          st.floats(allow_nan=True, allow_infinity=True)),
       seed=st.one_of(st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64]), st.integers(-2**70, 2**70)),
       batch_size=st.integers(-2, 3), n=st.integers(-2, 2))
@example(guidance=2.0, seed=2**63 - 2, batch_size=1, n=2)
@example(guidance=1.0, seed=0, batch_size=-1, n=2)
@example(guidance=float("nan"), seed=3, batch_size=2, n=1)
def test_sample_exits_0_with_a_whole_run_or_non_zero_naming_the_argument(capsys, guidance, seed, batch_size, n):
    bad = _bad(guidance, seed, batch_size, n)
    if not bad and n * (2 if guidance > 1 else 1) > 2:
        n = 1  # keep the sampled examples seconds-sized
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        code, err = run_main(["sample", "--steps", "1", "--device", "cpu", "--out", out, f"--guidance={guidance!r}",
                              f"--seed={seed}", f"--batch-size={batch_size}", f"--n={n}"], capsys)
        if code == 0:
            assert not bad
            for name in holds_one_run(out):
                img = np.asarray(Image.open(out / name)).astype(float)
                assert np.isfinite(img).all() and img.std() > 0, name
        else:
            assert bad and any(f"argument {b}:" in err for b in bad), (bad, err[-500:])
            assert not out.exists()


PRIOR_FILES = ["accumulator.safetensors", "categorical.safetensors", "joint.safetensors", "spatial.safetensors"]


def holds_one_priors_run(folder: Path) -> int:
    """The reference-image count of the priors run in ``folder``, asserting that its four files are all there, load,
    can be sampled from (finite, not constant) and come from one run (the same count in every file)."""
    from safetensors import safe_open

    from scp_core.priors import load_prior

    assert sorted(p.name for p in folder.iterdir()) == PRIOR_FILES
    counts = set()
    for kind in ("spatial", "categorical", "joint"):
        prior = load_prior(folder / f"{kind}.safetensors")
        assert torch.isfinite(prior.mean).all() and prior.mean.std() > 0, kind
        counts.add(prior.num_images)
    with safe_open(str(folder / "accumulator.safetensors"), framework="pt") as f:
        counts.add(json.loads(f.metadata()["key"])["n"])
    assert len(counts) == 1, counts  # never the priors of one run beside the accumulator of another
    return counts.pop()


@needs_toy
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(n=st.integers(-2, 3), min_count=st.one_of(st.integers(-1, 3), st.sampled_from([2**40, 2**70])),
       seed=st.one_of(st.sampled_from([0, -1, 2**63 - 1, 2**63]), st.integers(-2**70, 2**70)),
       out=st.sampled_from(["p", "with space/p", "ünï", "a/b/c", "a-file", "a-file/under"]))
@example(n=2, min_count=2**40, seed=7, out="with space/p")
@example(n=0, min_count=1, seed=0, out="p")
@example(n=1, min_count=0, seed=0, out="a-file")
def test_priors_exits_0_with_a_whole_run_or_non_zero_naming_the_argument(capsys, n, min_count, seed, out):
    bad = {name for name, ok in (("--n", n >= 1), ("--min-count", min_count >= 1), ("--seed", 0 <= seed < 2**63),
                                 ("--out", not out.startswith("a-file"))) if not ok}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a-file").write_text("not a folder")
        folder = Path(tmp) / out
        code, err = run_main(["priors", "--device", "cpu", "--out", folder, f"--n={n}", f"--min-count={min_count}",
                              f"--seed={seed}"], capsys)
        if code == 0:
            assert not bad
            assert holds_one_priors_run(folder) == n
        else:
            assert bad and any(f"argument {b}:" in err for b in bad), (bad, err[-500:])
            assert out.startswith("a-file") or not folder.exists()
        assert (Path(tmp) / "a-file").read_text() == "not a folder"


@needs_toy
def test_sigkill_during_priors_over_a_used_folder_always_leaves_one_complete_run(tmp_path, capsys):
    out = tmp_path / "priors"
    assert run_main(["priors", "--device", "cpu", "--n", "3", "--out", out], capsys)[0] == 0
    # from the start, through loading, encoding, writing: the earlier run or the new one, never parts of both
    kill_then_rerun(["priors", "--device", "cpu", "--n", "2", "--out", str(out), "--overwrite"], 23, 6.0,
                    lambda delay: holds_one_priors_run(out) in (2, 3))
    assert holds_one_priors_run(out) == 2
    no_debris(out)
