"""The README's "Running at real scale" sequence, end to end on miniature real-scale inputs (CPU).

A Stable Diffusion 2.1 base folder in the hub layout (tiny widths, SD 2.1's structure), a
Cityscapes folder in the official layout and a SegFormer folder are written to disk by
``tests/minisd.py``; then ``scpdiff finetune --base``, ``priors``, ``sample`` and
``reproduce --profile cityscapes --pipeline --data-root --segmenter --smoke`` run as the README
says, as one process and under ``accelerate launch --multi_gpu --num_processes 2`` (two CPU
processes with gloo). Images are 64 x 128 (``finetune --size``) so that the sequence takes
seconds; the real size only changes the tensors' extent.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from minisd import make_mini_cityscapes, make_mini_sd, make_mini_segmenter
from scp_core.pipeline import SCPDiffPipeline
from scp_core.priors import load_prior

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 128)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("realscale")
    return {"base": base, "sd": make_mini_sd(base / "models" / "sd21-base"),
            "cs": make_mini_cityscapes(base / "data" / "cityscapes"),
            "seg": make_mini_segmenter(base / "models" / "seg")}


def scpdiff_here(args, cwd, monkeypatch):
    """``scpdiff ARGS`` typed in ``cwd``, run in this process (saves a Python start per command)."""
    from scp_core.cli import main

    with monkeypatch.context() as m:
        m.chdir(cwd)
        m.setenv("SCP_DEVICE", "cpu")
        assert main(list(args)) == 0, args


def scpdiff(args, cwd, n=1, timeout=600):
    """``python -m scp_core.cli ARGS`` (n = 1) or ``accelerate launch --multi_gpu --num_processes n`` (CPU, gloo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    if n == 1:
        cmd = [sys.executable, "-m", "scp_core.cli", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "scp_core.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert out.returncode == 0, (args[0], out.stdout[-2000:], out.stderr[-4000:])
    return out


FINETUNE = ["finetune", "--base", "models/sd21-base", "--dataset", "cityscapes", "--root", "data/cityscapes",
            "--size", *map(str, SIZE), "--steps", "2", "--batch-size", "2", "--lr", "1e-5", "--checkpoint-every", "1"]
PRIORS = ["priors", "--pipeline", "runs/cityscapes/pipeline", "--dataset", "cityscapes", "--root", "data/cityscapes",
          "--n", "4"]
SAMPLE = ["sample", "--pipeline", "runs/cityscapes/pipeline", "--dataset", "cityscapes", "--root", "data/cityscapes",
          "--split", "val", "--n", "2", "--prior", "runs/cityscapes/priors/joint.safetensors", "--mu", "0.8",
          "--steps", "3", "--guidance", "4.0", "--batch-size", "2"]


def _check_pipeline(folder: Path, sd: Path) -> SCPDiffPipeline:
    pipe = SCPDiffPipeline.from_pretrained(folder, device="cpu", dtype=torch.float32)
    assert pipe.image_size == SIZE and pipe.num_classes == 19 and pipe.ignore_index == 255
    assert pipe.info["dataset"] == "cityscapes" and pipe.info["prompt"] == "City road scenes"
    assert pipe.latent_shape == (4, SIZE[0] // 8, SIZE[1] // 8)  # SD's 8x VAE
    # trained: ControlNet's zero convolutions have left zero; the UNet decoder moved, its encoder did not
    zero_convs = [p for n, p in pipe.controlnet.named_parameters() if n.startswith("controlnet_down_blocks")]
    assert all(p.abs().sum() > 0 for p in zero_convs)
    base = load_file(str(sd / "unet" / "diffusion_pytorch_model.safetensors"))
    now = pipe.unet.state_dict()
    assert torch.equal(now["down_blocks.0.resnets.0.conv1.weight"], base["down_blocks.0.resnets.0.conv1.weight"])
    assert not torch.equal(now["up_blocks.3.resnets.0.conv1.weight"], base["up_blocks.3.resnets.0.conv1.weight"])
    return pipe


def _images(folder: Path) -> dict:
    return {p.name: np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))}


def test_load_sd_components_reads_the_hub_layout(world):
    from scp_core.models import load_sd_components

    c = load_sd_components(str(world["sd"]), prompt="City road scenes", device="cpu", dtype=torch.float32)
    assert c["prompt_embeds"].shape == (1, 77, 32) and c["negative_prompt_embeds"].shape == (1, 77, 32)
    assert not torch.allclose(c["prompt_embeds"], c["negative_prompt_embeds"])
    # the ControlNet's control encoder brings a 64 x 128 map to the 8 x 16 latent grid (three stride-2 steps)
    control = torch.rand(1, 3, *SIZE)
    down, mid = c["controlnet"](torch.randn(1, 4, 8, 16), 10, encoder_hidden_states=c["prompt_embeds"],
                                controlnet_cond=control, return_dict=False)
    assert down[0].shape[-2:] == (8, 16)
    # SD 2.1 (768, v-prediction) instead of the base model is refused, saying so
    v = world["base"] / "models" / "sd21-v"
    (v / "scheduler").mkdir(parents=True)
    cfg = json.loads((world["sd"] / "scheduler" / "scheduler_config.json").read_text())
    (v / "scheduler" / "scheduler_config.json").write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="predicts 'v_prediction'"):
        load_sd_components(str(v), device="cpu")


