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
    from core.cli import build_parser

    commands = set()
    for action in build_parser()._subparsers._group_actions:  # noqa: SLF001 - argparse has no public API for this
        commands.update(getattr(action, "choices", {}) or {})
    return first in commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_cli(argv):
        from core.cli import main as cli_main

        return cli_main(argv)
    from editor.app import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
