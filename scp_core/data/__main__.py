"""``python -m scp_core.data``: generate toy-city (both settings) and its sample grid."""
from __future__ import annotations

import argparse
import time

from .base import resolve_root
from .figures import save_toy_city_samples
from .toy_city import ensure_toy_city


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scp_core.data", description=__doc__)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--figure", default="reports/toy/figures/toy_city_samples.png",
                   help="sample grid PNG (relative to the repository root); '' to skip")
    args = p.parse_args(argv)
    for root, gv in (("data/toy-city", 0.0), ("data/toy-city-gv", 1.0)):
        t = time.perf_counter()
        path = ensure_toy_city(root, n_train=args.n_train, n_val=args.n_val, global_variation=gv)
        print(f"{path}: ready in {time.perf_counter() - t:.1f} s")
    if args.figure:
        print(save_toy_city_samples(resolve_root(args.figure), seed=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
