"""The pipeline's batch loop: the prior moves once per call without touching the caller's object,
images are decoded batch by batch, and the opt-in ``compile=`` gives the same images."""
import pytest
import torch

from scp_core.priors import JointPrior
from test_sampling import _joint, _labels, _tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return _tiny_pipeline()


def test_prior_moves_once_per_call_on_a_copy(pipe, monkeypatch):
    prior = _joint(pipe)
    before = {k: getattr(prior, k) for k in prior.TENSORS}
    moved_caller = []
    original = JointPrior.to

    def spy(self, *a, **kw):
        moved_caller.append(self is prior)
        return original(self, *a, **kw)

    monkeypatch.setattr(JointPrior, "to", spy)
    pipe(_labels(4), prior=prior, mu=0.8, num_inference_steps=2, seed=0, batch_size=2, output_type="latent")
    assert moved_caller == [False], ("one move per call, of a shallow copy "
                                     "(it was once per sample, of the caller's prior)")
    assert all(getattr(prior, k) is v for k, v in before.items()), "the caller's prior keeps its tensors"


def test_images_are_decoded_batch_by_batch(pipe, monkeypatch):
    sizes = []
    decode = type(pipe).decode

    def spy(self, latents):
        sizes.append(latents.shape[0])
        return decode(self, latents)

    monkeypatch.setattr(type(pipe), "decode", spy)
    out = pipe(_labels(5), prior=_joint(pipe), mu=0.8, num_inference_steps=2, seed=0, batch_size=2, output_type="np")
    assert sizes == [2, 2, 1], "a VAE decode of every image at once does not fit a GPU at 512 x 1024"
    assert out.images.shape == (5, 32, 64, 3)
    pil = pipe(_labels(3), prior=_joint(pipe), mu=0.8, num_inference_steps=2, seed=0, batch_size=2, output_type="pil")
    assert len(pil.images) == 3 and pil.images[0].size == (64, 32)


def test_a_bad_output_type_is_refused_before_sampling(pipe):
    calls = []
    h = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="output_type must be"):
            pipe(_labels(1), seed=0, output_type="jpeg")
    finally:
        h.remove()
    assert calls == []


def test_the_control_map_is_embedded_once_per_batch_with_the_same_images(pipe, monkeypatch):
    """The ControlNet's conditioning embedding does not depend on t: once per batch, not once per step."""
    from contextlib import nullcontext
    from scp_core import sampling

    calls = []
    h = pipe.controlnet.controlnet_cond_embedding.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    kw = dict(prior=_joint(pipe), mu=1.0, num_inference_steps=4, guidance_scale=2.0, seed=0, batch_size=2,
              output_type="latent")
    try:
        once = pipe(_labels(3), **kw).latents
        assert calls == [4, 2], "one embedding per batch (both guidance branches together), not one per step"
        monkeypatch.setattr(sampling, "control_embedded_once", lambda controlnet, control: nullcontext())
        calls.clear()
        every_step = pipe(_labels(3), **kw).latents
        assert calls == [4] * 4 + [2] * 4
    finally:
        h.remove()
    assert torch.equal(once, every_step), "the same module on the same input: bit-identical latents"
    assert not isinstance(pipe.controlnet.controlnet_cond_embedding, sampling._EmbeddedOnce), "restored after the loop"


def _same_images_with(pipe, compile):
    prior, lab = _joint(pipe), _labels(2)
    kw = dict(prior=prior, mu=0.8, num_inference_steps=4, guidance_scale=2.0, seed=0, output_type="latent")
    eager = pipe(lab, **kw).latents
    first = pipe(lab, compile=compile, **kw).latents
    compiled = pipe._compiled
    again = pipe(lab, compile=compile, **kw).latents
    assert pipe._compiled is compiled, "compiled once, reused by later calls"
    assert pipe(lab, **kw).latents.equal(eager), "compile=False still runs the eager modules"
    return eager, first, again


def test_compile_option_wraps_unet_and_controlnet_once_and_keeps_the_images(pipe):
    """torch.compile with its tracing-only backend (seconds): the wiring, the caching, identical results."""
    eager, first, again = _same_images_with(pipe, {"backend": "eager"})
    assert isinstance(pipe._compiled[1], torch._dynamo.eval_frame.OptimizedModule)
    assert torch.equal(first, eager) and torch.equal(again, eager)


@pytest.mark.slow
def test_compile_true_with_inductor_gives_the_same_images(pipe):
    """compile=True (inductor: minutes on this CPU for the tiny stack) agrees with eager to float tolerance."""
    eager, first, again = _same_images_with(pipe, True)
    torch.testing.assert_close(first, eager, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, eager, atol=1e-4, rtol=1e-4)
