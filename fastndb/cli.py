"""Command line: ``fastndb demo`` (more subcommands arrive with the CLI issue)."""

from __future__ import annotations

import argparse
import sys

from fastndb import __version__


def _demo(args: argparse.Namespace) -> int:
    from fastndb.demo import format_rows, run_digits_demo

    rows = run_digits_demo(num_bins=args.num_bins, num_fake=args.num_fake, seed=args.seed)
    print("NDB on scikit-learn's 8x8 digits: 1000 real digits vs generators that resample other digits")
    print(f"(K={args.num_bins} bins, alpha=0.05, holdout mode: about alpha*K bins differ by chance)\n")
    print(format_rows(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastndb", description="Mode-collapse tests for generative models.")
    parser.add_argument("--version", action="version", version=f"fastndb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="score generators that drop digits against real digits")
    demo.add_argument("--num-bins", type=int, default=10)
    demo.add_argument("--num-fake", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastndb`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ModuleNotFoundError) as err:
        print(f"fastndb: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
