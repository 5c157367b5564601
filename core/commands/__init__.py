"""Sub-commands of the ``handles-studio`` command line, one module each group.

Each module defines ``register(subparsers)`` which adds its sub-commands; a sub-command's
``func(args) -> int`` does the work. Modules must import heavy libraries lazily inside ``func``.
"""

#: modules whose ``register`` is called, in help order
COMMAND_MODULES = [
    "core.commands.project",  # sample, import-scene, export-transforms, info
    "core.commands.preview",  # preview
    "core.commands.ml",  # models, depth
    "core.ml.handles.cli",  # render
]


def long_side_arg(text: str) -> int:
    """argparse ``type=`` of ``--long-side``: the working resolution's long side, checked by
    :func:`core.io.check_long_side` (a bad value is a usage error: exit code 2, one line)."""
    import argparse

    from core.errors import InputError
    from core.io import check_long_side

    try:
        return check_long_side(text.strip())
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


#: the help of ``--long-side``, sharing its range with ``core.io`` (kept light to import: no numpy here)
LONG_SIDE_RANGE = "64 to 1536"
