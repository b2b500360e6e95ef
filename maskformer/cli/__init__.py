"""The `maskformer` command line. Each subcommand parses its arguments and calls the package;
no logic of its own lives here. User errors (`maskformer.errors.MaskFormerError`, a missing
file) are one `error:` line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

from maskformer.cli import convert, data, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskformer", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from maskformer import __version__

    parser.add_argument("--version", action="version", version=f"maskformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    convert.add_subcommands(sub)
    data.add_subcommands(sub)
    run.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from maskformer.errors import MaskFormerError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MaskFormerError as e:
        print(f"maskformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing input, an unwritable output folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"maskformer {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskformer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
