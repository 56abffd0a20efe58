"""Training, one concept per module:

* :mod:`.loop` -- :class:`TrainConfig` and :func:`fit`, the one training loop (checkpoints, resume,
  accelerate);
* :mod:`.losses` -- what each stage minimises (VAE, base UNet, ControlNet) and the latent cache;
* :mod:`.finetune` -- ControlNet fine-tuning of any base, SD 2.1 included (:func:`finetune_controlnet`);
* :mod:`.recipes` -- every recipe: the toy stacks' and the real-image stacks';
* :mod:`.stacks` -- what the stacks share: the stage runner, the ControlNet stage, the pipeline, PSNR;
* :mod:`.toy` -- the toy and toy-gv stacks (:func:`~.toy.train_toy_stack`, :func:`~.toy.train_toy_gv`);
* :mod:`.camvid` -- the real-image stack on TAEF2 latents (:func:`~.camvid.train_stack`);
* :mod:`.report` -- the ``REPORT.md`` beside each trained pipeline;
* :mod:`.entry` -- :func:`train_profile`, the one entry point: a profile's stack trained by the function that
  trains it (what ``scpdiff train`` calls).

Every stack is trained by this project's own code on the machine that runs it; the pipelines it
writes are loaded with :func:`scp_core.pipeline.load_pipeline`. The stacks are imported from their
modules (they load the datasets, the pipeline and, for the real-image stack, the study).
"""
from .finetune import finetune_controlnet
from .loop import TrainConfig, fit, make_accelerator
from .entry import TRAIN_OPTIONS, TRAIN_PROFILES, train_profile

__all__ = ["TrainConfig", "fit", "make_accelerator", "finetune_controlnet", "TRAIN_OPTIONS", "TRAIN_PROFILES",
           "train_profile"]
