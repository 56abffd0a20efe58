"""A profile's training frames as a machine without the dataset needs them: one safetensors "pack".

The device machine of a GPU run receives the working tree plus at most 64 MiB of carried files, and
CamVid's 122 MB do not fit. What the diffusion stages read is smaller: the training latents of the
pretrained autoencoder (and of the flipped frames) and the label maps. :func:`write_pack` stores
them (latents in float16: 35 MB for CamVid's 355 frames and their flips; the frames' label maps as uint8,
17 MB, flipped again on reading)
with the frames' names, size and the profile; ``scpdiff train --profile camvid --pack FILE`` then
trains from the pack (:func:`read_pack`) where no image exists, and the evaluation that needs real
frames (autoencoder PSNR, the segmenter on validation frames, the report's samples) runs afterwards
where the data is (``scpdiff train --profile camvid --report-only``).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..data import DATASETS
from ..io import save_safetensors

FORMAT = "scp-training-pack"


def write_pack(path: str | Path, latents: torch.Tensor, labels: np.ndarray, names: list[str], train,
               profile: str, hflip: bool) -> Path:
    """The pack of a training set: raw latents ``[N, C, h, w]`` (stored float16), uint8 label maps ``[N, H, W]``
    (with ``hflip``, the frames' maps followed by their flips, in the order the latents have: only the frames'
    maps are stored, the flips are made again on reading), the frames' ``names`` and ``train``'s label set."""
    if len(latents) != len(labels):
        raise ValueError(f"{len(latents)} latents but {len(labels)} label maps: they must pair up")
    if hflip:
        n = len(names)
        if len(labels) != 2 * n or not np.array_equal(labels[n:], labels[:n, :, ::-1]):
            raise ValueError("with hflip the label maps must be the frames' maps followed by their mirror images")
        labels = labels[:n]
    meta = {"format": FORMAT, "profile": profile, "dataset": train.name, "names": json.dumps(names),
            "size": json.dumps(list(train.size)), "hflip": json.dumps(hflip)}
    return save_safetensors({"latents": latents.half().contiguous(),
                             "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8))},
                            path, metadata=meta)


def read_pack(path: str | Path, profile: str) -> tuple[torch.Tensor, np.ndarray, list[str], SimpleNamespace, bool]:
    """``(latents float32, labels uint8, names, the label set as a dataset stand-in, hflip)`` of a pack.

    The stand-in carries what training reads of a dataset (name, size, palette, classes, ignore id,
    prompt), from the registry class of the pack's dataset. A file that is no pack of ``profile`` is
    refused naming it.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable training pack ({e}); write it again with "
                         f"`scpdiff train --profile {profile} --write-pack {path}`") from e
    if meta.get("format") != FORMAT or meta.get("profile") != profile or set(tensors) != {"latents", "labels"}:
        raise ValueError(f"{path} is not a training pack of profile {profile!r} (format {meta.get('format')!r}, "
                         f"profile {meta.get('profile')!r}, tensors {sorted(tensors)})")
    cls = DATASETS[meta["dataset"]]
    train = SimpleNamespace(name=meta["dataset"], size=tuple(json.loads(meta["size"])), palette=cls.palette,
                            num_classes=cls.num_classes, ignore_index=cls.ignore_index,
                            class_names=list(cls.class_names), prompt=cls.prompt)
    labels, hflip = tensors["labels"].numpy(), json.loads(meta["hflip"])
    if hflip:
        labels = np.concatenate([labels, labels[:, :, ::-1]])
    return tensors["latents"].float(), np.ascontiguousarray(labels), json.loads(meta["names"]), train, hflip
