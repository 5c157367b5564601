"""The model picker and the render panel follow the catalog's renderers (issue 9 part 7): every
renderer with its state, size and licence; the presets and the render size adapt to the backend;
a missing ControlNet or turbo LoRA names its fetch command like a missing model does. Fake model
folders in a fake hub cache, the real window and the real renderer factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ml"))
from tiny_services import build_fake_controlnet, build_fake_lora, build_fake_renderer, install_in_hub_cache  # noqa: E402

from core.ml import store  # noqa: E402

SD15 = "sd15-depth-controlnet"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    return home / "hub"


@pytest.fixture
def window(qtbot, tmp_path, sample_scene):
    """A window on a photo of the real world (the world model does not apply) with the real factory."""
    made = []

    def make():
        from core.document import Document
        from core.settings import Settings
        from editor.files import RecoveryManager
        from editor.main_window import MainWindow

        sample_scene.depth_source = "file"
        win = MainWindow(
            Document(scene=sample_scene), settings=Settings(auto_render=False), use_gl=False, persist=False, recovery=RecoveryManager(tmp_path / "r")
        )
        made.append(win)
        return win

    yield make
    for w in made:
        w.shutdown()
        w.close()


def _combo_items(combo):
    from PySide6.QtCore import Qt

    return {combo.itemData(i): (combo.itemText(i), combo.itemData(i, Qt.ItemDataRole.ToolTipRole)) for i in range(combo.count())}


def _choose(win, key: str, value: str) -> None:
    panel = win.render_panel
    combo = panel.model_combo if key == "model" else panel.preset_combo
    combo.setCurrentIndex(combo.findData(value))
    assert win.doc.render_settings[key] == value


def test_the_picker_lists_every_renderer_with_state_size_and_licence(hub, tmp_path, window):
    install_in_hub_cache(build_fake_renderer(tmp_path / "sd15", in_channels=4, kind="sd15", fp16=True), hub, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    win = window()
    items = _combo_items(win.render_panel.model_combo)
    renderers = [e for e in store.catalog() if e.role == "renderer"]
    assert set(items) == {e.name for e in renderers} | {"geometric"}
    assert items["sd2-depth"][0] == "sd2-depth \u00b7 missing \u00b7 2.6 GB \u00b7 openrail++"
    assert items[SD15][0] == f"{SD15} \u00b7 needs ControlNet \u00b7 2.9 GB \u00b7 creativeml-openrail-m; ControlNet: openrail"
    assert items["sdxl-depth-controlnet"][0] == "sdxl-depth-controlnet \u00b7 missing \u00b7 9.4 GB \u00b7 openrail++"
    assert items["world"][0].startswith("world \u00b7 bundled, world scenes only \u00b7 17 MB")
    tip = items[SD15][1]
    assert "controlnet-depth-sd15" in tip and store.catalog_entry("controlnet-depth-sd15").fetch_command in tip and "lcm-lora-sd15 (turbo)" in tip
    # the Models dialog says the same, with the licence in its own column
    from editor.dialogs import ModelsDialog

    dlg = ModelsDialog()
    row = [r["name"] for r in dlg.rows].index(SD15)
    assert dlg.table.item(row, 2).text() == "needs ControlNet" and "openrail" in dlg.table.item(row, 4).text()
    assert dlg.table.item(row, 5).text() == store.catalog_entry("controlnet-depth-sd15").fetch_command
    dlg.close()


def test_a_missing_controlnet_names_its_fetch_command(hub, tmp_path, window):
    install_in_hub_cache(build_fake_renderer(tmp_path / "sd15", in_channels=4, kind="sd15", fp16=True), hub, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    win = window()
    _choose(win, "model", SD15)
    panel = win.render_panel
    cmd = store.catalog_entry("controlnet-depth-sd15").fetch_command
    assert "needs its depth ControlNet controlnet-depth-sd15" in panel.model_status.text() and "Fetch controlnet-depth-sd15" in panel.model_status.text()
    assert panel._fetch_command == cmd and not panel.copy_cmd.isHidden() and cmd in panel.model_status.toolTip()
    assert "no ControlNet" in win.status_renderer.text() and not win._auto_render_possible()
    # with the ControlNet on disk (after Models ▸ Refresh, a folder change ...) it renders with it
    install_in_hub_cache(build_fake_controlnet(tmp_path / "cn"), hub, "lllyasviel/control_v11f1p_sd15_depth")
    win._check_models()
    assert f"{SD15} with controlnet-depth-sd15" in panel.model_status.text() and panel.copy_cmd.isHidden()
    assert win._auto_render_possible()
    req = win.build_request()
    assert req.controlnet == "controlnet-depth-sd15" and req.controlnet_path and not req.missing


def test_the_panel_adapts_size_and_presets_to_the_backend(hub, tmp_path, window):
    from core.ml.handles.presets import PRESETS

    win = window()
    panel = win.render_panel
    presets = [panel.preset_combo.itemData(i) for i in range(panel.preset_combo.count())]
    assert ("turbo" in presets) == ("turbo" in PRESETS)
    draft = panel.preset_combo.model().item(panel.preset_combo.findData("draft"))
    _choose(win, "model", SD15)
    assert panel.render_size.text() == "512 px (the model's own)" and draft.isEnabled()
    _choose(win, "model", "sdxl-depth-controlnet")
    assert panel.render_size.text() == "1024 px (the model's own)" and not draft.isEnabled()
    if "turbo" in PRESETS:
        assert panel.preset_combo.itemText(panel.preset_combo.findData("turbo")) == "Turbo (8 steps, lcm-lora-sdxl)"
    _choose(win, "model", "sd2-depth")  # no catalog resolution: the photo's working size; draft caps it
    assert panel.render_size.text() == f"{max(win.scene.size)} px (the photo's working size)" and draft.isEnabled()
    _choose(win, "preset", "draft")
    assert panel.render_size.text() == "256 px (the preset's limit)"


def test_turbo_with_a_missing_lora_names_the_loras_fetch_command(hub, tmp_path, window):
    from core.ml.handles.presets import PRESETS

    if "turbo" not in PRESETS:
        pytest.skip("the turbo preset is not in core.ml.handles.presets yet")
    install_in_hub_cache(build_fake_renderer(tmp_path / "sd15", in_channels=4, kind="sd15", fp16=True), hub, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    install_in_hub_cache(build_fake_controlnet(tmp_path / "cn"), hub, "lllyasviel/control_v11f1p_sd15_depth")
    win = window()
    _choose(win, "model", SD15)
    assert win._auto_render_possible()
    _choose(win, "preset", "turbo")
    panel = win.render_panel
    cmd = store.catalog_entry("lcm-lora-sd15").fetch_command
    assert win.doc.render_settings["steps"] == 8
    assert "needs the LoRA lcm-lora-sd15" in panel.model_status.text() and panel._fetch_command == cmd and not panel.copy_cmd.isHidden()
    assert not win._auto_render_possible()
    req = win.build_request()
    assert req.geometric and req.fetch_command == cmd
    # undo the preset: the status follows the document, not only the combo
    win.undo_stack.undo()
    assert win.doc.render_settings["preset"] != "turbo" and panel.copy_cmd.isHidden()
    win.undo_stack.redo()
    install_in_hub_cache(build_fake_lora(tmp_path / "lcm"), hub, "latent-consistency/lcm-lora-sdv1-5")
    win._check_models()
    assert panel.copy_cmd.isHidden() and win.build_request().lora_path.endswith("pytorch_lora_weights.safetensors")
