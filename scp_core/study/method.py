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
    "joint": "m, s by class and position (Eq. 8)",
    "categorical": "m, s by class (Eq. 7)",
    "spatial": "m, s by position (Eq. 5)",
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
    fig.text(x + w / 2, y + h + 0.02, title, ha="center", va="bottom", fontsize=_TITLE, weight="bold")
    fig.text(x + w / 2, y - 0.02, caption, ha="center", va="top", fontsize=_TEXT, linespacing=1.4)


def _arrow(fig, start, end, label: str = "", color: str = "0.2") -> None:
    fig.patches.append(FancyArrowPatch(start, end, transform=fig.transFigure, arrowstyle="-|>", mutation_scale=18,
                                       lw=1.8, color=color))
    if label:
        fig.text((start[0] + end[0]) / 2, max(start[1], end[1]) + 0.02, label, ha="center", va="bottom",
                 fontsize=_TEXT, color=color, linespacing=1.3)


_TITLE, _TEXT = 13, 10.5  # points, on a 10-inch-wide figure: readable when shown at about 900 px


def _schedule_text(ts: list[int], steps: int | None, alpha_bar: float | None) -> str:
    """Why the start is ``t_start`` and not ``mu T``: the DDIM grid and the strength rule, in the run's numbers."""
    if not ts:
        return "the last floor(mu N) of the N DDIM steps run;\nt_start is the first of them"
    n, stride = len(ts), (ts[0] - ts[1]) if len(ts) > 1 else None
    lines = [f"{n} of {steps} DDIM steps run: mu = {n / steps:g}" if steps else f"{n} DDIM steps run"]
    if steps and stride:
        lines += [f"(the last floor(mu N) = {n} of N = {steps})", f"on the grid t = {ts[0]}, {ts[1]}, ..., {ts[-1]}",
                  f"(every {stride}th of T = 1000)", "",
                  f"t_start = {ts[0]}: the first step that runs,",
                  f"mu T = {round(n / steps * 1000)} rounded down to the grid"]
    if alpha_bar is not None:
        lines += ["", f"alpha_bar at t_start = {alpha_bar:.3f}: the start",
                  f"keeps sqrt(alpha_bar) = {alpha_bar ** 0.5:.2f} of the draw"]
    return "\n".join(lines)


