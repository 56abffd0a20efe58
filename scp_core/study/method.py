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
from .output import _text_size, save_figure

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


class _Layout:
    """Positions in inches, ``y`` from the top of a figure ``width`` wide and ``height`` high, as figure fractions."""

    def __init__(self, fig, width: float, height: float):
        self.fig, self.width, self.height = fig, width, height

    def x(self, inches: float) -> float:
        return inches / self.width

    def y(self, inches_from_top: float) -> float:
        return 1.0 - inches_from_top / self.height

    def text(self, x: float, y: float, text: str, **kw):
        return self.fig.text(self.x(x), self.y(y), text, **kw)

    def arrow(self, start, end, label: str = "", color: str = "0.2") -> None:
        """An arrow between two points (inches), its label above its middle."""
        a, b = (self.x(start[0]), self.y(start[1])), (self.x(end[0]), self.y(end[1]))
        self.fig.patches.append(FancyArrowPatch(a, b, transform=self.fig.transFigure, arrowstyle="-|>",
                                                mutation_scale=18, lw=1.8, color=color))
        if label:
            self.text((start[0] + end[0]) / 2, min(start[1], end[1]) - 0.1, label, ha="center", va="bottom",
                      fontsize=_TEXT, color=color, linespacing=1.3)

    def line(self, xs, ys, **kw) -> None:
        self.fig.add_artist(Line2D([self.x(v) for v in xs], [self.y(v) for v in ys], transform=self.fig.transFigure,
                                   **kw))

    def panel(self, x: float, y: float, w: float, h: float, picture):
        """One picture in the box whose top left corner is ``(x, y)`` (a grey frame where none is given)."""
        ax = self.fig.add_axes([self.x(x), self.y(y + h), self.x(w), h / self.height])
        ax.set_xticks([])
        ax.set_yticks([])
        if picture is not None:
            ax.imshow(picture, interpolation="nearest", aspect="auto")
        else:
            ax.set_facecolor("0.93")
            ax.text(0.5, 0.5, "(not given)", ha="center", va="center", color="0.5", transform=ax.transAxes)
        return ax


