"""Edits of the document's objects from the window: transforms, names, deletion, variants,
masks (new object, add/subtract, feather/grow/shrink) and render settings, each one undo step."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QInputDialog

from core import selection as sel
from core.errors import HandlesError
from core.scene import SceneObject
from core.transform import Transform3D
from editor.render_panel import PRESET_STEPS
from editor.undo import AddObjectCommand, MaskCommand, RemoveObjectCommand, RenameObjectCommand, SettingCommand, TransformCommand, VariantCommand
from editor.worker import one_line


class ObjectEditsMixin:
    """Undoable object and setting edits of :class:`editor.main_window.MainWindow`."""

    def _push(self, cmd) -> None:
        self.undo_stack.push(cmd)
        self._update_title()

    def _fill_variants_menu(self) -> None:
        m = self.variants_menu
        m.clear()
        for name in self.scene.variants:
            act = m.addAction(f"Apply \u201c{name}\u201d")
            act.setToolTip("Set every object's transform from this variant (one undo step)")
            act.triggered.connect(lambda _c=False, n=name: self.apply_variant(n))
        if self.scene.variants:
            m.addSeparator()
        m.addAction("&Store Current Transforms as Variant\u2026", self.store_variant_dialog)

    def store_variant_dialog(self) -> None:
        from PySide6.QtWidgets import QLineEdit

        i = 1
        while f"variant {i}" in self.scene.variants:
            i += 1
        name, ok = QInputDialog.getText(self, "Store variant", "Variant name:", QLineEdit.EchoMode.Normal, f"variant {i}")
        if ok and name.strip():
            self.store_variant(name.strip())

    def store_variant(self, name: str) -> None:
        """Keep the current transforms of all objects as variant ``name`` (undoable)."""
        self._push(VariantCommand(self.model, name, self.scene.transforms()))
        self.statusBar().showMessage(f"Stored variant \u201c{name}\u201d", 4000)

    def apply_variant(self, name: str) -> None:
        """Set every object's transform from variant ``name``; objects it does not name go back to
        where they were in the photo. One undo step."""
        if name not in self.scene.variants:
            self.banner.show_message(f"No variant named {name!r}", level="warning", timeout_ms=5000)
            return
        variant = self.scene.variants[name]
        changes = [(o, variant.get(o.name, Transform3D())) for o in self.scene.objects]
        changes = [(o, t) for o, t in changes if o.transform != t]
        if not changes:
            return
        self.undo_stack.beginMacro(f"Apply variant {name}")
        for obj, t in changes:
            self.undo_stack.push(TransformCommand(self.model, obj.id, obj.transform, t))
        self.undo_stack.endMacro()
        self._update_title()

    def set_object_transform(self, obj_id: str, transform: Transform3D) -> None:
        obj = self.scene.object_by_id(obj_id)
        if obj.transform == transform:
            return
        self._push(TransformCommand(self.model, obj_id, obj.transform, transform))

    def rename_object(self, obj_id: str, name: str) -> None:
        try:
            self._push(RenameObjectCommand(self.model, obj_id, name))
        except ValueError as exc:
            self.banner.show_message(str(exc), level="warning", timeout_ms=6000)
            self.objects_panel.refresh()

    def delete_object(self, obj_id: str) -> None:
        self._push(RemoveObjectCommand(self.model, obj_id))

    def delete_selected(self) -> None:
        if self.model.selected_id:
            self.delete_object(self.model.selected_id)

    def reset_selected(self) -> None:
        if self.model.selected_id:
            self.set_object_transform(self.model.selected_id, Transform3D())

    def rename_selected_dialog(self) -> None:
        obj = self.model.selected_object()
        if obj is None:
            return
        name, ok = QInputDialog.getText(self, "Rename object", "Name:", text=obj.name)
        if ok:
            self.rename_object(obj.id, name)

    def _on_setting_edited(self, key: str, old, new) -> None:
        if key == "preset" and new in PRESET_STEPS and self.doc.render_settings.get("steps") != PRESET_STEPS[new]:
            self.undo_stack.beginMacro("Change quality")
            self.undo_stack.push(SettingCommand(self.model, "preset", old, new))
            self.undo_stack.push(SettingCommand(self.model, "steps", self.doc.render_settings.get("steps"), PRESET_STEPS[new]))
            self.undo_stack.endMacro()
        else:
            self._push(SettingCommand(self.model, key, old, new))

    def _on_mask_edited(self, obj_id, mask, mode: str, label: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        try:
            if obj_id is None:
                if not mask.any():
                    return
                same = self._same_object(mask)
                if same is not None:  # a click on an existing object selects it rather than duplicating it
                    self.model.select(same.id)
                    self.statusBar().showMessage(
                        f"\u201c{same.name}\u201d is already an object: selected it. Use Add or Subtract (Shift / Alt) to change its mask", 6000
                    )
                    return
                obj = SceneObject(name=self.scene.unique_name("object"), mask=mask)
                self._push(AddObjectCommand(self.model, obj, text=f"New object ({label})" if label else ""))
                return
            obj = self.scene.object_by_id(obj_id)
            new = sel.combine(obj.mask, mask, mode)
            cmd = MaskCommand(self.model, obj_id, obj.mask, new, text=f"{label or 'Edit'} {obj.name}")
            if cmd.changed:
                self._push(cmd)
        except (HandlesError, KeyError, ValueError) as exc:
            self.banner.show_message(f"Selection: {one_line(exc)}", level="warning", timeout_ms=6000)

    #: a new selection this similar to an existing object's mask (intersection over union) is that object
    SAME_OBJECT_IOU = 0.8

    def _same_object(self, mask: np.ndarray):
        """The visible object whose mask ``mask`` matches (IoU >= SAME_OBJECT_IOU), or None."""
        area = int(mask.sum())
        for obj in self.scene.objects:
            if not obj.visible or obj.mask.shape != mask.shape:
                continue
            inter = int(np.logical_and(obj.mask, mask).sum())
            if inter and inter / float(area + int(obj.mask.sum()) - inter) >= self.SAME_OBJECT_IOU:
                return obj
        return None

    def mask_op(self, op: str) -> None:
        obj = self.model.selected_object()
        if obj is None:
            self.statusBar().showMessage("Select an object first", 4000)
            return
        labels = {"feather": "Feather radius (px)", "grow": "Grow by (px)", "shrink": "Shrink by (px)"}
        px, ok = QInputDialog.getDouble(self, op.capitalize(), labels[op], 3.0, 0.5, 200.0, 1)
        if ok:
            self.apply_mask_op(op, px)

    def apply_mask_op(self, op: str, px: float) -> None:
        obj = self.model.selected_object()
        if obj is None:
            return
        if op == "feather":
            soft = sel.feather(obj.mask, px)
            new = np.asarray(soft >= 0.5) if soft.dtype != bool else soft
        elif op == "grow":
            new = sel.grow(obj.mask, px)
        else:
            new = sel.shrink(obj.mask, px)
        cmd = MaskCommand(self.model, obj.id, obj.mask, new, text=f"{op.capitalize()} {obj.name}")
        if cmd.changed:
            self._push(cmd)

    def _add_object_hint(self) -> None:
        self.set_photo_tool("lasso")
        self.op_combo.setCurrentIndex(0)
        self.statusBar().showMessage("Draw around the new object on the photo (lasso), or use the wand (M) or brush (B)", 6000)
