"""Undo and redo for every change to a document, with a memory-bounded history.

Each command stores *absolute* before/after values (a transform, a mask patch, a name...), so
applying ``redo`` or ``undo`` twice is harmless and commands can be rebuilt; this is what lets
:class:`BoundedUndoStack` forget the oldest steps when mask data exceeds its byte budget (Qt's
``setUndoLimit`` only bounds the number of steps, and only on an empty stack).

A command created for a change the UI has already made (the end of a drag, a finished brush
stroke) is created with ``applied=True``: its first ``redo`` (run by ``QUndoStack.push``) is skipped.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QUndoCommand, QUndoStack

from core.scene import SceneObject
from core.transform import Transform3D

# Consecutive edits of the same text or setting form one step. The merge is done here, not with
# QUndoCommand.id()/mergeWith(): QUndoStack deletes the merged command, and PySide then releases a
# Python object it does not own (a crash at the next garbage collection).


class _Command(QUndoCommand):
    """Base: the skip-first-redo flag, a byte size for the budget and cloning for the trim.

    ``merge_key``: commands with the same non-None key pushed one after another merge
    (:meth:`absorb`) into one undo step.
    """

    merge_key: str | None = None

    def __init__(self, model, text: str, applied: bool = False) -> None:
        super().__init__(text)
        self.model = model
        self._skip_redo = bool(applied)

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
            return
        self.apply_redo()

    def undo(self) -> None:
        self.apply_undo()

    def apply_redo(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_undo(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes of array data this command holds (counted against the history's budget)."""
        return 0

    def clone(self) -> _Command:  # pragma: no cover - abstract
        raise NotImplementedError


class TransformCommand(_Command):
    """An object's transform from ``old`` to ``new`` (one whole drag, or one numeric edit)."""

    def __init__(self, model, obj_id: str, old: Transform3D, new: Transform3D, text: str = "", applied: bool = False):
        name = model.scene.object_by_id(obj_id).name
        super().__init__(model, text or f"Transform {name}", applied)
        self.obj_id, self.old, self.new = obj_id, old, new

    def apply_redo(self) -> None:
        self.model.set_transform(self.obj_id, self.new)

    def apply_undo(self) -> None:
        self.model.set_transform(self.obj_id, self.old)

    def clone(self):
        return TransformCommand(self.model, self.obj_id, self.old, self.new, self.text())


class VariantCommand(_Command):
    """Store (or replace) the named variant ``name``: a set of object transforms by object name."""

    def __init__(self, model, name: str, transforms: dict, text: str = ""):
        super().__init__(model, text or f"Store variant {name}")
        self.name = name
        self.new = dict(transforms)
        old = model.scene.variants.get(name)
        self.old = None if old is None else dict(old)

    def apply_redo(self) -> None:
        self.model.set_variant(self.name, self.new)

    def apply_undo(self) -> None:
        self.model.set_variant(self.name, self.old)

    def clone(self):
        c = VariantCommand(self.model, self.name, self.new, self.text())
        c.old = self.old
        return c


