"""Two checks of a real-image stack after training, for its report: does it paint, and does it copy?

A model trained on a few hundred frames of one city can score well by copying them. So the report of a
real-image stack (:func:`scp_core.training.report.write_camvid_report`) samples plain ControlNet (the normal
prior, mu = 1: the model alone, no prior painting for it) on every validation map and measures, in Inception's
2048-d pool features (the FID features):

* **painting** -- KID of those samples against the real validation images, beside the real floor: KID of the
  real training images against the same validation images (the CPU recipe's goal: at most twice the floor);
* **memorisation** -- for each generated image, the Euclidean distance to its nearest training image, against
  the same distance of each real validation image (a frame the model never saw, from the same city): the share
  of generated images nearer to a training image than the *closest* validation image is (goal: at most 5 %),
  the share nearer than their own map's real frame, both distributions in one figure, and the closest pairs.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics.frechet import InceptionFeatures, extract_features, nearest
from ..metrics.kid import kid_from_features
from ..priors import NormalPrior

KID_GOAL = 2.0  # plain ControlNet's KID at most this many times the real train-versus-val KID
SHARE_GOAL = 0.05  # at most this share of generated images nearer to a training image than any val image is


@torch.no_grad()
def plain_samples(pipe, labels: np.ndarray, seed: int = 0, batch: int = 16, steps: int = 20) -> np.ndarray:
    """Plain ControlNet sampling (normal prior, mu = 1, ``steps`` DDIM steps) of every map, uint8 ``[N, H, W, 3]``;
    batch ``b`` uses seed ``seed + b`` (one generator per batch, so the images do not depend on the batch size of
    other batches)."""
    prior = NormalPrior(latent_channels=pipe.latent_shape[0])
    out = []
    for b, s in enumerate(range(0, len(labels), batch)):
        out.append(pipe(torch.as_tensor(labels[s:s + batch]).long(), prior=prior, mu=1.0, num_inference_steps=steps,
                        seed=seed + b, output_type="np", progress=False).images)
    images = np.concatenate(out)
    if images.dtype != np.uint8:  # output_type="np" gives uint8; scaling it by 255 again would wrap to negatives
        raise TypeError(f"the pipeline returned {images.dtype} images for output_type='np', expected uint8")
    return images


def inception_features(images_u8: np.ndarray, extractor: InceptionFeatures) -> torch.Tensor:
    """2048-d pool features of uint8 NHWC images, float64."""
    return extract_features(np.ascontiguousarray(images_u8), extractor)


def check(pipe, train_images: np.ndarray, val_labels: np.ndarray, val_images: np.ndarray, seed: int = 0) -> dict:
    """Sample every validation map, then both checks (module docstring, :func:`summarise`)."""
    generated = plain_samples(pipe, val_labels, seed=seed)
    extractor = InceptionFeatures()
    f_train, f_val, f_gen = (inception_features(x, extractor) for x in (train_images, val_images, generated))
    result = summarise(f_train, f_val, f_gen, seed=seed)
    result["arrays"]["generated"] = generated
    return result


def summarise(f_train: torch.Tensor, f_val: torch.Tensor, f_gen: torch.Tensor, seed: int = 0) -> dict:
    """Both checks from the three feature sets (``f_gen[i]`` generated from the map of ``f_val[i]``). Returns the
    numbers and, under ``"arrays"``, what the figures need (distances and nearest training indices)."""
    d_gen, i_gen = nearest(f_gen, f_train)
    d_val, i_val = nearest(f_val, f_train)
    kid_gen = kid_from_features(f_gen.numpy(), f_val.numpy(), seed=seed)
    kid_real = kid_from_features(f_train.numpy(), f_val.numpy(), seed=seed)
    # a floor at or below 0 (two real sets the estimator cannot tell apart) leaves the ratio undefined
    ratio = kid_gen["kid"] / kid_real["kid"] if kid_real["kid"] > 0 else float("nan")
    share = float(np.mean(d_gen < d_val.min()))
    return {
        "n_generated": int(len(f_gen)), "n_train": int(len(f_train)), "seed": seed,
        "kid_plain_vs_val_x1e3": round(1e3 * kid_gen["kid"], 3),
        "kid_plain_se_x1e3": round(1e3 * kid_gen["kid_se"], 3),
        "kid_train_vs_val_x1e3": round(1e3 * kid_real["kid"], 3),
        "kid_train_se_x1e3": round(1e3 * kid_real["kid_se"], 3),
        "kid_ratio": None if np.isnan(ratio) else round(float(ratio), 3), "kid_goal": KID_GOAL,
        "kid_goal_met": bool(ratio <= KID_GOAL),
        "gen_nearest_median": round(float(np.median(d_gen)), 3),
        "val_nearest_median": round(float(np.median(d_val)), 3),
        "val_nearest_min": round(float(d_val.min()), 3), "share_below_closest_val": round(share, 4),
        "share_below_own_val": round(float(np.mean(d_gen < d_val)), 4), "share_goal": SHARE_GOAL,
        "share_goal_met": bool(share <= SHARE_GOAL),
        "arrays": {"d_gen": d_gen, "i_gen": i_gen, "d_val": d_val, "i_val": i_val},
    }


def figures(result: dict, train_images: np.ndarray, fig_dir, save_figure, pyplot, n_pairs: int = 6) -> None:
    """``memorisation.png`` (both distance distributions, the closest val distance marked) and
    ``nearest_pairs.png`` (the ``n_pairs`` generated images nearest to a training image, each over that image)."""
    a = result["arrays"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    bins = np.linspace(min(a["d_gen"].min(), a["d_val"].min()), max(a["d_gen"].max(), a["d_val"].max()), 30)
    ax.hist(a["d_val"], bins=bins, alpha=0.55, label=f"real val frames (n = {len(a['d_val'])})")
    ax.hist(a["d_gen"], bins=bins, alpha=0.55,
            label=f"plain ControlNet samples of the same maps (n = {len(a['d_gen'])})")
    ax.axvline(a["d_val"].min(), color="k", ls="--", lw=1, label="closest val frame to any training frame")
    ax.set_xlabel("Inception-feature distance to the nearest of the training frames")
    ax.set_ylabel("images")
    ax.set_title(f"Memorisation check: {100 * result['share_below_closest_val']:.1f} % of samples left of the dashed "
                 "line (goal <= 5 %)", fontsize=9)
    ax.legend(fontsize=9)
    fig.tight_layout()
    save_figure(fig, fig_dir / "memorisation.png")

    order = np.argsort(a["d_gen"])[:n_pairs]
    fig, axes = plt.subplots(2, len(order), figsize=(2.2 * len(order), 4.6), squeeze=False,
                             layout="constrained")  # room for the titles between the rows
    for c, g in enumerate(order):
        axes[0, c].imshow(a["generated"][g])
        axes[0, c].set_title(f"sample of val map {g}\ndistance {a['d_gen'][g]:.1f}", fontsize=9)
        axes[1, c].imshow(train_images[a["i_gen"][g]])
        axes[1, c].set_title(f"nearest training\nframe {a['i_gen'][g]}", fontsize=9)
        for r in range(2):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    fig.suptitle("The generated images nearest to a training frame (top) and that frame (bottom)", fontsize=9)
    save_figure(fig, fig_dir / "nearest_pairs.png")
