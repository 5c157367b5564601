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
