"""``scpdiff``, the study's command line: :func:`build_parser` and :func:`main` (:data:`DESCRIPTION` is its help).

The commands live in :mod:`.study` (``reproduce``, ``priors``, ``sample``), :mod:`.train` (``train``,
``finetune``) and :mod:`.outside` (``compose``, ``import-release``); :mod:`.args` holds the argument types
that refuse a bad value when parsed. Each command loads its models when it runs, never when the parser is built.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import _tv_compat  # noqa: F401
from .args import write_error
from .outside import add_compose, add_import_release
from .study import add_priors, add_reproduce, add_sample, command_settings
from .train import add_finetune, add_train

__all__ = ["DESCRIPTION", "build_parser", "command_settings", "main"]

DESCRIPTION = """\
    scpdiff reproduce --profile toy [--only NAME ...] [--smoke | --quick] [--with-training] [--eval-splits SPLIT ...]
    scpdiff train --profile toy [--small] [--resume latest]
    scpdiff finetune --base DIR --dataset cityscapes --root data/cityscapes --out DIR [...]
    scpdiff priors --profile toy --out DIR [--n 2000]
    scpdiff sample --profile toy --prior FILE --out DIR [--split val] [--n 100]
    scpdiff compose --base DIR --controlnet DIR --dataset ade20k --control ade20k --out DIR
    scpdiff import-release --dataset cityscapes [--checkpoint F --tokenizer D] [--stat-dir D --stat-name N] --out DIR

``priors``, ``sample`` and the notebooks that ``reproduce`` runs read their dataset, dataset options
(CamVid's hold-out), pipeline, splits and counts from one table, scp_core.study.settings; a flag
left out takes the table's value, so ``scpdiff priors --profile camvid`` builds its priors from the
study's reference set. ``priors`` and ``sample`` shard their work across processes under
``accelerate launch``; ``finetune`` splits every global batch across them. ``--device auto|cpu|cuda``
picks where each runs (``SCP_DEVICE`` sets the default; ``SCP_DTYPE`` the sampling dtype).

A value that can be checked before the run starts is refused then, in one line that names it and what is
allowed (exit status 2); an output that cannot be written (a full disk, a read-only folder, a file in the way)
ends the run with one line saying which and what to do (exit status 1).
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default: in the help's own words where it says "default", else appended."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scpdiff", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (add_reproduce, add_train, add_finetune, add_priors, add_sample, add_compose, add_import_release):
        add(sub)
    for command in sub.choices.values():  # every option's help shows its default
        command.formatter_class = _HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``scpdiff ARGV``. A refused value exits 2 (argparse) or returns 2 (a check made when the command starts);
    an output that cannot be written returns 1; each says why in one line on stderr, without a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if getattr(args, "root", None):  # a path given on the command line is relative to where it was typed
        args.root = os.path.abspath(args.root)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"scpdiff {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a file in the way; any other OSError is a bug to show
        line = write_error(args.cmd, e, getattr(args, "out", None))
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