def _bbox(diff: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(diff.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class _PackedMask:
    """A boolean array packed 8 pixels per byte."""

    __slots__ = ("bits", "shape")

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.shape = mask.shape
        self.bits = np.packbits(mask, axis=None)

    def unpack(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.bits, count=n).astype(bool).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)


class MaskCommand(_Command):
    """An object's mask from ``old`` to ``new`` (one stroke, lasso, fill, feather...).

    Only the bounding box of the changed pixels is kept, packed 8 pixels per byte.
    """

    def __init__(self, model, obj_id: str, old: np.ndarray, new: np.ndarray, text: str = "Edit mask", applied: bool = False):
        super().__init__(model, text, applied)
        old = np.asarray(old, dtype=bool)
        new = np.asarray(new, dtype=bool)
        if old.shape != new.shape:
            raise ValueError(f"mask shapes differ: {old.shape} vs {new.shape}")
        self.obj_id = obj_id
        self.shape = old.shape
        self.box = _bbox(old != new)
        if self.box is None:
            self.box = (slice(0, 0), slice(0, 0))
        self.old = _PackedMask(old[self.box])
        self.new = _PackedMask(new[self.box])

    @property
    def changed(self) -> bool:
        return self.box[0].stop > self.box[0].start

    def _set(self, patch: _PackedMask) -> None:
        obj = self.model.scene.object_by_id(self.obj_id)
        mask = obj.mask.copy()
        mask[self.box] = patch.unpack()
        self.model.set_mask(self.obj_id, mask)

    def apply_redo(self) -> None:
        self._set(self.new)

    def apply_undo(self) -> None:
        self._set(self.old)

    @property
    def nbytes(self) -> int:
        return self.old.nbytes + self.new.nbytes

    def clone(self):
        c = MaskCommand.__new__(MaskCommand)
        _Command.__init__(c, self.model, self.text())
        c.obj_id, c.shape, c.box, c.old, c.new = self.obj_id, self.shape, self.box, self.old, self.new
        return c


class AddObjectCommand(_Command):
    """Add ``obj`` at ``index`` (end when None)."""

    def __init__(self, model, obj: SceneObject, index: int | None = None, text: str = "", applied: bool = False):
        super().__init__(model, text or f"Add {obj.name}", applied)
        self.obj = obj
        self.index = len(model.scene.objects) if index is None else index
        self._packed = _PackedMask(obj.mask)

    def apply_redo(self) -> None:
        if any(o.id == self.obj.id for o in self.model.scene.objects):
            return
        self.model.insert_object(self.index, self.obj)

    def apply_undo(self) -> None:
        if any(o.id == self.obj.id for o in self.model.scene.objects):
            self.model.remove_object(self.obj.id)

    @property
    def nbytes(self) -> int:
        return self._packed.nbytes

    def clone(self):
        return AddObjectCommand(self.model, self.obj, self.index, self.text())


class RemoveObjectCommand(_Command):
    def __init__(self, model, obj_id: str, text: str = ""):
        obj = model.scene.object_by_id(obj_id)
        super().__init__(model, text or f"Delete {obj.name}")
        self.obj = obj
        self.index = model.object_index(obj_id)
        self._packed = _PackedMask(obj.mask)

    def apply_redo(self) -> None:
        if any(o.id == self.obj.id for o in self.model.scene.objects):
            self.index, self.obj = self.model.remove_object(self.obj.id)

    def apply_undo(self) -> None:
        if not any(o.id == self.obj.id for o in self.model.scene.objects):
            self.model.insert_object(self.index, self.obj)

    @property
    def nbytes(self) -> int:
        return self._packed.nbytes

    def clone(self):
        c = RemoveObjectCommand.__new__(RemoveObjectCommand)
        _Command.__init__(c, self.model, self.text())
        c.obj, c.index, c._packed = self.obj, self.index, self._packed
        return c


class RenameObjectCommand(_Command):
    def __init__(self, model, obj_id: str, new_name: str, text: str = ""):
        obj = model.scene.object_by_id(obj_id)
        new_name = new_name.strip()
        if not new_name:
            raise ValueError("an object name cannot be empty")
        if any(o.name == new_name and o.id != obj_id for o in model.scene.objects):
            raise ValueError(f"an object named {new_name!r} already exists; choose another name")
        super().__init__(model, text or f"Rename {obj.name} to {new_name}")
        self.obj_id, self.old, self.new = obj_id, obj.name, new_name

    def apply_redo(self) -> None:
        self.model.rename_object(self.obj_id, self.new)

    def apply_undo(self) -> None:
        self.model.rename_object(self.obj_id, self.old)

    def clone(self):
        c = RenameObjectCommand.__new__(RenameObjectCommand)
        _Command.__init__(c, self.model, self.text())
        c.obj_id, c.old, c.new = self.obj_id, self.old, self.new
        return c


class VisibilityCommand(_Command):
    def __init__(self, model, obj_id: str, visible: bool, text: str = ""):
        obj = model.scene.object_by_id(obj_id)
        super().__init__(model, text or f"{'Show' if visible else 'Hide'} {obj.name}")
        self.obj_id, self.old, self.new = obj_id, bool(obj.visible), bool(visible)

    def apply_redo(self) -> None:
        self.model.set_visible(self.obj_id, self.new)

    def apply_undo(self) -> None:
        self.model.set_visible(self.obj_id, self.old)

    def clone(self):
        c = VisibilityCommand.__new__(VisibilityCommand)
        _Command.__init__(c, self.model, self.text())
        c.obj_id, c.old, c.new = self.obj_id, self.old, self.new
        return c


class PromptCommand(_Command):
    """The prompt from ``old`` to ``new``; consecutive prompt edits merge into one step."""

    def __init__(self, model, old: str, new: str, applied: bool = False):
        super().__init__(model, "Edit prompt", applied)
        self.old, self.new = old, new

    merge_key = "prompt"

    def absorb(self, other: PromptCommand) -> None:
        self.new = other.new

    def apply_redo(self) -> None:
        self.model.set_prompt(self.new)

    def apply_undo(self) -> None:
        self.model.set_prompt(self.old)

    def clone(self):
        return PromptCommand(self.model, self.old, self.new)


class SettingCommand(_Command):
    """A render setting (steps, seed, preset, model, foreground, background) from old to new.

    Consecutive changes of the same setting (a slider being dragged) merge into one step.
    """

    LABELS = {
        "steps": "steps",
        "seed": "seed",
        "preset": "quality",
        "model": "model",
        "foreground": "foreground preservation",
        "background": "background preservation",
    }

    def __init__(self, model, key: str, old, new, applied: bool = False):
        super().__init__(model, f"Change {self.LABELS.get(key, key)}", applied)
        self.key, self.old, self.new = key, old, new

    @property
    def merge_key(self) -> str:
        return f"setting:{self.key}"

    def absorb(self, other: SettingCommand) -> None:
        self.new = other.new

    def apply_redo(self) -> None:
        self.model.set_render_setting(self.key, self.new)

    def apply_undo(self) -> None:
        self.model.set_render_setting(self.key, self.old)

    def clone(self):
        return SettingCommand(self.model, self.key, self.old, self.new)


def _copy_locks(locks) -> dict:
    return {str(k): dict(v) for k, v in (locks or {}).items() if isinstance(v, dict)}


class LockCommand(_Command):
    """The document's identity locks (``render_settings["locks"]``: object id -> record, see
    :mod:`core.locks`) from ``old`` to ``new``: a lock learnt, switched on or off, or removed.
    Never merged with the next one: each is its own step. The lock's bytes stay in the project's
    caches either way, so undo and redo only switch which record points at them
    (:meth:`caches` names those a step can bring back)."""

    def __init__(self, model, old, new, text: str, applied: bool = False):
        super().__init__(model, text, applied)
        self.old, self.new = _copy_locks(old), _copy_locks(new)

    def apply_redo(self) -> None:
        self.model.set_render_setting("locks", _copy_locks(self.new))

    def apply_undo(self) -> None:
        self.model.set_render_setting("locks", _copy_locks(self.old))

    def caches(self) -> set[str]:
        """The cache names of the lock bytes either side of this step refers to."""
        return {str(r.get("cache")) for side in (self.old, self.new) for r in side.values() if r.get("cache")}

    def clone(self):
        return LockCommand(self.model, self.old, self.new, self.text())


class BoundedUndoStack(QUndoStack):
    """A QUndoStack bounded in steps (``limit``) and in bytes of mask data (``byte_budget``).

    When the commands up to the current index hold more than ``byte_budget`` bytes, the oldest are
    forgotten: the stack is rebuilt from clones of the rest (their first redo skipped, so the
    document does not change). The clean state survives when it is still reachable.
    """

    def __init__(self, limit: int = 200, byte_budget: int = 128 << 20, parent=None) -> None:
        super().__init__(parent)
        self.setUndoLimit(int(limit))
        self.byte_budget = int(byte_budget)
        #: number of steps forgotten because of the byte budget (for the status bar and tests)
        self.trimmed = 0

    def commands(self) -> list:
        return [self.command(i) for i in range(self.count())]

    def bytes_used(self) -> int:
        return sum(int(getattr(c, "nbytes", 0)) for c in self.commands())

    def push(self, cmd: QUndoCommand) -> None:  # noqa: D401 - Qt API
        key = getattr(cmd, "merge_key", None)
        i = self.index()
        if key is not None and i > 0 and i == self.count() and i != self.cleanIndex():
            top = self.command(i - 1)
            if getattr(top, "merge_key", None) == key and hasattr(top, "absorb") and top.childCount() == 0:
                cmd.redo()
                top.absorb(cmd)
                return
        super().push(cmd)
        self._trim()

    def _trim(self) -> None:
        cmds = self.commands()[: self.index()]
        sizes = [int(getattr(c, "nbytes", 0)) for c in cmds]
        total = sum(sizes)
        if total <= self.byte_budget:
            return
        drop = 0
        while drop < len(cmds) - 1 and total > self.byte_budget:
            total -= sizes[drop]
            drop += 1
        if drop == 0:
            return
        was_clean = self.isClean()
        clones = [c.clone() for c in cmds[drop:]]
        self.clear()
        for c in clones:
            c._skip_redo = True
            super().push(c)
        if was_clean:
            self.setClean()
        else:
            self.resetClean()
        self.trimmed += drop
