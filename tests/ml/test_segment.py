"""Click-to-segment on a tiny random-weight SAM saved to disk."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_services import build_tiny_sam  # noqa: E402

from core.errors import InputError, ModelError  # noqa: E402
from core.ml.segment import Segmenter, segmenter_available  # noqa: E402


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory) -> Path:
    folder = build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny-sam")
    assert (folder / "preprocessor_config.json").is_file()  # the layout of facebook/sam-vit-base
    return folder


@pytest.fixture(scope="module")
def segmenter(sam_folder) -> Segmenter:
    return Segmenter(sam_folder, device="cpu")


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    img[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = (220, 60, 30)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def _reference_mask(folder: Path, photo, points=None, labels=None, box=None, multimask=True) -> np.ndarray:
    """SAM run straight through transformers' processor and model (no core.ml)."""
    import torch
    from PIL import Image
    from transformers import SamModel, SamProcessor

    proc = SamProcessor.from_pretrained(str(folder), local_files_only=True)
    model = SamModel.from_pretrained(str(folder), local_files_only=True).eval()
    kwargs = {}
    if points is not None:
        kwargs["input_points"] = [[points]]
        kwargs["input_labels"] = [[labels]]
    if box is not None:
        kwargs["input_boxes"] = [[box]]
    enc = proc(images=Image.fromarray(photo), return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = model(**enc, multimask_output=multimask)
    masks = proc.image_processor.post_process_masks(out.pred_masks, enc["original_sizes"], enc["reshaped_input_sizes"])[0]
    best = int(torch.argmax(out.iou_scores[0, 0]))
    return masks[0, best].numpy().astype(bool)


@pytest.mark.parametrize("shape", [(60, 100), (96, 64), (64, 64)])
def test_one_click_gives_a_bool_mask_of_the_photo_size(segmenter, shape):
    photo = _photo(*shape)
    mask = segmenter.segment(photo, points=[(shape[1] / 2, shape[0] / 2, 1)])
    assert mask.dtype == np.bool_ and mask.shape == shape


def test_matches_sam_run_directly_through_transformers(segmenter, sam_folder):
    photo = _photo(60, 100, seed=1)
    one = segmenter.segment(photo, points=[(50.5, 30.5, 1)])
    np.testing.assert_array_equal(one, _reference_mask(sam_folder, photo, [[50.5, 30.5]], [1]))
    two = segmenter.segment(photo, points=[(50, 30, 1), (10, 5, 0)])
    np.testing.assert_array_equal(two, _reference_mask(sam_folder, photo, [[50, 30], [10, 5]], [1, 0], multimask=False))
    boxed = segmenter.segment(photo, box=(30, 12, 70, 48))
    np.testing.assert_array_equal(boxed, _reference_mask(sam_folder, photo, box=[30, 12, 70, 48], multimask=False))


def test_embedding_is_reused_for_the_same_photo_only(segmenter):
    a = _photo(60, 100, seed=2)
    b = _photo(60, 100, seed=5)
    segmenter.set_image(a)
    key_a = segmenter._embedding_key
    m1 = segmenter.segment(a, points=[(20, 20, 1)])
    assert segmenter._embedding_key == key_a
    segmenter.segment(b, points=[(20, 20, 1)])
    assert segmenter._embedding_key != key_a
    np.testing.assert_array_equal(segmenter.segment(a, points=[(20, 20, 1)]), m1)


def test_processor_config_layout_loads_too(tmp_path):
    folder = build_tiny_sam(tmp_path / "new-layout", hub_layout=False)
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    mask = Segmenter(folder, device="cpu").segment(_photo(32, 48), points=[(20, 10, 1)])
    assert mask.shape == (32, 48) and mask.dtype == np.bool_


def test_bad_prompts_are_one_line_errors(segmenter):
    photo = _photo(40, 50)
    with pytest.raises(InputError, match="at least one click or a box"):
        segmenter.segment(photo)
    with pytest.raises(InputError, match="outside the 50x40 photo"):
        segmenter.segment(photo, points=[(60, 10, 1)])
    with pytest.raises(InputError, match="label"):
        segmenter.segment(photo, points=[(10, 10, 2)])
    with pytest.raises(InputError, match=r"\(x, y, label\)"):
        segmenter.segment(photo, points=[(10, 10)])
    with pytest.raises(InputError, match="does not cover"):
        segmenter.segment(photo, box=(60, 60, 80, 80))
    with pytest.raises(InputError, match="uint8"):
        segmenter.segment(photo.astype(np.float32), points=[(10, 10, 1)])


def test_missing_sam_gives_the_fetch_hint(tmp_path, monkeypatch, sam_folder):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HANDLES_MODEL_DIRS", raising=False)
    ok, hint = segmenter_available()
    assert not ok and "hf download facebook/sam-vit-base" in hint and "\n" not in hint
    with pytest.raises(ModelError, match="hf download facebook/sam-vit-base"):
        Segmenter()
    ok, where = segmenter_available(str(sam_folder))
    assert ok and where == str(sam_folder)
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(sam_folder.parent))
    # a plain folder named after the catalog entry in an extra model folder is found
    (sam_folder.parent / "sam-vit-base").symlink_to(sam_folder, target_is_directory=True)
    assert segmenter_available()[0]
