"""The ``scpdiff`` commands that bring models made elsewhere in, as pipeline folders (and prior files) that
``priors`` and ``sample`` then use: ``compose`` (any diffusers ControlNet on any Stable Diffusion base,
training-free) and ``import-release`` (the authors' released checkpoint and statistics). Each writes its
``--out`` as a whole, or nothing."""
from __future__ import annotations

import json

from .args import int_at_least, out_folder


def _cmd_import_release(a) -> int:
    from ..release import import_release  # diffusers and transformers: loaded for this command only

    config = None
    if a.model_config:
        with open(a.model_config, encoding="utf-8") as f:
            config = json.load(f)
    out = import_release(a.out, a.dataset, checkpoint=a.checkpoint, tokenizer=a.tokenizer, stat_dir=a.stat_dir,
                         stat_name=a.stat_name, convention=a.convention, fallback=a.fallback,
                         diffusion_steps=a.diffusion_steps, image_size=a.size, model_config=config,
                         overwrite=a.overwrite)
    print(f"[scpdiff] imported into {out}")
    return 0


def _cmd_compose(a) -> int:
    from ..compose import compose_pipeline  # diffusers and transformers: loaded for this command only
    from ..io import atomic_folder

    with atomic_folder(a.out, overwrite=a.overwrite, marker="scp_pipeline.json") as tmp:  # a used --out: refused first
        pipe = compose_pipeline(a.base, a.controlnet, a.dataset, control=a.control, prompt=a.prompt,
                                negative_prompt=a.negative_prompt, image_size=a.size)
        pipe.save_pretrained(tmp / "pipeline")
        for part in (tmp / "pipeline").iterdir():
            part.rename(tmp / part.name)
        (tmp / "pipeline").rmdir()
    unmapped = pipe.info["control"]["unmapped_classes"]
    print(f"[scpdiff] composed {a.controlnet} on {a.base} into {a.out} (control: {a.control}"
          + (f"; drawn black, no ADE20K counterpart: {', '.join(unmapped)}" if unmapped else "") + ")")
    return 0


def add_compose(sub) -> None:
    s = sub.add_parser("compose", help="a pipeline folder from any Stable Diffusion base folder and any diffusers "
                       "ControlNet folder, training-free (then `scpdiff priors` and `scpdiff sample` with it)")
    s.add_argument("--base", required=True, help="Stable Diffusion base folder, hub layout (no default)")
    s.add_argument("--controlnet", required=True, help="diffusers ControlNetModel folder (no default)")
    s.add_argument("--dataset", required=True, help="the label set of your maps: cityscapes, ade20k, coco-stuff or "
                   "camvid (no default)")
    s.add_argument("--control", default="dataset", choices=["dataset", "ade20k"],
                   help="the colours of the control map: the dataset's own palette (this project's encoding), or "
                        "ADE20K's palette for each class's ADE20K counterpart, as ControlNet's segmentation models "
                        "were trained with")
    s.add_argument("--prompt", default=None, help="the fixed prompt (default: the dataset's)")
    s.add_argument("--negative-prompt", default="", help="the CFG null prompt (default: empty)")
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="image size (default: the dataset's paper size)")
    s.add_argument("--out", required=True, type=out_folder, help="the pipeline folder to write (no default)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier pipeline in --out (default: refuse)")
    s.set_defaults(fn=_cmd_compose)


def add_import_release(sub) -> None:
    s = sub.add_parser("import-release", help="convert the authors' released checkpoint (ControlNet repository "
                       "format) and / or statistics (*_mean_std.npy) into a pipeline folder and prior files")
    s.add_argument("--dataset", required=True, choices=["cityscapes", "ade20k", "coco-stuff"],
                   help="the release's dataset: label set, palette, image size, label values (no default)")
    s.add_argument("--checkpoint", help="a .ckpt (read with weights_only=True) or .safetensors (default: none)")
    s.add_argument("--tokenizer", help="SD 2.1 base's tokenizer/ folder, to encode the prompts (default: none; "
                   "needed with --checkpoint)")
    s.add_argument("--stat-dir", help="folder of the statistics files (default: none)")
    s.add_argument("--stat-name", help="their name: <name>_spatial_mean_std.npy, ... (default: none)")
    s.add_argument("--convention", default="authors", choices=["authors", "ours"],
                   help="whose prompts the pipeline encodes and whose fallback the joint prior takes")
    s.add_argument("--fallback", choices=["spatial", "class"],
                   help="joint cells seen 0 times take these statistics (default: the convention's)")
    s.add_argument("--diffusion-steps", type=int_at_least(0, "--diffusion-steps"), default=799,
                   help="the authors' step index, recorded as this project's mu")
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: the dataset's)")
    s.add_argument("--model-config", help="JSON {ldm: cldm yaml as a dict, text_encoder: CLIPTextConfig} "
                   "(default: SD 2.1 base + ControlNet, cldm_v21.yaml)")
    s.add_argument("--out", required=True, type=out_folder,
                   help="output folder (no default), written as a whole; nothing is written on an error")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier import in --out (default: refuse)")
    s.set_defaults(fn=_cmd_import_release)
