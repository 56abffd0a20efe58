"""The training loop: :class:`TrainConfig`, :func:`fit`, its checkpoints and its accelerator.

One loop serves every stage of every stack. It is deterministic and resumable:

* the batch of global step ``s`` is a function of ``(seed, s)`` alone (a seeded
  permutation per epoch), and each process takes its slice of that global batch;
* the noise and timesteps of step ``s`` come from a generator seeded with ``(seed, s)``;
* checkpoints (``accelerator.save_state``: weights, optimizer, LR schedule) are written to
  a temporary folder and renamed, every ``checkpoint_every`` steps; ``resume="latest"``
  continues from the newest one with the same data order and LR schedule, so the next
  step's loss equals that of a run that never stopped.

What a stage minimises is in :mod:`.losses`; ControlNet fine-tuning of any base in :mod:`.finetune`.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import _tv_compat  # noqa: F401
from ..io import atomic_path, follow_umask, write_json
from ..models import fresh_accelerate_state, run_on_cpu


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage.

    Attributes:
        steps: optimizer steps. batch_size: global batch (split across processes).
        lr: AdamW learning rate, reached after ``warmup`` linear steps; then ``schedule``.
        schedule: ``"constant"`` (the rate stays) or ``"cosine"`` (from ``lr`` down to ``lr / 10`` at the last
            step's end along half a cosine).
        checkpoint_every: steps between checkpoints (0: only at the end).
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` (GPU only).
        gradient_checkpointing: trade compute for memory (GPU-size models).
        ema_decay: keep an exponential moving average of the trained weights (diffusers' ``EMAModel``,
            saved in the checkpoints) and return it instead of the last weights; 0: none.
        max_wall_s: stop after the first step that ends past this many seconds of the stage (a device's
            time budget); the result records the steps done. 0: no limit.
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    schedule: str = "constant"
    weight_decay: float = 1e-2
    warmup: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0
    max_wall_s: float = 0.0


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the global batch of ``step``: epoch ``e`` walks a permutation seeded by ``(seed, e)``."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch_size:
        perm = np.resize(perm, batch_size)
    return perm[k * batch_size:(k + 1) * batch_size]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one step's random draws (noise, timesteps, dropout)."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, rank, 7]).integers(2**62)))


# ---------------------------------------------------------------------------- checkpoints
def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = [(int(m.group(1)), p) for p in out_dir.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "step.json").is_file()]
    return max(ckpts)[1] if ckpts else None


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that no kill can leave a partial ``checkpoint-N``: rename, then remove."""
    doomed = path.with_name(f".{path.name}.del")
    path.rename(doomed)
    shutil.rmtree(doomed)


def _sweep_partial(out_dir: Path) -> None:
    """Remove what an interrupted save or prune left behind (hidden ``.checkpoint-*`` folders)."""
    for p in out_dir.glob(".checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


def _save_checkpoint(accelerator, out_dir: Path, step: int, keep: int) -> None:
    if accelerator.is_main_process:
        tmp = out_dir / f".checkpoint-{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    tmp = out_dir / f".checkpoint-{step}.tmp"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "step.json", {"step": step})
        follow_umask(tmp)  # accelerate's safetensors files are 0600 whatever the umask
        final = out_dir / f"checkpoint-{step}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # a checkpoint is visible only once complete
        old = sorted((int(p.name.split("-")[1]), p) for p in out_dir.glob("checkpoint-*") if p.name[11:].isdigit())
        for _, p in old[:-keep] if keep > 0 else []:
            _remove_checkpoint(p)
    accelerator.wait_for_everyone()


def _resume(accelerator, out_dir: Path, resume: str | None, log_path: Path) -> tuple[int, list[tuple[int, float]]]:
    """The step to start from and the losses logged up to it (after clearing half-written checkpoints)."""
    start = 0
    if accelerator.is_main_process:
        _sweep_partial(out_dir)
    accelerator.wait_for_everyone()
    if resume:
        ckpt = _latest_checkpoint(out_dir) if resume == "latest" else Path(resume)
        if ckpt is not None:
            accelerator.load_state(str(ckpt))
            start = json.loads((ckpt / "step.json").read_text())["step"]
            accelerator.print(f"resumed from {ckpt} at step {start}")
    losses: list[tuple[int, float]] = []
    if start and log_path.exists():
        with open(log_path) as f:
            losses = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if int(r["step"]) <= start]
    return start, losses


