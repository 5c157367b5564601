"""Handles Studio launcher: ``handles-studio`` opens the editor, ``handles-studio CMD ...`` runs the CLI.

``python main.py``                 the editor on the built-in sample scene
``python main.py photo.jpg``       the editor on a photo, project (.handles) or scene folder
``python main.py COMMAND ...``     a headless command (see ``--help``)
"""

from __future__ import annotations

import sys


def _is_cli(argv: list[str]) -> bool:
    if not argv:
        return False
    first = argv[0]
    if first in ("-h", "--help", "--version"):
        return True
    if first == "--debug":
        return _is_cli(argv[1:])
    if not first.startswith("-") and _is_unknown_word(first):
        return True  # not a command, not a file: let the CLI say so (usage error, exit 2)
    from core.cli import build_parser

    subparsers = build_parser()._subparsers  # noqa: SLF001 - argparse has no public API for this
    if subparsers is None:
        return False
    commands = set()
    for action in subparsers._group_actions:  # noqa: SLF001
        commands.update(getattr(action, "choices", {}) or {})
    return first in commands


def _is_unknown_word(arg: str) -> bool:
    """A bare word (no folder separator, no file extension) that names no existing file or folder:
    a mistyped command rather than a photo, project or scene folder to open."""
    from pathlib import Path

    if "/" in arg or "\\" in arg or Path(arg).suffix:
        return False  # a path: the editor opens it (and reports a missing one)
    try:
        return not Path(arg).expanduser().exists()
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_cli(argv):
        from core.cli import main as cli_main

        return cli_main(argv)
    from editor.app import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
