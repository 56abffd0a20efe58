"""The method in one picture (scp_core.study.method): its pictures are the pipeline's own draw, start and image."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from scp_core import study
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