def test_readme_real_scale_sequence_as_one_process(world, monkeypatch):
    """finetune -> priors -> sample -> reproduce, with relative paths typed in the working folder."""
    base = world["base"]
    scpdiff_here([*FINETUNE, "--out", "runs/cityscapes/pipeline", "--work", "runs/cityscapes/finetune"], base,
                 monkeypatch)
    pipe = _check_pipeline(base / "runs/cityscapes/pipeline", world["sd"])
    log = (base / "runs/cityscapes/finetune/loss.csv").read_text().splitlines()
    assert log[0] == "step,loss" and len(log) == 3

    scpdiff_here([*PRIORS, "--out", "runs/cityscapes/priors"], base, monkeypatch)
    joint = load_prior(base / "runs/cityscapes/priors/joint.safetensors")
    assert joint.num_classes == 20 and tuple(joint.latent_shape) == pipe.latent_shape and joint.num_images == 4
    assert joint.count[19].sum() > 0, "the ignore id (255) is a class of its own"

    scpdiff_here([*SAMPLE, "--out", "runs/cityscapes/joint"], base, monkeypatch)
    imgs = _images(base / "runs/cityscapes/joint")
    assert list(imgs) == ["000000.png", "000001.png"]
    assert all(a.shape == (*SIZE, 3) and a.std() > 0 for a in imgs.values())
    meta = json.loads((base / "runs/cityscapes/joint/samples.json").read_text())
    assert meta["guidance"] == 4.0 and meta["processes"] == 1

    # the notebooks that need neither FID's Inception weights nor LPIPS's (absent offline)
    scpdiff(["reproduce", "--profile", "cityscapes", "--pipeline", "runs/cityscapes/pipeline", "--data-root",
             "data/cityscapes", "--segmenter", "models/seg", "--smoke", "--only", "00_quickstart",
             "--out", "reports/cityscapes", "--jobs", "1"], base)
    report = base / "reports/cityscapes"
    runs = json.loads((report / "runs.json").read_text())
    assert {k: v["status"] for k, v in runs["notebooks"].items()} == {"00_quickstart": "ok"}
    m = json.loads((report / "metrics/00_quickstart.json").read_text())
    assert m["settings"]["profile"] == "cityscapes" and m["settings"]["guidance"] == 4.0
    assert [r["prior"] for r in m["samples"]] == ["normal", "spatial", "categorical", "joint"]
    assert (report / "figures/00_quickstart.png").is_file() and (report / "index.md").is_file()


