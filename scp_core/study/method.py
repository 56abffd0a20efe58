"""The method in one picture, drawn by code: label map -> prior draw -> Eq. 6 -> DDIM with ControlNet -> image.

:func:`method_parts` makes the pictures from a pipeline and a prior (seeded, the very draw and start the
pipeline samples from); :func:`method_figure` draws them as boxes and arrows. ``docs/method_figure.py``
renders ``docs/method.png`` from the toy zoo; notebook 00 can pass its own pictures.
"""
from __future__ import annotations

import copy
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..data import colorize
from .output import save_figure

_PRIOR_TEXT = {  # what the prior draw of each kind is, under its picture
    "joint": "mean / std by class and position (Eq. 8)",
    "categorical": "mean / std by class (Eq. 7)",
    "spatial": "mean / std by position (Eq. 5)",
    "normal": "N(0, I): plain ControlNet",
}


def _rgb(x, palette=None) -> np.ndarray | None:
    """A picture for ``imshow``: uint8 or float in [0, 1], ``[H, W, 3]`` or ``[3, H, W]`` (a batch of one is
    taken apart); a 2-D integer map is a label map, coloured with ``palette`` (else a categorical colour map)."""
    if x is None:
        return None
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return colorize(a, palette) if palette is not None else plt.get_cmap("tab10")(a.astype(int) % 10)[..., :3]
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return a if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0.0, 1.0)


def _panel(fig, rect, picture, title: str, caption: str) -> None:
    """One picture with its step title above and its formula below (a grey frame where no picture is given)."""
    ax = fig.add_axes(rect)
    ax.set_xticks([])
    ax.set_yticks([])
    if picture is not None:
        ax.imshow(picture, interpolation="nearest", aspect="auto")
    else:
        ax.set_facecolor("0.93")
        ax.text(0.5, 0.5, "(not given)", ha="center", va="center", color="0.5", transform=ax.transAxes)
    x, y, w, h = rect
    fig.text(x + w / 2, y + h + 0.035, title, ha="center", va="bottom", fontsize=11, weight="bold")
    fig.text(x + w / 2, y - 0.035, caption, ha="center", va="top", fontsize=9, linespacing=1.5)


def _arrow(fig, start, end, label: str = "", color: str = "0.2") -> None:
    fig.patches.append(FancyArrowPatch(start, end, transform=fig.transFigure, arrowstyle="-|>", mutation_scale=16,
                                       lw=1.6, color=color))
    if label:
        fig.text((start[0] + end[0]) / 2, max(start[1], end[1]) + 0.025, label, ha="center", va="bottom",
                 fontsize=8.5, color=color, linespacing=1.3)


