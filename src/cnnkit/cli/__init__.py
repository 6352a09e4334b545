"""The ``cnnkit`` command line. Each sub-command lives in its own module with a ``register`` function.

To add a command: write ``cnnkit/cli/NAME.py`` with ``register(subparsers) -> None`` that adds a parser
and sets ``func=run`` (``run(args) -> int``), then add its module name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cnnkit import __version__

# Sub-command modules in the order ``cnnkit --help`` lists them.
COMMANDS = ["demo", "train", "evaluate", "predict", "models", "summary", "filters", "finetune"]


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="Deep computer vision with CNNs, on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cnnkit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, OSError, ValueError) as exc:  # user-fixable: no traceback
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