@pytest.mark.slow
def test_readme_real_scale_notebooks_beyond_the_quickstart(world):
    """02_noise_priors and 05_diversity at real scale (slow: a notebook kernel each)."""
    base = world["base"]
    _one_process_pipeline(base)
    scpdiff(["reproduce", "--profile", "cityscapes", "--pipeline", "runs/cityscapes/pipeline", "--data-root",
             "data/cityscapes", "--segmenter", "models/seg", "--smoke", "--only", "02_noise_priors", "05_diversity",
             "--out", "reports/cityscapes-more", "--jobs", "2"], base)
    runs = json.loads((base / "reports/cityscapes-more/runs.json").read_text())
    assert {k: v["status"] for k, v in runs["notebooks"].items()} == {"02_noise_priors": "ok", "05_diversity": "ok"}
    m = json.loads((base / "reports/cityscapes-more/metrics/02_noise_priors.json").read_text())
    assert len(m["classes"]) == 20  # 19 train ids and the ignore class


def _one_process_pipeline(base: Path) -> Path:
    one = base / "runs/cityscapes/pipeline"
    if not (one / "scp_pipeline.json").is_file():  # the one-process test did not run first
        scpdiff([*FINETUNE, "--out", "runs/cityscapes/pipeline", "--work", "runs/cityscapes/finetune"], base)
    return one


@pytest.mark.slow  # long; its kin runs by default (see the README's testing note)
def test_readme_finetune_under_accelerate_with_two_processes(world):
    """``accelerate launch --multi_gpu --num_processes 2 -m scp_core.cli finetune --base ...``: every global
    batch is split across the two processes (DDP over gloo), checkpoints and the pipeline are written once."""
    base = world["base"]
    out = scpdiff([*FINETUNE, "--out", "runs/two/pipeline", "--work", "runs/two/finetune"], base, n=2)
    _check_pipeline(base / "runs/two/pipeline", world["sd"])
    assert sorted(p.name for p in (base / "runs/two/finetune").glob("checkpoint-*")) == ["checkpoint-1"]
    assert out.stdout.count('"steps": 2') == 2, out.stdout[-1000:]  # both ranks finished
    assert not list((base / "runs/two").glob(".*")), "no temporary folder left"


@pytest.mark.slow
def test_readme_priors_and_sample_under_accelerate_with_two_processes(world):
    """priors and sample under two processes equal one process's on the same pipeline: bit-identical
    statistics, the same image per index (seed ``seed + i``). Slow: the toy version runs by default
    (tests/test_distributed.py); this one adds the Cityscapes loader and the SD-layout models."""
    base = world["base"]
    _one_process_pipeline(base)
    for n in (1, 2):
        if n == 1 and (base / "runs/cityscapes/priors/accumulator.safetensors").is_file():
            continue
        scpdiff([*PRIORS, "--out", "runs/cityscapes/priors" if n == 1 else "runs/two/priors"], base, n=n)
    a = load_file(str(base / "runs/cityscapes/priors/accumulator.safetensors"))
    b = load_file(str(base / "runs/two/priors/accumulator.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "sharded statistics are bit-identical"

    for n in (1, 2):
        if n == 1 and (base / "runs/cityscapes/joint/000001.png").is_file():
            continue
        scpdiff([*SAMPLE, "--out", "runs/cityscapes/joint" if n == 1 else "runs/two/joint"], base, n=n)
    x, y = _images(base / "runs/cityscapes/joint"), _images(base / "runs/two/joint")
    assert list(x) == list(y) == ["000000.png", "000001.png"]
    assert all(np.abs(x[k] - y[k]).max() <= 1 for k in x)  # same seed per index; one grey level of float noise
    assert json.loads((base / "runs/two/joint/samples.json").read_text())["processes"] == 2