_TITLE, _TEXT = 13, 10.5  # points, on a 10-inch-wide figure: readable when shown at about 900 px
_WIDTH, _COLUMN, _GAP, _LEFT = 10.0, 2.4, 0.8, 0.25  # inches: the figure, a column, between columns, the margin
_TALLEST = 2.4  # inches: a taller picture is drawn narrower, so the figure stays one screen high


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

    Long because every panel, arrow and caption is placed from the sizes the one renderer measured for the others
    (so no text overlaps at any aspect ratio): split into parts, each would need all the others' positions.

    Top row: the label map, the prior draw ``x_prior`` and the noised start ``x_t_start`` (Eq. 6); bottom row,
    right to left: DDIM with the ControlNet, the image; bottom left: the schedule's numbers (why ``t_start`` is
    the first step of the DDIM grid that runs, not ``mu T`` itself). Symbols have one meaning each: ``x_prior``
    the prior's draw, ``x_gen`` the latent DDIM ends at, ``(i, j)`` a token's position.

    The figure is 10 inches wide; its height follows the pictures' aspect ratio and the measured height of each
    text, so no text runs into another or into a picture, whatever the pictures' shape.

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
    fig = plt.figure(figsize=(_WIDTH, 6.4))
    pics = [_rgb(label_map, palette)] + [_rgb(p) for p in (prior_draw, noised_start, image)]
    shape = next((p.shape for p in pics if p is not None), (1, 2))
    ph = min(_TALLEST, _COLUMN * shape[0] / shape[1])  # a picture's height and width, inches
    pw = ph * shape[1] / shape[0]
    xs = [_LEFT + i * (_COLUMN + _GAP) for i in range(3)]  # the columns' left edges
    ts = [int(t) for t in timesteps] if timesteps is not None else []
    title_kw = dict(fontsize=_TITLE, weight="bold")
    caption_kw = dict(fontsize=_TEXT, linespacing=1.4)
    titles = ["1  label map M", r"2  prior draw $x_{prior}$", r"3  noised start $x_{t_{start}}$"]
    captions = ["H x W class ids, colour-coded",
                (r"$x_{prior} \sim \mathcal{N}(m,\ s^2)$ per token:" if prior != "normal"
                 else r"$x_{prior} \sim \mathcal{N}(0,\ I)$:")
                + f"\n{_PRIOR_TEXT.get(prior, prior)}\n(a latent; shown decoded)",
                (r"$\sqrt{\bar\alpha}\,x_{prior} + \sqrt{1-\bar\alpha}\,\epsilon$  (Eq. 6)" if prior != "normal"
                 else r"$x_{prior}$ itself: N(0, I) noised is N(0, I)")
                + (f"\n$t_{{start}}$ = {ts[0]}" if ts else "")
                + (r", $\bar\alpha_{t_{start}}$" + f" = {alpha_bar:.3f}" if alpha_bar is not None else "")
                + "\n(a latent; shown decoded)"]
    shown = ", ".join(map(str, ts)) if len(ts) <= 3 else f"{ts[0]}, {ts[1]}, ..., {ts[-1]}"
    steps_text = (f"the last {len(ts)}{f' of {steps}' if steps else ''} steps\nt = {shown}" if ts
                  else "the last floor(mu N) steps")
    ddim_text, ddim_kw = f"DDIM (eta = 0)\n{steps_text}\nUNet + ControlNet", dict(fontsize=_TEXT + 0.5,
                                                                                    linespacing=1.45)
    image_caption = r"$D(x_{gen})$: the VAE decoder's output"
    schedule, schedule_kw = _schedule_text(ts, steps, alpha_bar), dict(fontsize=_TEXT - 1, linespacing=1.3)
    control = "control: the label map, colour-coded, into the ControlNet at every step"
    control_kw = dict(fontsize=_TEXT - 1)

    # the rows, top down, from the texts' measured heights (inches)
    title_h = max(_text_size(fig, t, **title_kw)[1] for t in titles + ["4  denoise"])
    top = 0.1 + title_h + 0.1                                    # the top row's pictures
    captions_top = top + ph + 0.1
    second = captions_top + max(_text_size(fig, c, **caption_kw)[1] for c in captions) + 0.3  # the bottom row's titles
    row = second + title_h + 0.1                                 # the bottom row: the image and the DDIM box
    row_h = max(ph, _text_size(fig, ddim_text, **ddim_kw)[1] + 0.3)
    image_top = row + (row_h - ph) / 2
    image_caption_top = max(image_top + ph, row + row_h) + 0.1
    end = max(image_caption_top + _text_size(fig, image_caption, **caption_kw)[1],
              second + _text_size(fig, schedule, **schedule_kw)[1])
    control_top = end + 0.2                                      # the control's line and its text, under everything
    y_line = control_top + _text_size(fig, control, **control_kw)[1] + 0.08
    height = y_line + 0.15
    fig.set_size_inches(_WIDTH, height)
    at = _Layout(fig, _WIDTH, height)

    for i, (pic, title, caption) in enumerate(zip(pics[:3], titles, captions)):
        at.panel(xs[i] + (_COLUMN - pw) / 2, top, pw, ph, pic)
        at.text(xs[i] + _COLUMN / 2, top - 0.1, title, ha="center", va="bottom", **title_kw)
        at.text(xs[i] + _COLUMN / 2, captions_top, caption, ha="center", va="top", **caption_kw)
    image_left = xs[1] + (_COLUMN - pw) / 2
    at.panel(image_left, image_top, pw, ph, pics[3])
    at.text(xs[1] + _COLUMN / 2, row - 0.1, "5  image", ha="center", va="bottom", **title_kw)
    at.text(xs[1] + _COLUMN / 2, image_caption_top, image_caption, ha="center", va="top", **caption_kw)
    fig.patches.append(FancyBboxPatch((at.x(xs[2]), at.y(row + row_h)), at.x(_COLUMN), row_h / height,
                                      boxstyle="round,pad=0.008", transform=fig.transFigure, facecolor="#e8f0fa",
                                      edgecolor="#2b5d9b", lw=1.6))
    at.text(xs[2] + _COLUMN / 2, row + row_h / 2, ddim_text, ha="center", va="center", **ddim_kw)
    at.text(xs[2] + _COLUMN / 2, row - 0.1, "4  denoise", ha="center", va="bottom", **title_kw)
    at.text(xs[0] + 0.05, second, schedule, ha="left", va="top", color="0.25", **schedule_kw)

    mid_top, mid_bottom = top + ph / 2, row + row_h / 2
    edges = [(xs[i] + (_COLUMN - pw) / 2, xs[i] + (_COLUMN + pw) / 2) for i in range(3)]
    at.arrow((edges[0][1] + 0.05, mid_top), (edges[1][0] - 0.05, mid_top), "look up\nm, s")
    at.arrow((edges[1][1] + 0.05, mid_top), (edges[2][0] - 0.05, mid_top), "noise to\n" + r"$t_{start}$")
    # top row to bottom row through the right margin: the start goes into DDIM
    right, edge = xs[2] + _COLUMN + 0.35, xs[2] + _COLUMN
    at.line([edges[2][1] + 0.05, right, right], [mid_top, mid_top, mid_bottom], color="0.2", lw=1.8)
    at.arrow((right, mid_bottom), (edge + 0.1, mid_bottom))
    at.arrow((xs[2] - 0.08, mid_bottom), (image_left + pw + 0.05, mid_bottom), r"$x_{gen}$" + "\ndecode")
    # the control: the label map goes into the ControlNet at every DDIM step
    blue, x_map, x_ddim = "#2b5d9b", edges[0][0] / 2, xs[2] + _COLUMN / 2
    at.line([edges[0][0], x_map, x_map, x_ddim], [mid_top, mid_top, y_line, y_line], color=blue, lw=1.5, ls="--")
    at.arrow((x_ddim, y_line), (x_ddim, row + row_h + 0.12), color=blue)
    at.text(xs[1] + _COLUMN / 2, y_line - 0.08, control, ha="center", va="bottom", color=blue, **control_kw)
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
