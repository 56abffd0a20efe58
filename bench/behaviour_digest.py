"""Digests of what the toy stack computes, to show that a refactoring changed no bit.

    python bench/behaviour_digest.py > after.json          # this checkout
    PYTHONPATH=<old checkout> python <old checkout>/bench/behaviour_digest.py > before.json
    diff before.json after.json                             # empty: the same bits

It prints, as JSON, the sha256 of: the reference statistics of 64 toy-city training images (the
accumulator's tensors), the three prior files written from them, and the uint8 images the committed toy
pipeline samples for 4 validation maps from N(0, I) at mu = 1, the joint prior at mu = 0.8, the categorical
prior at mu = 0.5, and the Fig. 3 start from real latents at mu = 0.6 (5 DDIM steps, seed 0). Only the
pipeline's public call, the reference set and the priors' save are used, so the same file runs on trees
before and after a change of layout. CPU, float32, one thread: seconds.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import scp_core  # noqa: E402,F401  (first: the torchvision shim before diffusers)
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from scp_core.data import get_dataset, images_labels, to_float  # noqa: E402
from scp_core.pipeline import load_pipeline  # noqa: E402
from scp_core.priors import NormalPrior  # noqa: E402
from scp_core.reference import reference_accumulator  # noqa: E402


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_sha(t: torch.Tensor) -> str:
    return _sha(t.detach().cpu().contiguous().numpy().tobytes())


def _file_sha(path: Path) -> str:
    """A safetensors file's metadata (keys sorted) and tensors: safetensors writes the header's keys in an order
    that changes from process to process, so the raw bytes of one file differ between two runs of the same code."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.dumps(f.metadata(), sort_keys=True)
        tensors = {k: _tensor_sha(f.get_tensor(k)) for k in sorted(f.keys())}
    return _sha(json.dumps({"metadata": meta, "tensors": tensors}, sort_keys=True).encode())


def digests(n_ref: int = 64, n_maps: int = 4, steps: int = 5) -> dict:
    torch.set_num_threads(1)
    pipe = load_pipeline()  # the committed toy stack, float32 on the CPU
    acc = reference_accumulator(pipe, get_dataset("toy-city", split="train"), n_ref, seed=0)
    out = {"reference statistics": {k: _tensor_sha(v) for k, v in sorted(acc.state_dict().items())
                                    if isinstance(v, torch.Tensor)}}
    priors = acc.priors(5, "class", {"note": "behaviour digest"})
    with tempfile.TemporaryDirectory() as tmp:
        for kind, prior in sorted(priors.items()):
            prior.save(Path(tmp) / f"{kind}.safetensors")
            out[f"prior file {kind}"] = _file_sha(Path(tmp) / f"{kind}.safetensors")
    images, labels = images_labels(get_dataset("toy-city", split="val"), range(n_maps))
    x0 = pipe.encode(to_float(images), generator=torch.Generator().manual_seed(0))
    runs = {"normal mu=1": dict(prior=NormalPrior(latent_channels=pipe.latent_shape[0])),
            "joint mu=0.8": dict(prior=priors["joint"], mu=0.8),
            "categorical mu=0.5": dict(prior=priors["categorical"], mu=0.5),
            "real latents mu=0.6": dict(x0=x0, mu=0.6)}
    for name, kw in runs.items():
        res = pipe(labels, num_inference_steps=steps, seed=0, output_type="np", progress=False, **kw)
        out[f"images {name}"] = _sha(res.images.tobytes())
        out[f"start {name}"] = _tensor_sha(res.start_latents)
    return out


if __name__ == "__main__":
    print(json.dumps(digests(), indent=1, sort_keys=True))