# ---------------------------------------------------------------------------- accelerator and optimizer
def make_accelerator(mixed_precision: str = "no", device: str | None = None):
    """The ``accelerate.Accelerator`` of a training run.

    Args:
        mixed_precision: ``"no"``, ``"fp16"`` (CUDA only) or ``"bf16"``.
        device: ``None`` / ``"auto"``: accelerate's device for this process (its GPU under
            ``accelerate launch`` where GPUs exist, else the CPU), unless ``SCP_DEVICE=cpu``;
            ``"cpu"``; ``"cuda"`` (refused where no GPU exists).

    In a single process, a second run with another ``mixed_precision`` gets a fresh
    accelerate state (accelerate otherwise refuses to change it).
    """
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    cpu = run_on_cpu(device)
    if cpu and mixed_precision == "fp16":
        raise ValueError("mixed_precision='fp16' needs a GPU (accelerate would silently train in float32 on the "
                         "CPU); use 'bf16' or 'no' there")
    fresh_accelerate_state(cpu, mixed_precision)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def _trainable_parameters(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """The float32 parameters that train (gradient checkpointing switched on first when asked for)."""
    if cfg.gradient_checkpointing:
        if not hasattr(model, "enable_gradient_checkpointing"):
            raise ValueError(f"gradient_checkpointing=True, but {type(model).__name__} has no "
                             "enable_gradient_checkpointing(); train without it or wrap the model in a module that "
                             "has it")
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter of the model requires grad")
    half = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if half:
        raise ValueError(f"the trainable parameters are {', '.join(half)}: train float32 weights (cast the model "
                         "with .float()) and pick half-precision compute with mixed_precision='fp16' or 'bf16'")
    return params


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning rate of ``step`` as a fraction of ``cfg.lr``: a linear warmup over ``cfg.warmup`` steps, then 1
    (``schedule="constant"``) or half a cosine from 1 down to 0.1 at the last step (``"cosine"``)."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(params, cfg: TrainConfig):
    """AdamW with the learning rate of :func:`lr_factor`."""
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return opt, sched


def _step(model, loss_fn, idx, gen, accelerator, opt, sched, params, cfg: TrainConfig, step: int) -> float:
    """One optimizer step; returns the loss averaged over the processes."""
    with accelerator.autocast():
        loss = loss_fn(model, step, idx, gen)
    accelerator.backward(loss)
    if cfg.max_grad_norm:
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    mean_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"loss became {mean_loss} at step {step}; lower the learning rate")
    return mean_loss


# ---------------------------------------------------------------------------- the loop
def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, int, np.ndarray, torch.Generator], torch.Tensor],
        n_items: int, cfg: TrainConfig, out_dir: str | Path, resume: str | None = None,
        accelerator=None, desc: str = "train", stop_after: int | None = None, device: str | None = None) -> dict:
    """The shared training loop (AdamW, warmup then constant LR, grad clipping, checkpoints).

    Args:
        model: a module holding every trainable parameter (``requires_grad`` set).
        loss_fn: ``loss_fn(model, step, indices, generator) -> loss`` for this process's
            slice of the global batch.
        n_items: size of the training set (for the batch order).
        cfg: hyper-parameters.
        out_dir: checkpoints, ``loss.csv`` and ``loss.png`` go here.
        resume: ``"latest"`` or a checkpoint folder.
        stop_after: stop (without finishing) after this global step; for tests that
            simulate an interrupted run.
        accelerator: an ``accelerate.Accelerator`` to use (default: :func:`make_accelerator`).
        device: ``None`` / ``"auto"`` (accelerate's choice: this process's GPU where there is
            one, else the CPU; ``SCP_DEVICE=cpu`` pins the CPU), ``"cpu"`` or ``"cuda"``.

    Returns:
        dict with ``steps``, ``wall_s``, ``final_loss``, ``losses`` (list of floats), the
        ``accelerator`` and the unwrapped ``model`` (on ``accelerator.device``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = accelerator or make_accelerator(cfg.mixed_precision, device)
    params = _trainable_parameters(model, cfg)
    model, opt, sched = accelerator.prepare(model, *_optimizer(params, cfg))
    ema = _ema(params, cfg, accelerator)
    log_path = out_dir / "loss.csv"
    start, losses = _resume(accelerator, out_dir, resume, log_path)

    world, rank = accelerator.num_processes, accelerator.process_index
    t0 = time.time()
    model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), desc=desc, disable=not accelerator.is_main_process, initial=start, total=cfg.steps)
    for step in bar:
        idx = batch_indices(step, n_items, cfg.batch_size, cfg.seed)[rank::world]
        mean_loss = _step(model, loss_fn, idx, step_generator(cfg.seed, step, rank), accelerator, opt, sched, params,
                          cfg, step)
        if ema is not None:
            ema.step(params)
        losses.append((step + 1, mean_loss))
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_checkpoint(accelerator, out_dir, done, cfg.keep_checkpoints)
            if accelerator.is_main_process:
                _write_log(log_path, losses)
        if cfg.max_wall_s and time.time() - t0 > cfg.max_wall_s and done < end:
            end = done  # the device's budget is spent: the weights so far, the steps recorded
            break
    wall = time.time() - t0
    if accelerator.is_main_process:
        _write_log(log_path, losses)
        plot_losses(log_path, out_dir / "loss.png", title=desc)
    if ema is not None:
        ema.copy_to(params)  # the averaged weights are the stage's product
    model.eval()
    return {"steps": end, "wall_s": wall, "final_loss": losses[-1][1] if losses else float("nan"),
            "losses": [l for _, l in losses], "accelerator": accelerator,
            "model": accelerator.unwrap_model(model)}


def _ema(params, cfg: TrainConfig, accelerator):
    """diffusers' ``EMAModel`` of ``params`` (registered so that checkpoints hold it), or ``None``."""
    if not cfg.ema_decay:
        return None
    if not 0 < cfg.ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
    from diffusers.training_utils import EMAModel  # diffusers' training helpers: only when an EMA is asked for

    ema = EMAModel(params, decay=cfg.ema_decay)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    return ema


def _write_log(path: Path, losses) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows(losses)


def plot_losses(csv_path: Path, png_path: Path, title: str = "") -> None:
    """Loss curve (raw and a moving average) as PNG."""
    import matplotlib  # slow to import: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen
    import pandas as pd  # slow to import: only the plots need it

    df = pd.read_csv(csv_path)
    if df.empty:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(df["step"], df["loss"], alpha=0.3, lw=0.8, label="loss")
    ax.plot(df["step"], df["loss"].rolling(max(len(df) // 50, 1), min_periods=1).mean(), lw=1.5, label="moving avg")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
