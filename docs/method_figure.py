"""Draw ``docs/method.png``: SCP-Diff's inference in one picture, from the committed toy zoo.

    python docs/method_figure.py

The joint prior of 500 toy-city training images (notebook 00's count), the first validation map,
seed 0, mu = 0.8 and 20 DDIM steps: the same numbers give the same picture. Prior statistics are
cached under ``reports/_scratch/method_figure/`` (git-ignored), never in a reference report.
"""
from __future__ import annotations

import sys

from scp_core import study
from scp_core.io import REPO_ROOT

OUT = REPO_ROOT / "docs" / "method.png"


def main() -> int:
    s = study.settings("toy", smoke=False, quick=False, notebook="00_quickstart",
                       out_dir=str(REPO_ROOT / "reports" / "_scratch" / "method_figure"))
    pipe = study.load_pipeline(s)
    priors = study.build_priors(s, save=False)
    _, labels = study.eval_set(s)
    parts = study.method_parts(pipe, priors["joint"], labels[0], mu=s.mu, steps=s.steps, seed=s.seed,
                               guidance=s.guidance)
    study.method_figure(**parts, path=OUT)
    print(f"wrote {OUT.relative_to(REPO_ROOT)}: t_start = {parts['timesteps'][0]}, "
          f"alpha_bar = {parts['alpha_bar']:.3f}, {len(parts['timesteps'])} of {parts['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
