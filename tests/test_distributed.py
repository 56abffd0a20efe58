"""accelerate with 2 CPU processes: priors, sampling and evaluation identical to one process."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from scp_core.data.profiles import TOY_PIPELINE_DIR as PIPELINE_DIR

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free local TCP port for torchrun's rendezvous (the default 29500 may linger in TIME_WAIT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
pytestmark = pytest.mark.skipif(not (PIPELINE_DIR / "scp_pipeline.json").is_file(),
                                reason="needs the committed toy pipeline (zoo/toy/pipeline)")


def scpdiff(args):
    """``python -m scp_core.cli ARGS`` in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-m", "scp_core.cli", *args], capture_output=True, text=True, env=env,
                         timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


# priors -> sample -> evaluate in one Python start per process count (each a fresh start per command
# before: six starts, three of them accelerate launches); the commands run as `scpdiff` would run them.
SEQUENCE = """import json, sys
from pathlib import Path
from scp_core.cli import main
from scp_core.distributed import evaluate_distributed
n, tmp = sys.argv[1], Path(sys.argv[2])
assert main(["priors", "--n", "100", "--out", str(tmp / f"priors{n}")]) == 0, "priors"
assert main(["sample", "--prior", str(tmp / "priors1" / "joint.safetensors"), "--n", "5", "--steps", "3",
             "--batch-size", "2", "--out", str(tmp / f"samples{n}")]) == 0, "sample"
r = evaluate_distributed(str(tmp / "samples1"), "toy-city", None, "val", 5)
print("RESULT", json.dumps(r)) if r else None
"""


def test_priors_sampling_and_evaluation_do_not_depend_on_the_process_count(tmp_path):
    """One process, then two (accelerate, gloo): the prior statistics bit-identical, the samples within one grey
    level, the evaluation of the one-process samples the same. Both runs sample with the one-process joint
    prior and evaluate the one-process samples, so that each step is compared on the same input."""
    import json

    (tmp_path / "sequence.py").write_text(SEQUENCE)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    one = subprocess.run([sys.executable, str(tmp_path / "sequence.py"), "1", str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=900, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                          "--dynamo_backend", "no", str(tmp_path / "sequence.py"), "2", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]

    a = load_file(str(tmp_path / "priors1" / "accumulator.safetensors"))
    b = load_file(str(tmp_path / "priors2" / "accumulator.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), "sharded statistics must be bit-identical"

    files = sorted(p.name for p in (tmp_path / "samples1").glob("*.png"))
    assert files == [f"{i:06d}.png" for i in range(5)]
    assert files == sorted(p.name for p in (tmp_path / "samples2").glob("*.png"))
    for f in files:
        x = np.asarray(Image.open(tmp_path / "samples1" / f)).astype(int)
        y = np.asarray(Image.open(tmp_path / "samples2" / f)).astype(int)
        assert np.abs(x - y).max() <= 1, f  # same seed per index; at most one grey level of float noise

    r1 = json.loads(next(l for l in one.stdout.splitlines() if l.startswith("RESULT"))[7:])
    r2s = [l for l in two.stdout.splitlines() if l.startswith("RESULT")]
    assert len(r2s) == 1, "only the main process reports"
    r2 = json.loads(r2s[0][7:])
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
