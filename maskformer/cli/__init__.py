"""The `maskformer` command line. Each subcommand parses its arguments and calls the package;
no logic of its own lives here. User errors (`maskformer.errors.MaskFormerError`, a missing
file) are one `error:` line on stderr and exit code 2, never a traceback. TensorFlow's start-up
and C++ log messages are hidden unless `--verbose` is given."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile

from maskformer.cli import convert, data, export, run
from maskformer.cli.common import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskformer", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    from maskformer import __version__

    parser.add_argument("--version", action="version", version=f"maskformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    convert.add_subcommands(sub)
    data.add_subcommands(sub)
    export.add_subcommands(sub)
    run.add_subcommands(sub)
    return parser


@contextlib.contextmanager
def _quiet_stderr():
    """Sends what C++ code writes to file descriptor 2 to a temporary file; shows it only if
    the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow() -> None:
    """Hides TensorFlow's start-up noise: C++ log lines below FATAL, and what its libraries
    print while they load (oneDNN, CUDA, CPU instructions), which no log level silences."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if not level.isdigit() or int(level) < 3:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with _quiet_stderr():
        import tensorflow  # noqa: F401

        # XLA's CPU client prints its own start-up lines the first time it is made.
        tensorflow.config.list_logical_devices()


def main(argv: list[str] | None = None) -> int:
    from maskformer.errors import MaskFormerError

    args = build_parser().parse_args(argv)
    prog = getattr(args, "prog", f"maskformer {args.command}")
    if not getattr(args, "verbose", False) and args.command != "experiments":
        quiet_tensorflow()
    try:
        return int(args.func(args) or 0)
    except MaskFormerError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing input, an unwritable output folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
