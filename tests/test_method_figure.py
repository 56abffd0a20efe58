"""The method in one picture (scp_core.study.method): its pictures are the pipeline's own draw, start and image."""
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from scp_core import study
from scp_core.study.output import MAX_FIGURE_PX
from scp_core.sampling import noise_to_step

from test_sampling import _joint, _labels, _tiny_pipeline


def test_method_parts_are_the_sample_the_pipeline_draws(tmp_path):
    pipe = _tiny_pipeline()
    prior = _joint(pipe)
    lab = _labels(1)[0]
    parts = study.method_parts(pipe, prior, lab, mu=0.8, steps=10, seed=3)
    out = pipe(lab[None], prior=prior, mu=0.8, num_inference_steps=10, seed=3, output_type="np", progress=False)
    assert np.array_equal(parts["image"], out.images[0])
    assert parts["timesteps"] == out.timesteps and len(out.timesteps) == 8 and parts["prior"] == "joint"
    assert parts["alpha_bar"] == float(pipe.scheduler.alphas_cumprod[out.timesteps[0]])
    g = torch.Generator().manual_seed(3)  # Eq. 6 on the drawn prior sample gives the pipeline's start
    draw = prior.sample(pipe.prior_labels(lab), generator=g)
    assert torch.equal(noise_to_step(draw, parts["alpha_bar"], generator=g), out.start_latents)
    np.testing.assert_allclose(parts["prior_draw"], ((pipe.decode(draw) + 1) / 2)[0].permute(1, 2, 0).numpy())
    assert parts["label_map"].shape == (*lab.shape, 3) and parts["label_map"].dtype == np.uint8
    fig = study.method_figure(**parts, path=tmp_path / "method.png")
    assert (tmp_path / "method.png").stat().st_size > 10_000 and len(fig.axes) == 4
    plt.close(fig)


def test_method_figure_takes_any_picture_layout_and_leaves_out_what_is_not_given():
    lab = _labels(1)[0]
    fig = study.method_figure(lab, torch.rand(3, 32, 64), None, np.zeros((1, 32, 64, 3), np.uint8), prior="normal")
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(fig.axes) == 4 and len(shown) == 3 and all(a.shape[:2] == (32, 64) for a in shown)
    plt.close(fig)


def _text_and_picture_boxes(fig):
    """The window extents of the figure's texts (titles, captions, arrow labels, the schedule) and pictures."""
    r = fig.canvas.get_renderer()
    return ([(t.get_text(), t.get_window_extent(r)) for t in fig.texts if t.get_text()]
            + [(f"picture {i}", ax.get_window_extent(r)) for i, ax in enumerate(fig.axes)])


@pytest.mark.parametrize("shape", [(64, 128), (96, 128)], ids=["toy 64x128", "camvid 96x128"])
def test_method_figure_texts_overlap_neither_each_other_nor_the_pictures(shape, tmp_path):
    """Both aspect ratios the figure is drawn at (notebook 00 on toy and on CamVid): every text box and every
    picture is clear of every other, in the renderer's own extents."""
    h, w = shape
    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(3)]
    labels = rng.integers(0, 5, (h, w))
    ts = list(range(799, 0, -50))
    fig = study.method_figure(labels, *pics, timesteps=ts, steps=20, alpha_bar=0.018, path=tmp_path / "m.png")
    boxes = _text_and_picture_boxes(fig)
    assert len(boxes) >= 16
    clash = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert not clash, clash
    with Image.open(tmp_path / "m.png") as im:
        assert im.size[0] <= MAX_FIGURE_PX
    plt.close(fig)
