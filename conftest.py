"""Test environment for everything pytest runs, the notebooks under nbval included (also when they are
run alone, e.g. ``pytest notebooks/00_quickstart.ipynb``): offline hub, smoke-sized notebooks, one thread."""
import os

# Before anything starts a notebook kernel or imports the hub clients.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["SCP_SMOKE"] = "1"  # notebooks under nbval run with smoke-sized counts into reports/_smoke/
os.environ["SCP_QUICK"] = "0"  # an exported SCP_QUICK=1 (a quick run) would clash with smoke runs
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
# The per-user cache (the LPIPS weights `bootstrap.py setup` converts) stays out of the tests, so that a test
# that hides the weights folder finds LPIPS missing on every machine; it points at a folder nothing writes to.
# The user's own SCP_CACHE_DIR, if any, is kept in SCP_USER_CACHE_DIR for tests/test_lpips_offline.py.
if os.environ.get("SCP_CACHE_DIR") and "SCP_USER_CACHE_DIR" not in os.environ:
    os.environ["SCP_USER_CACHE_DIR"] = os.environ["SCP_CACHE_DIR"]
os.environ["SCP_CACHE_DIR"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".pytest_cache", "no-user-cache")

import torch  # noqa: E402

torch.set_num_threads(1)
