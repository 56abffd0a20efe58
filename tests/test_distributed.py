"""accelerate with 2 CPU processes: priors, sampling and evaluation identical to one process."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from scp_core.training.toy import PIPELINE_DIR

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free local TCP port for torchrun's rendezvous (the default 29500 may linger in TIME_WAIT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
pytestmark = pytest.mark.skipif(not (PIPELINE_DIR / "scp_pipeline.json").is_file(),
                                reason="needs the committed toy pipeline (zoo/toy/pipeline)")


def scpdiff(args, n=1, tmp=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    if n == 1:
        cmd = [sys.executable, "-m", "scp_core.cli", *args]
    else:
        # accelerate 1.15: `--cpu --num_processes N` starts one process; `--multi_gpu` on a
        # machine without GPUs starts N CPU processes (gloo) through torchrun.
        script = tmp / "scpdiff_entry.py"
        script.write_text("import sys\nfrom scp_core.cli import main\nsys.exit(main(sys.argv[1:]))\n")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", str(script), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_priors_sampling_and_evaluation_do_not_depend_on_the_process_count(tmp_path):
    for n in (1, 2):
        scpdiff(["priors", "--n", "100", "--out", str(tmp_path / f"priors{n}")], n, tmp_path)
    a = load_file(str(tmp_path / "priors1" / "accumulator.safetensors"))
    b = load_file(str(tmp_path / "priors2" / "accumulator.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), "sharded statistics must be bit-identical"

    for n in (1, 2):
        scpdiff(["sample", "--prior", str(tmp_path / "priors1" / "joint.safetensors"), "--n", "5", "--steps", "3",
                 "--batch-size", "2", "--out", str(tmp_path / f"samples{n}")], n, tmp_path)
    files = sorted(p.name for p in (tmp_path / "samples1").glob("*.png"))
    assert files == [f"{i:06d}.png" for i in range(5)]
    assert files == sorted(p.name for p in (tmp_path / "samples2").glob("*.png"))
    for f in files:
        x = np.asarray(Image.open(tmp_path / "samples1" / f)).astype(int)
        y = np.asarray(Image.open(tmp_path / "samples2" / f)).astype(int)
        assert np.abs(x - y).max() <= 1, f  # same seed per index; at most one grey level of float noise

    code = ("import json, sys; from scp_core.distributed import evaluate_distributed; "
            f"r = evaluate_distributed({str(tmp_path / 'samples1')!r}, 'toy-city', None, 'val', 5); "
            "print('RESULT', json.dumps(r)) if r else None")
    (tmp_path / "ev.py").write_text(code)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    one = subprocess.run([sys.executable, str(tmp_path / "ev.py")], capture_output=True, text=True, env=env,
                         timeout=600)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                          "--dynamo_backend", "no", str(tmp_path / "ev.py")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    import json
    r1 = json.loads(next(l for l in one.stdout.splitlines() if l.startswith("RESULT"))[7:])
    r2 = json.loads(next(l for l in two.stdout.splitlines() if l.startswith("RESULT"))[7:])
    assert r2["processes"] == 2 and r1["processes"] == 1
    assert r1["miou"] == r2["miou"] and r1["acc"] == r2["acc"]
    assert abs(r1["fd"] - r2["fd"]) < 1e-9


def test_cli_and_notebook_build_the_same_prior_file(tmp_path):
    """`scpdiff priors` and the notebooks' `study.build_priors` share one convention: same files."""
    import json

    from safetensors import safe_open

    from scp_core import study

    scpdiff(["priors", "--n", "70", "--seed", "3", "--out", str(tmp_path / "cli")])
    s = study.settings("toy", smoke=False, n_ref=70, seed=3, out_dir=str(tmp_path / "nb"))
    study.build_priors(s)
    for kind in ("spatial", "categorical", "joint"):
        a, b = tmp_path / "cli" / f"{kind}.safetensors", s.priors_dir / f"{kind}.safetensors"
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys() and all(np.array_equal(ta[k].numpy(), tb[k].numpy()) for k in ta), kind
        with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
            ma, mb = fa.metadata(), fb.metadata()
        assert (json.loads(ma["provenance"]) == json.loads(mb["provenance"])
                and ma["num_images"] == mb["num_images"] == "70")
