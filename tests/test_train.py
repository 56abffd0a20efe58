"""Training: loss falls on one batch, decoder unlock, resume equivalence, accelerate with 2 processes."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scp_core.models import TOY_CONTROLNET_EMBEDDING, make_scheduler, toy_text_conditioning, toy_unet, toy_vae
from scp_core.pipeline import SCPDiffPipeline
from scp_core.training.finetune import DECODER_PREFIXES, finetune_controlnet
from scp_core.training.loop import TrainConfig, batch_indices, fit

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free local TCP port for torchrun's rendezvous (the default 29500 may linger in TIME_WAIT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
SIZE = (16, 32)


class TinySet(torch.utils.data.Dataset):
    """Eight 16 x 32 scenes: sky above, road below, a car of varying position."""

    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.zeros(n, *SIZE, dtype=torch.long)
        self.labels[:, 8:] = 1
        self.images = torch.empty(n, 3, *SIZE)
        for i in range(n):
            x = int(torch.randint(0, 24, (1,), generator=g))
            self.labels[i, 9:13, x:x + 8] = 2
        pal = torch.tensor([[0.2, 0.4, 0.9], [0.3, 0.3, 0.3], [0.9, 0.1, 0.1]])
        self.images = pal[self.labels].permute(0, 3, 1, 2) * 2 - 1

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": self.labels[i], "name": str(i)}


def tiny_pipeline():
    from diffusers import ControlNetModel

    unet = toy_unet(0, block_out_channels=(32, 64), layers_per_block=1, sample_size=(4, 8))
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=TOY_CONTROLNET_EMBEDDING)
    cond, uncond = toy_text_conditioning(0)
    pal = np.array([[50, 100, 230], [80, 80, 80], [230, 30, 30]], dtype=np.uint8)
    return SCPDiffPipeline(toy_vae(0), unet, cn, make_scheduler(), cond, uncond, num_classes=3, palette=pal,
                           image_size=SIZE)


def test_batch_order_is_a_function_of_step_and_seed():
    a = [batch_indices(s, 10, 4, seed=3) for s in range(6)]
    b = [batch_indices(s, 10, 4, seed=3) for s in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    first_epoch = np.concatenate(a[:2]).tolist()
    assert sorted(first_epoch) == sorted(set(first_epoch)), "no repeats in an epoch"
    assert not np.array_equal(batch_indices(0, 10, 4, 3), batch_indices(0, 10, 4, 4))


@pytest.mark.parametrize("schedule", ["sd", "zero-snr"])
def test_the_training_target_follows_the_schedules_prediction_type(schedule):
    """epsilon for SD's schedule; v = sqrt(ab) eps - sqrt(1 - ab) x0 under zero terminal SNR, from which
    x0 = sqrt(ab) x_t - sqrt(1 - ab) v comes back, at t = 999 (ab = 0) too."""
    from scp_core.training.losses import make_ddpm_like, prediction_target

    ddpm = make_scheduler("ddpm", schedule)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    t = torch.tensor([0, 500, 999])
    target = prediction_target(ddpm, x0, eps, t)
    if schedule == "sd":
        assert torch.equal(target, eps)
    else:
        ab = ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert torch.allclose(target, ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-6)
        xt = ddpm.add_noise(x0, eps, t)
        assert torch.allclose(ab.sqrt() * xt - (1 - ab).sqrt() * target, x0, atol=1e-5)
    # fine-tuning rebuilds the training scheduler from the pipeline's DDIM one: the schedule survives
    like = make_ddpm_like(make_scheduler("ddim", schedule))
    assert torch.equal(like.alphas_cumprod, ddpm.alphas_cumprod)
    assert like.config.prediction_type == ddpm.config.prediction_type


def test_loss_is_finite_and_falls_when_overfitting_one_batch(tmp_path):
    pipe = tiny_pipeline()
    data = TinySet(4)
    cfg = TrainConfig(steps=40, batch_size=4, lr=1e-3, seed=0)
    r = finetune_controlnet(pipe, data, cfg, tmp_path, device="cpu")
    losses = r["losses"]
    assert all(np.isfinite(losses)) and len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), (losses[:8], losses[-8:])
    assert (tmp_path / "loss.csv").is_file() and (tmp_path / "loss.png").is_file()


def test_decoder_unlock_changes_exactly_the_named_parameters(tmp_path):
    pipe = tiny_pipeline()
    before_unet = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    before_vae = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=2, batch_size=4, lr=1e-3), tmp_path, unlock=True,
                            device="cpu")  # compared with CPU copies
    unlocked = set(r["unlocked"])
    assert unlocked and all(n.startswith(DECODER_PREFIXES) for n in unlocked)
    for name, p in pipe.unet.named_parameters():
        changed = not torch.equal(p.detach(), before_unet[name])
        assert changed == (name in unlocked), name
    assert all(torch.equal(v, before_vae[k]) for k, v in pipe.vae.state_dict().items()), "the VAE stays frozen"
    # locked: the UNet does not move at all
    pipe = tiny_pipeline()
    before_unet = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=2, batch_size=4, lr=1e-3), tmp_path / "l", unlock=False,
                            device="cpu")
    assert r["unlocked"] == []
    assert all(torch.equal(v, before_unet[k]) for k, v in pipe.unet.state_dict().items())


def test_resume_gives_the_same_next_step_loss_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, lr=5e-4, checkpoint_every=3, seed=1)
    straight = finetune_controlnet(tiny_pipeline(), TinySet(8), cfg, tmp_path / "a", device="cpu")["losses"]
    # interrupted after step 4 (checkpoint at 3), then resumed from the latest checkpoint
    finetune_controlnet(tiny_pipeline(), TinySet(8), cfg, tmp_path / "b", stop_after=4, device="cpu")
    assert (tmp_path / "b" / "checkpoint-3" / "step.json").is_file()
    assert not list((tmp_path / "b").glob(".checkpoint-*")), "no half-written checkpoint left"
    resumed = finetune_controlnet(tiny_pipeline(), TinySet(8), cfg, tmp_path / "b", resume="latest",
                                  device="cpu")["losses"]  # CPU: bitwise-reproducible kernels
    assert len(resumed) == 6
    np.testing.assert_allclose(resumed[3:], straight[3:], rtol=1e-5, atol=1e-7)


def test_fit_refuses_a_model_with_nothing_to_train(tmp_path):
    m = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        fit(m, lambda *a: None, 4, TrainConfig(steps=1), tmp_path)


def accelerate_launch(script, n=2, timeout=600):
    """``accelerate launch`` with ``n`` CPU processes (gloo).

    In accelerate 1.15 ``--cpu --num_processes N`` starts a *single* process (its multi-CPU
    path goes through mpirun); ``--multi_gpu --num_processes N`` on a machine without GPUs
    starts N CPU processes through torchrun, which is what we want here.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           str(n), "--num_machines", "1", "--main_process_port", str(free_port()),
                           "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(script)], capture_output=True, text=True, env=env, timeout=timeout)


