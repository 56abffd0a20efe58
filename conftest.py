"""Test environment for everything pytest runs, the notebooks under nbval included (also when they are
run alone, e.g. ``pytest notebooks/00_quickstart.ipynb``): offline hub, smoke-sized notebooks, one thread."""
import os

# Before anything starts a notebook kernel or imports the hub clients.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["SCP_SMOKE"] = "1"  # notebooks under nbval run with smoke-sized counts into reports/_smoke/
os.environ.setdefault("MPLBACKEND", "Agg")
# The test models are tiny: one thread is faster than two (thread overhead dominates), and
# kernels / subprocesses inherit these.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["SCP_THREADS"] = "1"

# Real weights (TAEF2, LPIPS) for the tests that need them: the shared weights folder beside the repository,
# where present; those tests skip with the reason otherwise.
_SHARED_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "weights")
if os.path.isdir(_SHARED_WEIGHTS):
    os.environ["SCP_WEIGHTS_DIR"] = os.path.normpath(_SHARED_WEIGHTS)

import torch  # noqa: E402

torch.set_num_threads(1)
