"""The editor's observable document: every change to the scene goes through here and is announced.

:class:`DocumentModel` wraps a :class:`core.document.Document` and emits a Qt signal for each kind
of change, so panels, the photo view and the 3D view stay in sync whatever made the change (a
panel, a drag, an undo). Undo commands (``editor.undo``) call these methods; widgets never mutate
the scene directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.document import Document
from core.scene import SceneObject
from core.transform import Transform3D


class DocumentModel(QObject):
    #: the whole document was replaced (new photo, open, recover)
    documentReset = Signal()
    #: objects were added, removed, renamed, reordered or shown/hidden
    objectsChanged = Signal()
    #: an object's transform changed (object id)
    transformChanged = Signal(str)
    #: (object id) a transform proposed mid-drag was written (no undo step yet)
    transformPreviewed = Signal(str)
    #: an object's mask changed (object id)
    maskChanged = Signal(str)
    promptChanged = Signal(str)
    #: a render setting changed (key, value)
    renderSettingChanged = Signal(str, object)
    #: the render history changed
    rendersChanged = Signal()
    #: the selected object changed (object id or "")
    selectionChanged = Signal(str)
    #: the scene's named variants (sets of object transforms) changed
    variantsChanged = Signal()

    def __init__(self, document: Document, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self._selected = document.scene.objects[0].id if document.scene.objects else ""

    # ----- document -----
    @property
    def scene(self):
        return self.doc.scene

    def reset(self, document: Document) -> None:
        self.doc = document
        self._selected = document.scene.objects[0].id if document.scene.objects else ""
        self.documentReset.emit()
        self.selectionChanged.emit(self._selected)

    # ----- selection -----
    @property
    def selected_id(self) -> str:
        return self._selected

    def selected_object(self) -> SceneObject | None:
        if not self._selected:
            return None
        try:
            return self.scene.object_by_id(self._selected)
        except KeyError:
            return None

    def select(self, obj_id: str) -> None:
        obj_id = obj_id or ""
        if obj_id and not any(o.id == obj_id for o in self.scene.objects):
            obj_id = ""
        if obj_id != self._selected:
            self._selected = obj_id
            self.selectionChanged.emit(obj_id)

    def object_index(self, obj_id: str) -> int:
        for i, o in enumerate(self.scene.objects):
            if o.id == obj_id:
                return i
        raise KeyError(f"no object with id {obj_id!r}")

    # ----- object edits (called by undo commands) -----
    def set_transform(self, obj_id: str, transform: Transform3D) -> None:
        obj = self.scene.object_by_id(obj_id)
        if obj.transform != transform:
            obj.transform = transform
        self.transformChanged.emit(obj_id)

    def preview_transform(self, obj_id: str, transform: Transform3D) -> None:
        """A transform proposed mid-drag: written (the one writer of transforms is this model)
        without an undo step; views that draw the object follow (``transformPreviewed``)."""
        self.scene.object_by_id(obj_id).transform = transform
        self.transformPreviewed.emit(obj_id)

    def set_variant(self, name: str, transforms: dict | None) -> None:
        """Store ``transforms`` (object name -> Transform3D) as variant ``name``; None removes it."""
        if transforms is None:
            self.scene.variants.pop(name, None)
        else:
            self.scene.variants[name] = dict(transforms)
        self.variantsChanged.emit()

    def set_mask(self, obj_id: str, mask: np.ndarray) -> None:
        obj = self.scene.object_by_id(obj_id)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != obj.mask.shape:
            raise ValueError(f"mask shape {mask.shape} does not match {obj.mask.shape}")
        # a new array, never an in-place edit: a render snapshot may still read the old one
        obj.mask = mask.copy()
        self.maskChanged.emit(obj_id)

    def insert_object(self, index: int, obj: SceneObject) -> None:
        index = max(0, min(index, len(self.scene.objects)))
        self.scene.objects.insert(index, obj)
        self.objectsChanged.emit()
        self.select(obj.id)

    def remove_object(self, obj_id: str) -> tuple[int, SceneObject]:
        i = self.object_index(obj_id)
        obj = self.scene.objects.pop(i)
        if self._selected == obj_id:
            rest = self.scene.objects
            self._selected = rest[min(i, len(rest) - 1)].id if rest else ""
            self.selectionChanged.emit(self._selected)
        self.objectsChanged.emit()
        return i, obj

    def rename_object(self, obj_id: str, name: str) -> None:
        obj = self.scene.object_by_id(obj_id)
        old = obj.name
        obj.name = name
        # variants name their objects: follow the rename (undo renames back the same way)
        for variant in self.scene.variants.values():
            if old in variant and old != name:
                variant[name] = variant.pop(old)
        self.objectsChanged.emit()

    def set_visible(self, obj_id: str, visible: bool) -> None:
        self.scene.object_by_id(obj_id).visible = bool(visible)
        self.objectsChanged.emit()
        self.transformChanged.emit(obj_id)

    def set_prompt(self, text: str) -> None:
        self.scene.prompt = text
        self.promptChanged.emit(text)

    def set_render_setting(self, key: str, value: Any) -> None:
        self.doc.render_settings[key] = value
        self.renderSettingChanged.emit(key, value)

    # ----- renders -----
    def add_render(self, image, request: dict, info: dict):
        rec = self.doc.add_render(image, request, info)
        self.rendersChanged.emit()
        return rec

    def remove_render(self, render_id: str) -> None:
        self.doc.remove_render(render_id)
        self.rendersChanged.emit()
