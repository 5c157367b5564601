"""Exceptions with one-line, user-facing messages.

Every error a user can cause (a bad file, a bad argument, a missing model) is raised as a
:class:`HandlesError` subclass whose ``str()`` is one line that says what is wrong and what to do.
The CLI prints it and exits 1; the editor shows it in its banner.
"""

from __future__ import annotations


class HandlesError(Exception):
    """Base class of all user-facing errors (one-line message)."""


class InputError(HandlesError):
    """A file or value given by the user is unusable (bad image, bad depth, bad transform...)."""


class ProjectError(HandlesError):
    """A project file cannot be read or written."""


class ModelError(HandlesError):
    """A model is missing, incomplete or cannot be loaded.

    ``fetch_command``: when the model is simply not on disk, the command that fetches it (the UI
    offers to copy it); empty otherwise.
    """

    def __init__(self, message: str = "", fetch_command: str = "") -> None:
        super().__init__(message)
        self.fetch_command = fetch_command


class RenderCancelled(HandlesError):  # noqa: N818 - a cancellation, not an error
    """Raised inside a render when its cancel token is set."""
