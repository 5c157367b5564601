"""The window's tool state: the photo tool, the wand's surface mode, the gizmo mode, compare,
point size, the cursor read-out and click-to-segment (SAM, in the worker)."""

from __future__ import annotations

from core import selection as sel
from core.errors import ModelError
from editor.worker import TaskSpec, one_line


class ToolsMixin:
    """Tool switching of :class:`editor.main_window.MainWindow`."""

    def set_photo_tool(self, name: str) -> None:
        tool = "none" if name == "navigate" else name
        if tool == "segment" and not self._segmenter_name():
            self.actions_by_name["tool_navigate"].setChecked(True)
            self.photo.set_tool("none")
            self.banner.show_message(self._segment_hint, level="info", timeout_ms=10000)
            return
        self.photo.set_tool(tool)
        act = self.actions_by_name.get(f"tool_{name}")
        if act is not None:
            act.setChecked(True)
        self.photo.setFocus()

    def set_wand_colour(self, on: bool) -> None:
        """Switch the wand between the object wand (depth continuity; the default) and the colour
        wand (colour to the seed; for what depth cannot separate)."""
        on = bool(on)
        if self.wand_colour.isChecked() != on:
            self.wand_colour.setChecked(on)  # re-enters through toggled
            return
        preset = dict(sel.COLOR_WAND if on else sel.OBJECT_WAND)
        if on and self.color_tol.value() > 0:
            preset["color_tol"] = float(self.color_tol.value())
        for key, value in preset.items():
            self.photo.set_tool_option(key, value)
        self.color_tol.blockSignals(True)
        self.color_tol.setValue(float(preset["color_tol"] or 0))
        self.color_tol.blockSignals(False)
        self.color_tol.setEnabled(on)

    def set_gizmo_mode(self, mode: str) -> None:
        self.view3d.set_gizmo_mode(mode)
        self.actions_by_name[f"gizmo_{mode}"].setChecked(True)

    def set_compare(self, on: bool) -> None:
        self.photo.set_compare(bool(on))
        self.actions_by_name["compare"].setChecked(bool(on))

    def _photo_option(self, key: str, value) -> None:
        self.photo.set_tool_option(key, value)

    def _on_photo_option(self, key: str, value) -> None:
        if key == "brush_size":
            self.brush_size.blockSignals(True)
            self.brush_size.setValue(float(value))
            self.brush_size.blockSignals(False)

    def _point_size(self, delta: int) -> None:
        cur = self.view3d.point_size() or 2.0
        self.view3d.set_point_size(max(1.0, cur + delta))

    def _on_cursor(self, x: float, y: float) -> None:
        w, h = self.scene.size
        if 0 <= x < w and 0 <= y < h:
            d = float(self.scene.depth[int(y), int(x)])
            self.status_cursor.setText(f"x {int(x)}  y {int(y)}  depth {d:.3g} {self.scene.depth_unit}")
        else:
            self.status_cursor.setText("")

    def _segmenter_name(self) -> str | None:
        if hasattr(self, "_segmenter_cache"):
            return self._segmenter_cache
        name = None
        self._segment_hint = "Click-to-segment needs a SAM model."
        try:
            from core.ml import store

            for e in store.catalog():
                if e.role != "segmenter":
                    continue
                try:
                    store.find_model(e.name, role="segmenter", extra_dirs=self.settings.model_folders)
                    name = e.name
                    break
                except ModelError as exc:
                    self._segment_hint = f"Click-to-segment is off: {one_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - a broken catalog only turns click-to-segment off, with the reason
            self._segment_hint = f"Click-to-segment is off: {one_line(exc)}"
        self._segmenter_cache = name
        self.actions_by_name["tool_segment"].setToolTip("Click-to-segment with SAM (S)" if name else f"{self._segment_hint} (S)")
        return name

    def _on_segment_click(self, x: float, y: float, label: int) -> None:
        name = self._segmenter_name()
        if not name:
            return
        points = self.photo.segment_points() or [(x, y, label)]
        photo = self.scene.photo
        target = self.model.selected_id
        params = {"name": name, "device": self.settings.device, "folders": list(self.settings.model_folders), "points": [list(p) for p in points]}
        task = TaskSpec("segment", params, {"photo": photo})

        def done(mask) -> None:
            op = self.photo.tool_option("op")
            self.photo.clear_segment_points()
            self._on_mask_edited(None if op == "new" or not target else target, mask, "replace" if op == "new" else op, "segment")

        self.run_task("segment", task, done)