def test_accelerate_launch_two_cpu_processes(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    script = tmp_path / "ft.py"
    script.write_text(f"""
import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
import scp_core, torch
from scp_core.pipeline import SCPDiffPipeline
from scp_core.training.finetune import finetune_controlnet
from scp_core.training.loop import TrainConfig
from test_train import TinySet
pipe = SCPDiffPipeline.from_pretrained({str(tmp_path / 'pipe')!r}, device='cpu')
r = finetune_controlnet(pipe, TinySet(8), TrainConfig(steps=3, batch_size=4, lr=1e-4), {str(tmp_path / 'run')!r},
                        save_to={str(tmp_path / 'out')!r})
acc = r['accelerator']
print(f"rank {{acc.process_index}} of {{acc.num_processes}} losses {{r['losses']}}", flush=True)
""")
    out = accelerate_launch(script)
    assert out.returncode == 0, out.stderr[-3000:]
    # the two ranks' prints may interleave on one line of torchrun's forwarded output: parse, don't split
    found = re.findall(r"rank (\d+) of (\d+) losses (\[[^\]]*\])", out.stdout)
    assert sorted(r for r, _, _ in found) == ["0", "1"] and all(n == "2" for _, n, _ in found), out.stdout[-2000:]
    # both processes report the same (all-reduced) losses, and the result is loadable
    assert len({losses for _, _, losses in found}) == 1
    SCPDiffPipeline.from_pretrained(tmp_path / "out", device="cpu")


# ------------------------------------------------------------------ precision, checkpointing, placement
def _count_forwards(pipe) -> dict:
    """Count the forward passes of one ResNet of the ControlNet and one of the UNet decoder (blocks that
    diffusers checkpoints). The forward itself is wrapped: module hooks do not fire in a recompute."""
    calls = {"controlnet": 0, "unet": 0}
    for key, block in (("controlnet", pipe.controlnet.down_blocks[0].resnets[0]),
                       ("unet", pipe.unet.up_blocks[0].resnets[0])):
        def counted(*a, _f=block.forward, _k=key, **kw):
            calls[_k] += 1
            return _f(*a, **kw)
        block.forward = counted
    return calls


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_reaches_controlnet_and_unet(tmp_path, checkpointing):
    """With checkpointing the blocks run again in the backward pass (twice per step), and the losses are unchanged."""
    pipe = tiny_pipeline()
    calls = _count_forwards(pipe)
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, gradient_checkpointing=checkpointing)
    r = finetune_controlnet(pipe, TinySet(4), cfg, tmp_path, device="cpu")
    per_step = 2 if checkpointing else 1
    assert calls == {"controlnet": 2 * per_step, "unet": 2 * per_step}
    assert not pipe.unet.is_gradient_checkpointing, "switched off again after training"
    plain = finetune_controlnet(tiny_pipeline(), TinySet(4), TrainConfig(steps=2, batch_size=4, lr=1e-3),
                                tmp_path / "plain", device="cpu")["losses"]
    np.testing.assert_allclose(r["losses"], plain, rtol=1e-5)


