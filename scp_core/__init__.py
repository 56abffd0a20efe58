"""scp_core: the machinery of the SCP-Diff study (priors, samplers, models, data, metrics).

The torchvision compatibility shim is imported first so that diffusers, lpips and
pytorch-fid import on a CPU-only torch (docs/method.md, section 5).
"""
from . import _tv_compat  # noqa: F401  (must run before anything imports torchvision)

__version__ = "0.1.0"