def method_figure(label_map=None, prior_draw=None, noised_start=None, image=None, *, timesteps=None,
                  steps: int | None = None, alpha_bar: float | None = None, prior: str = "joint", palette=None,
                  path: str | Path | None = None):
    """SCP-Diff's inference in one picture: boxes and arrows around the given pictures.

    Args:
        label_map: the label map, coloured ``uint8 [H, W, 3]`` or class ids ``[H, W]`` (with ``palette``).
        prior_draw, noised_start: the prior draw ``x`` and the start ``x_t_start`` (Eq. 6), decoded by the VAE
            for display; image: the final image. Pictures are uint8, or float in [0, 1] (for
            ``pipe.decode``'s [-1, 1] output pass ``(x + 1) / 2``), ``[H, W, 3]`` or ``[3, H, W]``;
            a picture left out is drawn as an empty frame.
        timesteps: the DDIM timesteps that ran (``SCPOutput.timesteps``; the first is ``t_start``).
        steps: N, the full schedule's DDIM steps; alpha_bar: ``alpha_bar`` at ``t_start``.
        prior: the prior's kind (its caption); path: where to save the PNG (atomically).

    Returns:
        The matplotlib figure.
    """
    fig = plt.figure(figsize=(16, 4.8))
    pics = [_rgb(p) for p in (prior_draw, noised_start, image)]
    shape = next((p.shape for p in [_rgb(label_map, palette)] + pics if p is not None), (1, 2))
    w, gap = 0.15, 0.055  # five columns: four pictures and the DDIM box
    h = min(0.5, w * 16 / 4.8 * shape[0] / shape[1])
    y = 0.5 - h / 2 + 0.08
    xs = [0.015 + i * (w + gap) for i in range(5)]
    ts = [int(t) for t in timesteps] if timesteps is not None else []
    numbers = ([f"$t_{{start}}$ = {ts[0]}"] if ts else []) + (
        [r"$\bar\alpha_t$" + f" = {alpha_bar:.3f}"] if alpha_bar is not None else [])
    _panel(fig, [xs[0], y, w, h], _rgb(label_map, palette), "1  label map M", "H x W class ids, colour-coded")
    _panel(fig, [xs[1], y, w, h], pics[0], "2  prior draw x",
           (r"$x \sim \mathcal{N}(m,\ s^2)$, per token (y, x) of class c = M(y, x):" if prior != "normal"
            else r"$x \sim \mathcal{N}(0,\ I)$:") + f"\n{_PRIOR_TEXT.get(prior, prior)}\n(a latent; shown decoded)")
    _panel(fig, [xs[2], y, w, h], pics[1], r"3  noised start $x_{t_{start}}$",
           (r"$x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1-\bar\alpha_t}\,\epsilon$ (Eq. 6)" if prior != "normal"
            else "x itself: N(0, I) noised is N(0, I)") + ("\n" + ", ".join(numbers) if numbers else "")
           + "\n(a latent; shown decoded)")
    _panel(fig, [xs[4], y, w, h], pics[2], "5  image", r"$D(x_0)$, the VAE decoder's output")
    box = FancyBboxPatch((xs[3], y), w, h, boxstyle="round,pad=0.008", transform=fig.transFigure,
                         facecolor="#e8f0fa", edgecolor="#2b5d9b", lw=1.6)
    fig.patches.append(box)
    shown = ", ".join(map(str, ts)) if len(ts) <= 3 else f"{ts[0]}, {ts[1]}, ..., {ts[-1]}"
    steps_text = (f"the last {len(ts)}{f' of {steps}' if steps else ''} steps\nt = {shown}" if ts
                  else "the last muT of the T steps")
    fig.text(xs[3] + w / 2, y + h / 2, f"DDIM (eta = 0)\n{steps_text}\nUNet + ControlNet", ha="center",
             va="center", fontsize=9.5, linespacing=1.5)
    fig.text(xs[3] + w / 2, y + h + 0.035, "4  denoise", ha="center", va="bottom", fontsize=11, weight="bold")
    mid = y + h / 2
    _arrow(fig, (xs[0] + w + 0.005, mid), (xs[1] - 0.005, mid), "look up\nmean, std")
    _arrow(fig, (xs[1] + w + 0.005, mid), (xs[2] - 0.005, mid), "noise to\n" + r"$t_{start} = \mu T$")
    _arrow(fig, (xs[2] + w + 0.005, mid), (xs[3] - 0.008, mid), r"$x_{t_{start}}$")
    _arrow(fig, (xs[3] + w + 0.008, mid), (xs[4] - 0.005, mid), r"$x_0$" + "\ndecode")
    # the control: the label map goes into the ControlNet at every DDIM step
    blue, x_map, x_ddim, y_line = "#2b5d9b", xs[0] + w / 2, xs[3] + w / 2, y - 0.2
    fig.add_artist(Line2D([x_map, x_map, x_ddim], [y - 0.09, y_line, y_line], transform=fig.transFigure, color=blue,
                          lw=1.4, ls="--"))
    _arrow(fig, (x_ddim, y_line), (x_ddim, y - 0.012), color=blue)
    fig.text((x_map + x_ddim) / 2, y_line - 0.02, "control: the label map, colour-coded, into the ControlNet at "
             "every step", ha="center", va="top", fontsize=8.5, color=blue)
    if path is not None:
        save_figure(fig, Path(path))
    return fig


def method_parts(pipe, prior, labels, *, mu: float | None = None, steps: int = 20, seed: int = 0,
                 guidance: float = 1.0) -> dict:
    """The pictures and numbers of :func:`method_figure` for one label map: ``method_figure(**parts)``.

    Samples ``labels`` (``[H, W]`` ids at the model's size) with ``pipe`` and ``prior`` (seed ``seed``, as
    ``pipe(...)`` does) and redraws the prior draw from the same seeded generator, so the pictures are the
    draw, the start and the image of that very sample. Latents are decoded by the pipeline's VAE.
    """
    labels = torch.as_tensor(labels)
    labels = labels[None] if labels.dim() == 2 else labels[:1]
    out = pipe(labels, prior=prior, mu=mu, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
               output_type="np", progress=False)
    # the pipeline draws x from the prior first with generator(seed), then noises it (scp_core.sampling.start_latents)
    gen = torch.Generator(pipe.device).manual_seed(int(seed))
    draw = copy.copy(prior).to(pipe.device).sample(pipe.prior_labels(labels.to(pipe.device)), generator=gen)

    def shown(latents):
        return ((pipe.decode(latents) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
    return {"label_map": colorize(labels[0], pipe.palette), "prior_draw": shown(draw),
            "noised_start": shown(out.start_latents), "image": out.images[0], "timesteps": out.timesteps,
            "steps": steps, "alpha_bar": float(pipe.scheduler.alphas_cumprod[out.timesteps[0]]), "prior": prior.kind}
