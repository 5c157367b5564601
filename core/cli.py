"""The headless command line (``handles-studio SUBCOMMAND ...``); core only, no Qt.

Exit codes: 0 success, 1 failure (one-line message on stderr; a traceback only with ``--debug``),
2 bad usage (argparse's usage message).

Warnings while a command runs: the program's own (``warnings.warn`` in ``core``, e.g. a damaged
settings file) are one line each, ``handles-studio: warning: ...``; those of libraries (NumPy,
Pillow, OpenEXR, torch...) go to the log file only, since the program turns the ones that mean
something into its own messages where they arise. ``--debug`` shows every warning as Python does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import core
from core.commands import COMMAND_MODULES
from core.errors import HandlesError

PROG = "handles-studio"

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Handles Studio: move objects in a photo in 3D. Without a sub-command, opens the editor.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {core.__version__}")
    parser.add_argument("--debug", action="store_true", help="print a traceback on failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group not built yet in this checkout
            if not (exc.name and (name == exc.name or name.startswith(exc.name + "."))):
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for bad usage
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from core.logs import setup_logging  # only for a command: --help and --version write no log

    setup_logging()
    log.info("%s %s: %s", PROG, core.__version__, " ".join(argv))
    t0 = time.monotonic()
    try:
        with _warnings_as_lines(debug=bool(args.debug)):
            code = int(args.func(args) or 0)
        log.info("%s finished with exit code %d in %.2f s", args.command, code, time.monotonic() - t0)
        return code
    except KeyboardInterrupt:
        log.info("%s interrupted after %.2f s", args.command, time.monotonic() - t0)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (HandlesError, ValueError, KeyError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = msg.strip("'\"")
        log.info("%s failed: %s", args.command, msg, exc_info=True)
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: still one line
        if args.debug:
            traceback.print_exc()
        log.error("%s failed unexpectedly", args.command, exc_info=True)
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


#: the program's own packages: a warning issued from a file in one of them is shown (one line)
_OWN_PACKAGES = ("core", "editor", "viewport", "training", "benchmarks")
_ROOT = Path(__file__).resolve().parent.parent


def _own(filename: str) -> bool:
    try:
        rel = Path(filename).resolve().relative_to(_ROOT)
    except (ValueError, OSError):
        return False
    return len(rel.parts) > 1 and rel.parts[0] in _OWN_PACKAGES


@contextmanager
def _warnings_as_lines(debug: bool) -> Iterator[None]:
    """While a command runs: every warning is logged; the program's own are printed as one line,
    a library's only with ``--debug`` (then as Python prints them). See the module docstring."""
    previous = warnings.showwarning
    logger = logging.getLogger("py.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        logger.warning("%s:%s: %s: %s", filename, lineno, category.__name__, text)
        try:
            if debug:
                sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
            elif _own(filename):
                print(f"{PROG}: warning: {text}", file=sys.stderr)
        except (OSError, ValueError, AttributeError):  # no usable stderr: the log has it
            pass

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
