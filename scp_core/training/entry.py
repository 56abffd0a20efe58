"""One entry point for training a profile's stack (what ``scpdiff train`` calls): :func:`train_profile` picks the
function that trains it -- the toy stacks of :mod:`.toy`, the real-image stacks of :mod:`.camvid` on their
recipes (:mod:`.recipes`) -- and refuses, before anything is loaded, an option the profile does not take.

* :data:`TRAIN_PROFILES` -- the profiles that train here (the toy ones, then every recipe's);
* :data:`TRAIN_OPTIONS` -- every option and its default (the value that means "not given");
* :data:`TAKES` -- the options each profile takes.
"""
from __future__ import annotations

from ..io import REPO_ROOT
from .recipes import RECIPES, TOY_SMALL, recipe_for

TOY_PROFILES = ("toy", "toy-gv", "toy-locked", "toy-seed")
TRAIN_PROFILES = (*TOY_PROFILES, *RECIPES)
TRAIN_OPTIONS = {"small": False, "resume": None, "schedule": "sd", "stage": None, "seed": None, "out": None,
                 "work": None, "device": "auto", "data_root": None, "write_pack": None, "pack": None,
                 "report_only": False}
_RECIPE_OPTIONS = ("small", "resume", "seed", "out", "work", "device", "data_root", "write_pack", "pack", "report_only")
TAKES = {"toy": ("small", "resume", "schedule", "stage", "out"), "toy-gv": ("resume", "schedule", "seed", "out"),
         "toy-locked": ("resume", "out"), "toy-seed": ("seed", "resume", "out"),
         **{profile: _RECIPE_OPTIONS for profile in RECIPES}}
# where "an option of <profiles>" says too little
_WHY = {"schedule": "an experiment of the toy profiles (toy, toy-gv)"}


def _flag(name: str, value) -> str:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return flag
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"


def _check(profile: str, options: dict) -> dict:
    """Every option, given or default; an unknown profile or option, or one the profile does not take, refused."""
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise TypeError(f"train_profile() has no option(s) {unknown}; it takes {sorted(TRAIN_OPTIONS)}")
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"no training for profile {profile!r} here; choose from {', '.join(TRAIN_PROFILES)} "
                         "(for SD 2.1 use `scpdiff finetune`)")
    for name, value in options.items():
        if value != TRAIN_OPTIONS[name] and name not in TAKES[profile]:
            by = [p for p in TRAIN_PROFILES if name in TAKES[p]]
            why = _WHY.get(name, f"an option of {', '.join(by)} only")
            raise ValueError(f"{_flag(name, value)} is {why}; profile {profile!r} takes "
                             f"{', '.join('--' + n.replace('_', '-') for n in TAKES[profile])}")
    return {**TRAIN_OPTIONS, **options}


def train_profile(profile: str, **options):
    """Train (or resume) ``profile``'s stack; ``options`` are those of :data:`TRAIN_OPTIONS`.

    Returns the run's training facts (a dict), or the path written for ``write_pack`` (the training pack) and
    ``report_only`` (``REPORT.md`` rewritten). Raises ``ValueError`` for a profile that does not train here or an
    option it does not take (before any model or dataset is loaded).
    """
    o = _check(profile, options)
    if profile in RECIPES:
        return _recipe(profile, o)
    return {"toy": _toy, "toy-gv": _toy_gv, "toy-locked": _toy_locked, "toy-seed": _toy_seed}[profile](o)


def _toy(o: dict) -> dict:
    from .toy import PIPELINE_DIR, runs_dir, train_toy_stack  # the toy stacks load the datasets and the pipeline

    # another schedule shares the committed stack's VAE (runs/toy): by default it trains UNet and ControlNet only
    default_stages = ("vae", "unet", "controlnet") if o["schedule"] == "sd" else ("unet", "controlnet")
    stages = tuple(o["stage"]) if o["stage"] else default_stages
    name = "toy-small" if o["small"] else "toy"
    work = runs_dir(name, o["schedule"])
    default_out = PIPELINE_DIR if (o["schedule"] == "sd" and not o["small"]) else work / "pipeline"
    return train_toy_stack(TOY_SMALL if o["small"] else None, out=o["out"] or default_out, resume=o["resume"],
                           stages=stages, work=work, report=not o["small"], schedule=o["schedule"],
                           vae_work=runs_dir(name))


def _toy_gv(o: dict) -> dict:
    from .toy import (GV_PIPELINE_DIR, GV_ZERO_SNR_PIPELINE_DIR, RUNS, runs_dir, train_toy_gv,  # as in _toy
                      train_toy_seed)

    if o["seed"] is not None:  # the toy-gv ControlNet stage again, another training seed
        if o["schedule"] != "sd":
            raise ValueError("--seed trains toy-gv's ControlNet stage on SD's schedule; leave --schedule out")
        return train_toy_seed(o["seed"], **({"out": o["out"]} if o["out"] else {}), resume=o["resume"], stack="toy-gv")
    out = o["out"] or (GV_PIPELINE_DIR if o["schedule"] == "sd" else GV_ZERO_SNR_PIPELINE_DIR)
    return train_toy_gv(out=out, resume=o["resume"], schedule=o["schedule"], base_work=runs_dir("toy", o["schedule"]),
                        vae_work=RUNS, work=runs_dir("toy-gv", o["schedule"]))


def _toy_seed(o: dict) -> dict:
    from .toy import train_toy_seed  # as in _toy

    # the daylight ControlNet stage again, another training seed
    return train_toy_seed(o["seed"] or 1, **({"out": o["out"]} if o["out"] else {}), resume=o["resume"])


def _toy_locked(o: dict) -> dict:
    from .toy import train_toy_locked  # as in _toy

    return train_toy_locked(**({"out": o["out"]} if o["out"] else {}), resume=o["resume"])


def _recipe(profile: str, o: dict):
    """Real images: base UNet, ControlNet and segmenter on the pretrained TAEF2 (or a training pack, or the report
    of a finished run again)."""
    from .camvid import rewrite_report, train_controlnet_seed, train_stack, write_training_pack  # datasets, TAEF2

    small = REPO_ROOT / "runs" / f"{profile}-small"
    work = o["work"] or (small if o["small"] else None)
    out = o["out"] or (small / "zoo" if o["small"] else None)
    limit = 8 if o["small"] else None
    # cuda takes the one-GPU recipe (GPU_RECIPES): wider networks, bf16, EMA, a time budget
    recipe = recipe_for(profile, small=o["small"], gpu=str(o["device"]).partition(":")[0] == "cuda")
    if o["write_pack"]:
        return write_training_pack(o["write_pack"], profile, data_root=o["data_root"], work=work, recipe=recipe,
                                   limit=limit)
    if o["seed"] is not None:  # the ControlNet stage again, another training seed, on the stack's base UNet
        for name in ("write_pack", "pack", "report_only"):
            if o[name] != TRAIN_OPTIONS[name]:
                raise ValueError(f"--seed trains the ControlNet stage of {profile} again; it does not take "
                                 f"{_flag(name, o[name])} (run that without --seed)")
        return train_controlnet_seed(profile, o["seed"], out=o["out"], work=work, data_root=o["data_root"],
                                     resume=o["resume"], recipe=recipe, limit=limit,
                                     device=None if o["device"] == "auto" else o["device"])
    if o["report_only"]:
        return rewrite_report(profile, out=out, work=work, data_root=o["data_root"], recipe=recipe)
    return train_stack(profile, out=out, work=work, data_root=o["data_root"], resume=o["resume"], recipe=recipe,
                       limit=limit, device=None if o["device"] == "auto" else o["device"], pack=o["pack"])