def method_figure(label_map=None, prior_draw=None, noised_start=None, image=None, *, timesteps=None,
                  steps: int | None = None, alpha_bar: float | None = None, prior: str = "joint", palette=None,
                  path: str | Path | None = None):
    """SCP-Diff's inference in one picture: boxes and arrows around the given pictures, in two rows.

    Top row: the label map, the prior draw ``x_prior`` and the noised start ``x_t_start`` (Eq. 6); bottom row,
    right to left: DDIM with the ControlNet, the image; bottom left: the schedule's numbers (why ``t_start`` is
    the first step of the DDIM grid that runs, not ``mu T`` itself). Symbols have one meaning each: ``x_prior``
    the prior's draw, ``x_gen`` the latent DDIM ends at, ``(i, j)`` a token's position.

    Args:
        label_map: the label map, coloured ``uint8 [H, W, 3]`` or class ids ``[H, W]`` (with ``palette``).
        prior_draw, noised_start: the prior draw ``x_prior`` and the start ``x_t_start`` (Eq. 6), decoded by the
            VAE for display; image: the final image. Pictures are uint8, or float in [0, 1] (for
            ``pipe.decode``'s [-1, 1] output pass ``(x + 1) / 2``), ``[H, W, 3]`` or ``[3, H, W]``;
            a picture left out is drawn as an empty frame.
        timesteps: the DDIM timesteps that ran (``SCPOutput.timesteps``; the first is ``t_start``).
        steps: N, the full schedule's DDIM steps; alpha_bar: ``alpha_bar`` at ``t_start``.
        prior: the prior's kind (its caption); path: where to save the PNG (atomically).

    Returns:
        The matplotlib figure.
    """
    fig = plt.figure(figsize=(10, 6.4))
    pics = [_rgb(p) for p in (prior_draw, noised_start, image)]
    shape = next((p.shape for p in [_rgb(label_map, palette)] + pics if p is not None), (1, 2))
    w, gap = 0.24, 0.08  # three columns; the right margin carries the arrow from the top row to the bottom one
    xs = [0.025 + i * (w + gap) for i in range(3)]
    h = min(0.3, w * 10 / 6.4 * shape[0] / shape[1])
    top, bottom = 0.66 - h / 2, 0.27 - h / 2
    ts = [int(t) for t in timesteps] if timesteps is not None else []
    _panel(fig, [xs[0], top, w, h], _rgb(label_map, palette), "1  label map M", "H x W class ids, colour-coded")
    _panel(fig, [xs[1], top, w, h], pics[0], r"2  prior draw $x_{prior}$",
           (r"$x_{prior} \sim \mathcal{N}(m,\ s^2)$ per token:" if prior != "normal"
            else r"$x_{prior} \sim \mathcal{N}(0,\ I)$:")
           + f"\n{_PRIOR_TEXT.get(prior, prior)}\n(a latent; shown decoded)")
    _panel(fig, [xs[2], top, w, h], pics[1], r"3  noised start $x_{t_{start}}$",
           (r"$\sqrt{\bar\alpha}\,x_{prior} + \sqrt{1-\bar\alpha}\,\epsilon$  (Eq. 6)" if prior != "normal"
            else r"$x_{prior}$ itself: N(0, I) noised is N(0, I)")
           + (f"\n$t_{{start}}$ = {ts[0]}" if ts else "")
           + (r", $\bar\alpha_{t_{start}}$" + f" = {alpha_bar:.3f}" if alpha_bar is not None else "")
           + "\n(a latent; shown decoded)")
    _panel(fig, [xs[1], bottom, w, h], pics[2], "5  image", r"$D(x_{gen})$: the VAE decoder's output")
    box = FancyBboxPatch((xs[2], bottom), w, h, boxstyle="round,pad=0.008", transform=fig.transFigure,
                         facecolor="#e8f0fa", edgecolor="#2b5d9b", lw=1.6)
    fig.patches.append(box)
    shown = ", ".join(map(str, ts)) if len(ts) <= 3 else f"{ts[0]}, {ts[1]}, ..., {ts[-1]}"
    steps_text = (f"the last {len(ts)}{f' of {steps}' if steps else ''} steps\nt = {shown}" if ts
                  else "the last floor(mu N) steps")
    fig.text(xs[2] + w / 2, bottom + h / 2, f"DDIM (eta = 0)\n{steps_text}\nUNet + ControlNet", ha="center",
             va="center", fontsize=_TEXT + 0.5, linespacing=1.45)
    fig.text(xs[2] + w / 2, bottom + h + 0.02, "4  denoise", ha="center", va="bottom", fontsize=_TITLE, weight="bold")
    fig.text(xs[0] + 0.005, bottom + h + 0.02, _schedule_text(ts, steps, alpha_bar), ha="left", va="top",
             fontsize=_TEXT - 1, linespacing=1.3, color="0.25")
    mid_top, mid_bottom = top + h / 2, bottom + h / 2
    _arrow(fig, (xs[0] + w + 0.005, mid_top), (xs[1] - 0.005, mid_top), "look up\nm, s")
    _arrow(fig, (xs[1] + w + 0.005, mid_top), (xs[2] - 0.005, mid_top), "noise to\n" + r"$t_{start}$")
    # top row to bottom row through the right margin: the start goes into DDIM
    right, edge = xs[2] + w + 0.035, xs[2] + w
    fig.add_artist(Line2D([edge + 0.005, right, right], [mid_top, mid_top, mid_bottom], transform=fig.transFigure,
                          color="0.2", lw=1.8))
    _arrow(fig, (right, mid_bottom), (edge + 0.01, mid_bottom))
    _arrow(fig, (xs[2] - 0.008, mid_bottom), (xs[1] + w + 0.005, mid_bottom), r"$x_{gen}$" + "\ndecode")
    # the control: the label map goes into the ControlNet at every DDIM step
    blue, x_map, x_ddim, y_line = "#2b5d9b", xs[0] / 2, xs[2] + w / 2, 0.035
    fig.add_artist(Line2D([xs[0], x_map, x_map, x_ddim], [mid_top, mid_top, y_line, y_line], transform=fig.transFigure,
                          color=blue, lw=1.5, ls="--"))
    _arrow(fig, (x_ddim, y_line), (x_ddim, bottom - 0.012), color=blue)
    fig.text(xs[1] + w / 2, y_line + 0.012, "control: the label map, colour-coded, into the ControlNet at "
             "every step", ha="center", va="bottom", fontsize=_TEXT - 1, color=blue)
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
    # the pipeline draws x_prior from the prior first with generator(seed), then noises it
    # (scp_core.sampling.start_latents)
    gen = torch.Generator(pipe.device).manual_seed(int(seed))
    draw = copy.copy(prior).to(pipe.device).sample(pipe.prior_labels(labels.to(pipe.device)), generator=gen)

    def shown(latents):
        return ((pipe.decode(latents) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
    return {"label_map": colorize(labels[0], pipe.palette), "prior_draw": shown(draw),
            "noised_start": shown(out.start_latents), "image": out.images[0], "timesteps": out.timesteps,
            "steps": steps, "alpha_bar": float(pipe.scheduler.alphas_cumprod[out.timesteps[0]]), "prior": prior.kind}
