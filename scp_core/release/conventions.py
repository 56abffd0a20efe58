"""The authors' sampling conventions (SCP-Diff-Toolkit's ``noise_prior_inference.py``) beside this project's.

Their script, read line by line:

* prompt ``PROMPT[dataset] + ", " + "best quality, extremely detailed"`` with ``PROMPT`` = "Realistic
  city road scenes" (Cityscapes), "diverse images depicting various scenes" (ADE20K), "Realistic image"
  (COCO-Stuff): *not* the prompts their ControlNets were trained with ("City road scenes." and so on);
  negative prompt ``"longbody, lowres, bad anatomy, ..."``; CFG scale 4.0 for Cityscapes, 7.5 for ADE20K
  and COCO-Stuff (their README; ``--scale`` defaults to 7.5); DDIM with 20 steps, eta 0, control scale 1.
* ``--diffusion_steps d`` (799 in their script): the prior draw is noised to timestep ``d`` with
  ``q_sample``, then ldm's DDIM runs ``ddim_timesteps[:subset_end]`` with ``subset_end = min(i + 2, L) - 1``,
  ``i`` the first index whose timestep is ``>= d`` (``L = 20`` timesteps 1, 51, ..., 951). For ``d = 799``:
  17 steps from t = 801 (:func:`authors_steps`): the first step is the smallest DDIM timestep ``>= d``,
  except that at most ``L - 1 = 19`` steps run, so for ``d`` in 902..951 the first step (t = 901) lies
  *below* the noise level of the start. ``d = 999`` (their normal prior) also gives 19 steps from
  t = 901 from a pure ``N(0, I)`` start: their "normal" baseline skips the first step.
* prior ``spatial-class-joint``: the joint prior, a cell seen 0 times takes the *spatial* statistics at
  its position (``class-spatial-joint`` takes the class statistics instead).

This project's own conventions: the training prompt of the dataset, an empty negative prompt, the
study's CFG scale, ``mu = 0.8`` (16 steps from t = 751, the draw noised to exactly t = 751), joint
cells seen fewer than 5 times fall back to the class prior. :func:`conventions` returns either set as
one :class:`SamplingConventions`; :meth:`SamplingConventions.pipeline_kwargs` are the keywords of a
:class:`~scp_core.pipeline.SCPDiffPipeline` call.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data import DATASETS
from ..priors import MIN_COUNT, SpatialPrior
from ..sampling import DEFAULT_MU

__all__ = ["AUTHORS_PROMPTS", "AUTHORS_A_PROMPT", "AUTHORS_N_PROMPT", "AUTHORS_GUIDANCE", "AUTHORS_DIFFUSION_STEPS",
           "SamplingConventions", "authors_steps", "authors_mu", "authors_normal_prior", "authors_id_map",
           "authors_palette", "conventions", "CONVENTIONS", "AUTHORS_NORMAL", "recorded_conventions",
           "sampling_choices"]

AUTHORS_NORMAL = "authors-normal"  # `scpdiff sample --prior authors-normal`: their N(0, I) baseline (19 steps from 901)

AUTHORS_PROMPTS = {"cityscapes": "Realistic city road scenes", "ade20k": "diverse images depicting various scenes",
                   "coco-stuff": "Realistic image"}
AUTHORS_A_PROMPT = "best quality, extremely detailed"
AUTHORS_N_PROMPT = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
                    "worst quality, low quality")
AUTHORS_GUIDANCE = {"cityscapes": 4.0, "ade20k": 7.5, "coco-stuff": 7.5}
OUR_GUIDANCE = {"cityscapes": 4.0, "ade20k": 7.5, "coco-stuff": 7.5}  # the study table; COCO-Stuff (no profile): 7.5
AUTHORS_DIFFUSION_STEPS = 799
AUTHORS_DDIM_STEPS = 20
CONVENTIONS = ("authors", "ours")


@dataclass(frozen=True)
class SamplingConventions:
    """One named set of sampling choices: prompts, CFG, steps, mu and the joint prior's fallback."""

    name: str
    prompt: str
    negative_prompt: str
    guidance_scale: float
    num_inference_steps: int
    mu: float
    fallback: str
    min_count: int
    diffusion_steps: int | None = None  # the authors' step index, where it applies

    def pipeline_kwargs(self) -> dict:
        """Keywords of an ``SCPDiffPipeline`` call (the prompts are fixed when the pipeline is built)."""
        return {"mu": self.mu, "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale}

    def as_dict(self) -> dict:
        return asdict(self)


def _ldm_ddim_timesteps(num_inference_steps: int) -> list[int]:
    """ldm's uniform DDIM timesteps (``make_ddim_timesteps``): ``range(0, 1000, 1000 // N) + 1``."""
    c = 1000 // int(num_inference_steps)
    return [t + 1 for t in range(0, 1000, c)]


def authors_steps(diffusion_steps: int, num_inference_steps: int = AUTHORS_DDIM_STEPS) -> tuple[int, int]:
    """``(steps run, first timestep)`` of the authors' rule for ``--diffusion_steps`` (see the module text).

    Raises ``ValueError`` for a step index their script cannot run (above the largest DDIM timestep
    and not 999, where ``torch.where(...)[0][0]`` fails).
    """
    d = int(diffusion_steps)
    ts = _ldm_ddim_timesteps(num_inference_steps)
    L = len(ts)
    if d == 999:
        sample_index = L
    else:
        above = [i for i, t in enumerate(ts) if t >= d]
        if d < 0 or not above:
            raise ValueError(f"diffusion_steps={d}: the authors' script runs 0..{ts[-1]} or 999 "
                             f"(with {num_inference_steps} DDIM steps)")
        sample_index = above[0] + 2
    n = int(min(sample_index / L, 1) * L) - 1  # ldm DDIMSampler.ddim_sampling's subset_end
    return n, ts[n - 1]


def authors_mu(diffusion_steps: int = AUTHORS_DIFFUSION_STEPS, num_inference_steps: int = AUTHORS_DDIM_STEPS) -> float:
    """The ``mu`` that runs, under this project's rule ``n = int(N * mu)``, as many steps as the authors' rule.

    The steps are then the same timesteps (diffusers' "leading" DDIM timesteps with ``steps_offset = 1``
    equal ldm's ``range(0, 1000, 1000 // N) + 1`` when N divides 1000); the one difference left is the
    noise level of the start: here the draw is noised to the first step that runs, there to ``d``.
    """
    n, _ = authors_steps(diffusion_steps, num_inference_steps)
    mu = n / num_inference_steps
    while int(num_inference_steps * mu) < n:  # a float product just below n would truncate to n - 1
        mu = math.nextafter(mu, 2.0)
    return mu


def authors_normal_prior(latent_shape) -> SpatialPrior:
    """The authors' "normal" baseline as a prior this project runs below mu = 1: ``N(0, I)`` noised to any
    step is ``N(0, I)`` again, so a spatial prior of zeros and ones at ``authors_mu(999)`` (19 of 20 steps)
    starts exactly where theirs does (this project's :class:`~scp_core.priors.NormalPrior` runs at mu = 1 only)."""
    C, H, W = (int(s) for s in latent_shape)
    return SpatialPrior(mean=torch.zeros(C, H, W), std=torch.ones(C, H, W), latent_shape=(C, H, W),
                        provenance={"source": "the authors' normal prior (noise_prior_inference.py, "
                                              "--prior_type normal, --diffusion_steps 999)"})


def authors_id_map(dataset: str) -> dict[int, int]:
    """The authors' label values -> this project's dataset ids (the ignore id where they ignore).

    Their Cityscapes loader reads ``*_gtFine_labelTrainIds.png`` (train ids 0..18, 255 ignored), which are
    this project's ids already; ADE20K (0 = other, 1..150) and COCO-Stuff (0..181, 255) read the raw ids,
    which this project's dataset maps with its ``id_map``.
    """
    cls = DATASETS.get(dataset)
    if dataset not in AUTHORS_PROMPTS or cls is None:
        raise ValueError(f"the authors' release covers {sorted(AUTHORS_PROMPTS)}, not {dataset!r}")
    if dataset == "cityscapes":
        return {**{i: i for i in range(cls.num_classes)}, cls.ignore_index: cls.ignore_index}
    return dict(cls.id_map)


def authors_palette(dataset: str) -> np.ndarray:
    """``uint8 [K, 3]``: the colours the authors' ControlNet saw for this project's classes ``0..K-1``.

    ADE20K: their loader colours raw id ``v = 49 i + 7 j + k`` as ``(30 i, 30 j, 30 k)`` (``gen_ade20k_color_map``),
    not the benchmark palette, so class ``c`` (raw ``c + 1``) gets that colour; "other" (raw 0) is black, as
    this project draws the ignore id. Cityscapes (``*_gtFine_color.png``) and COCO-Stuff use the official
    colours of every class, which are this project's palettes.
    """
    cls = DATASETS[dataset]
    if dataset != "ade20k":
        return np.asarray(cls.palette, dtype=np.uint8)
    grid = [(30 * i, 30 * j, 30 * k) for i in range(7) for j in range(7) for k in range(7)]
    return np.asarray(grid[1:cls.num_classes + 1], dtype=np.uint8)


def conventions(name: str, dataset: str, diffusion_steps: int = AUTHORS_DIFFUSION_STEPS) -> SamplingConventions:
    """The ``"authors"`` or ``"ours"`` sampling conventions for ``dataset`` (cityscapes, ade20k, coco-stuff)."""
    if name not in CONVENTIONS:
        raise ValueError(f"conventions must be one of {CONVENTIONS}, got {name!r}")
    if dataset not in AUTHORS_PROMPTS:
        raise ValueError(f"the authors' release covers {sorted(AUTHORS_PROMPTS)}, not {dataset!r}")
    if name == "authors":
        return SamplingConventions(
            name, f"{AUTHORS_PROMPTS[dataset]}, {AUTHORS_A_PROMPT}", AUTHORS_N_PROMPT, AUTHORS_GUIDANCE[dataset],
            AUTHORS_DDIM_STEPS, authors_mu(diffusion_steps), "spatial", 1, int(diffusion_steps))
    return SamplingConventions(name, DATASETS[dataset].prompt, "", OUR_GUIDANCE[dataset], AUTHORS_DDIM_STEPS,
                               DEFAULT_MU, "class", MIN_COUNT)


def recorded_conventions(info: dict | None, name: str, pipeline="the pipeline") -> dict:
    """The conventions an imported pipeline recorded (``info["conventions"]``), which must be ``name``'s.

    The prompts are encoded when the pipeline is imported, so a pipeline imported with one set of
    conventions cannot sample with the other's: that is refused, naming the fix.
    """
    if name not in CONVENTIONS:
        raise ValueError(f"conventions must be one of {CONVENTIONS}, got {name!r}")
    conv = (info or {}).get("conventions")
    if not conv:
        raise ValueError(f"{pipeline} records no sampling conventions (only `scpdiff import-release` writes them): "
                         "leave out --convention and pass --guidance, --steps and --mu")
    if conv.get("name") != name:
        raise ValueError(f"{pipeline} was imported with the {conv.get('name')!r} conventions, whose prompts its "
                         f"embeddings hold; re-import it with `scpdiff import-release --convention {name}`")
    return conv


def sampling_choices(conv: dict, prior: str | None, guidance: float | None = None, steps: int | None = None,
                     mu: float | None = None) -> dict:
    """``{"prior", "guidance", "steps", "mu"}`` of a ``scpdiff sample`` run under recorded conventions ``conv``.

    A value given explicitly wins. Under the authors' conventions the normal prior is their baseline
    (:data:`AUTHORS_NORMAL`, :func:`authors_normal_prior` at ``authors_mu(999)``: 19 steps from t = 901);
    under ours it is plain ControlNet (mu = 1). A prior file runs at the conventions' mu.
    """
    normal = prior in (None, "normal", AUTHORS_NORMAL)
    if normal and conv["name"] == "authors":
        prior, default_mu = AUTHORS_NORMAL, authors_mu(999, conv["num_inference_steps"])
    else:
        default_mu = None if normal else conv["mu"]
    return {"prior": prior, "guidance": conv["guidance_scale"] if guidance is None else guidance,
            "steps": conv["num_inference_steps"] if steps is None else steps, "mu": default_mu if mu is None else mu}
