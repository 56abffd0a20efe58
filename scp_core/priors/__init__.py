"""Noise priors: the paper's (Eqs. 5-8), those that keep global factors, their numpy definitions, their files.

* :mod:`.scp` -- the normal, spatial, categorical and joint priors (Eqs. 5-8; Eq. 6, the noising to
  step muT, is the sampler's: ``scp_core.sampling.noise_to_step``); :mod:`.accumulator` -- their exact
  streaming statistics.
* :mod:`.global_factor` -- priors that keep each image's global factor (joint + global factor,
  mixture of joint priors); :mod:`.signal_leak` -- the signal-leak initialisation; both are
  compared in notebook 08; :mod:`.gaussian` -- the streamed full-covariance Gaussian they share.
* :mod:`.definitions` -- the three SCP priors as their few-line numpy definitions (the reference
  the accumulator is tested against).
* :mod:`.files` -- prior files: :data:`KINDS` (a file's ``kind`` -> its class), the format and
  its version, saving and :func:`load_prior`, which reads and checks any of them.

Label maps (``downsample_labels``, ``map_ignore``, ...) are :mod:`scp_core.labels`'. This
``__init__`` only re-exports; it also imports every module that defines a prior class, which
completes :data:`KINDS`.
"""
from __future__ import annotations

from .accumulator import PriorAccumulator
from .files import KINDS, load_prior, prior_digest
from .global_factor import GlobalJointPrior, MixtureJointPrior
from .scp import FALLBACKS, MIN_COUNT, CategoricalPrior, JointPrior, NormalPrior, Prior, SpatialPrior, cell_lookup
from .signal_leak import SignalLeakPrior

__all__ = [
    "cell_lookup", "FALLBACKS", "MIN_COUNT", "KINDS",
    "PriorAccumulator", "Prior", "NormalPrior", "SpatialPrior", "CategoricalPrior", "JointPrior",
    "GlobalJointPrior", "MixtureJointPrior", "SignalLeakPrior", "load_prior", "prior_digest",
]