def test_fit_refuses_checkpointing_a_model_without_it(tmp_path):
    m = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no enable_gradient_checkpointing"):
        fit(m, lambda *a: None, 4, TrainConfig(steps=1, gradient_checkpointing=True), tmp_path, device="cpu")


def test_a_half_precision_pipeline_trains_float32_weights_and_gets_its_dtype_back(tmp_path):
    """``from_pretrained`` loads float16 on a GPU: fine-tuning must not train float16 weights."""
    pipe = tiny_pipeline().to(dtype=torch.bfloat16)  # bfloat16: half precision that the CPU computes
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=2, batch_size=4, lr=1e-3, mixed_precision="bf16"),
                            tmp_path, device="cpu", save_to=tmp_path / "out")
    assert all(np.isfinite(r["losses"])) and len(r["losses"]) == 2
    assert r["model"].controlnet is pipe.controlnet
    assert pipe.dtype == torch.bfloat16 and pipe.controlnet.dtype == torch.bfloat16, "sampling dtype restored"
    assert pipe.prompt_embeds.dtype == torch.bfloat16
    saved = SCPDiffPipeline.from_pretrained(tmp_path / "out", device="cpu", dtype=torch.float32)
    from safetensors.torch import load_file
    weights = load_file(str(tmp_path / "out" / "controlnet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}, "the float32 master weights are saved"
    assert saved.dtype == torch.float32


def test_fit_refuses_half_precision_trainable_weights(tmp_path):
    m = torch.nn.Linear(2, 2).half()
    with pytest.raises(ValueError, match="train float32 weights"):
        fit(m, lambda *a: None, 4, TrainConfig(steps=1), tmp_path, device="cpu")


def test_mixed_precision_bf16_on_the_cpu_and_fp16_refused_there(tmp_path):
    from scp_core.training.loop import make_accelerator

    r = finetune_controlnet(tiny_pipeline(), TinySet(4),
                            TrainConfig(steps=2, batch_size=4, lr=1e-3, mixed_precision="bf16"), tmp_path, device="cpu")
    assert r["accelerator"].mixed_precision == "bf16" and all(np.isfinite(r["losses"]))
    # a later run in the same process with another precision gets its own accelerate state
    r = finetune_controlnet(tiny_pipeline(), TinySet(4), TrainConfig(steps=1, batch_size=4, lr=1e-3), tmp_path / "b",
                            device="cpu")
    assert r["accelerator"].mixed_precision == "no"
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        make_accelerator("fp16", device="cpu")
    with pytest.raises(ValueError, match="mixed_precision must be"):
        make_accelerator("fp8", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no GPU"):
            make_accelerator("no", device="cuda")


def test_finetuning_moves_the_frozen_vae_and_the_prompt_to_the_run_device(tmp_path):
    """The pipeline ends where accelerate trained it (on a GPU machine: CUDA; see test_cuda.py)."""
    pipe = tiny_pipeline()
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=1, batch_size=4, lr=1e-3), tmp_path)
    dev = r["accelerator"].device
    for name, t in [("vae", next(pipe.vae.parameters())), ("unet", next(pipe.unet.parameters())),
                    ("controlnet", next(pipe.controlnet.parameters())), ("prompt", pipe.prompt_embeds),
                    ("null prompt", pipe.negative_prompt_embeds)]:
        assert t.device.type == dev.type, name


def test_the_locked_toy_controlnet_keeps_the_base_unet_and_the_zoos_autoencoder(tmp_path):
    """`scpdiff train --profile toy-locked` at tiny counts: no UNet weight moves, the autoencoder is zoo/toy's file for
    file (so the committed stacks' priors apply to it: same fingerprint, same scale factor)."""
    from diffusers import UNet2DConditionModel

    from scp_core.data.profiles import TOY_PIPELINE_DIR
    from scp_core.pipeline import load_pipeline
    from scp_core.reference import autoencoder_fingerprint
    from scp_core.training.toy import train_toy_locked

    tiny = TrainConfig(steps=2, batch_size=2, log_every=1, checkpoint_every=2)
    facts = train_toy_locked(out=tmp_path / "zoo" / "pipeline", work=tmp_path / "runs", n_train=8,
                             configs={"unet": tiny, "controlnet": tiny})
    assert facts["unlocked_unet_tensors"] == 0 and facts["steps"] == 2 and facts["base_unet"]["steps"] == 2
    pipe = load_pipeline(tmp_path / "zoo" / "pipeline")
    base = UNet2DConditionModel.from_pretrained(tmp_path / "runs" / "unet" / "final")
    for k, v in base.state_dict().items():  # the pipeline stores float16: the base UNet rounded, nothing else
        assert torch.equal(pipe.unet.state_dict()[k], v.half().float()), k
    assert autoencoder_fingerprint(tmp_path / "zoo" / "pipeline") == autoencoder_fingerprint(TOY_PIPELINE_DIR)
    assert pipe.scale_factor == load_pipeline(TOY_PIPELINE_DIR).scale_factor
    assert (tmp_path / "zoo" / "training_facts.json").is_file() and (tmp_path / "zoo" / "loss_controlnet.csv").is_file()


def _line_fit(cfg, out, **kw):
    """A linear model fitted to a fixed target with ``fit`` (seconds, bitwise reproducible on the CPU)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    loss = lambda m, step, idx, gen: ((m(x[idx]) - y[idx]) ** 2).mean()  # noqa: E731
    return fit(model, loss, 16, cfg, out, device="cpu", **kw)


def test_ema_weights_are_returned_and_survive_a_resume(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=4, lr=5e-2, checkpoint_every=4, ema_decay=0.9, log_every=1)
    plain = _line_fit(TrainConfig(**{**cfg.__dict__, "ema_decay": 0.0}), tmp_path / "plain")["model"]
    straight = _line_fit(cfg, tmp_path / "a")["model"]
    assert not torch.equal(straight.weight, plain.weight), "the EMA, not the last weights, is the product"
    _line_fit(cfg, tmp_path / "b", stop_after=6)
    resumed = _line_fit(cfg, tmp_path / "b", resume="latest")["model"]
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        _line_fit(TrainConfig(steps=1, ema_decay=1.5), tmp_path / "c")


def test_a_wall_clock_budget_stops_the_stage_and_records_the_steps_done(tmp_path):
    r = _line_fit(TrainConfig(steps=50, batch_size=4, max_wall_s=1e-9, log_every=1), tmp_path)
    assert r["steps"] == 1 and len(r["losses"]) == 1
    assert (tmp_path / "loss.csv").read_text().splitlines() == ["step,loss", f"1,{r['losses'][0]}"]


def test_the_cosine_schedule_warms_up_then_falls_to_a_tenth_and_a_resume_follows_it(tmp_path):
    from scp_core.training.loop import lr_factor

    cfg = TrainConfig(steps=10, batch_size=4, lr=1e-2, warmup=2, schedule="cosine", checkpoint_every=5, log_every=1)
    f = [lr_factor(s, cfg) for s in range(cfg.steps + 1)]  # step `steps`: where the last step leaves the rate
    assert f[:2] == [0.5, 1.0] and f[2] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1) and f[-2] > 0.1
    assert all(a >= b for a, b in zip(f[2:], f[3:])), "after the warmup the rate only falls"
    assert lr_factor(5, TrainConfig(steps=10, warmup=2)) == 1.0  # constant stays constant
    straight = _line_fit(cfg, tmp_path / "a")["model"]
    _line_fit(cfg, tmp_path / "b", stop_after=5)
    resumed = _line_fit(cfg, tmp_path / "b", resume="latest")["model"]
    assert torch.equal(resumed.weight, straight.weight), "the schedule continues where the checkpoint left it"
    constant = _line_fit(TrainConfig(**{**cfg.__dict__, "schedule": "constant"}), tmp_path / "c")["model"]
    assert not torch.equal(constant.weight, straight.weight)
    with pytest.raises(ValueError, match="schedule must be"):
        _line_fit(TrainConfig(steps=1, schedule="linear"), tmp_path / "d")
