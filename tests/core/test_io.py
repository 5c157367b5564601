"""core.io: photos (formats, orientation, pixel modes, bad files) and depth files (formats, validation, resize)."""

from __future__ import annotations

import math
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from core import io as cio
from core.errors import InputError


# ----------------------------------------------------------------------------- helpers
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def header_only_png(path, width, height):
    """A PNG whose header declares width x height but has no pixel data (cheap bomb / 0-size)."""
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return path


def rgb_pattern(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4) % 256, (y * 6) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)


def assert_one_line_naming(exc_info, path, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert str(path) in msg or path.name in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg


# ----------------------------------------------------------------------------- working size
@pytest.mark.parametrize(
    "size, long_side, expected",
    [
        ((512, 512), 512, (512, 512)),
        ((640, 448), 512, (512, 384)),  # 358.4 -> 384 (1.333 vs 1.429: log err .069) beats 320 (1.6: .113)
        ((1920, 1080), 512, (512, 320)),  # 288 exactly between: 2.0 vs 1.6, log err .118 vs .105
        ((1080, 1920), 512, (320, 512)),
        ((300, 100), 512, (512, 192)),  # 170.7: 4.0 (.288) vs 2.667 (.118)
        ((4000, 100), 512, (512, 64)),  # short side never below 64
        ((100, 100), 512, (512, 512)),  # small images are enlarged to the working size
        ((3000, 2000), 1024, (1024, 704)),  # 682.7 -> 704 (1.4545: .031) beats 640 (1.6: .065)
        ((3000, 2000), 500, (512, 320)),  # long side rounded to a multiple of 64
    ],
)
def test_working_size_examples(size, long_side, expected):
    assert cio.working_size(*size, long_side=long_side) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 20000), st.sampled_from([256, 512, 768, 1024]))
def test_working_size_properties(w, h, L):
    ww, hh = cio.working_size(w, h, L)
    assert ww % 64 == 0 and hh % 64 == 0 and min(ww, hh) >= 64
    assert max(ww, hh) == L
    assert (w <= h or ww >= hh) and (h <= w or hh >= ww)  # orientation kept
    # no other multiple of 64 for the short side gives a closer aspect ratio (log space)
    target = math.log(max(w, h) / min(w, h))
    got = abs(math.log(max(ww, hh) / min(ww, hh)) - target)
    for s in range(64, L + 1, 64):
        assert got <= abs(math.log(L / s) - target) + 1e-12


def test_working_size_rejects_nonsense():
    with pytest.raises(InputError):
        cio.working_size(0, 10)
    with pytest.raises(InputError):
        cio.working_size(10, 10, long_side=32)


# ----------------------------------------------------------------------------- photos: formats
@pytest.mark.parametrize(
    "ext, fmt, lossless",
    [
        ("png", "PNG", True),
        ("bmp", "BMP", True),
        ("tif", "TIFF", True),
        ("webp", "WEBP", False),
        ("jpg", "JPEG", False),
    ],
)
def test_photo_formats(tmp_path, ext, fmt, lossless):
    src = rgb_pattern(120, 200)
    p = tmp_path / f"photo.{ext}"
    kw = {"lossless": True} if fmt == "WEBP" else ({"quality": 95} if fmt == "JPEG" else {})
    Image.fromarray(src).save(p, format=fmt, **kw)
    ph = cio.load_photo(p)
    assert ph.working.shape == (320, 512, 3) and ph.working.dtype == np.uint8  # 200x120 -> 512x307 -> 320
    assert ph.original.shape == (120, 200, 3)
    assert ph.alpha is None
    if lossless or fmt == "WEBP":
        np.testing.assert_array_equal(ph.original, src)
    else:
        assert np.abs(ph.original.astype(int) - src).mean() < 6
    # the working image is a resize of the original: its mean colour is kept
    np.testing.assert_allclose(ph.working.reshape(-1, 3).mean(0), src.reshape(-1, 3).mean(0), atol=3)


def test_long_side_is_configurable(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(rgb_pattern(120, 200)).save(p)
    assert cio.load_photo(p, long_side=256).working.shape == (128, 256, 3)  # 153.6: 128 (2.0, log err .182) beats 192 (1.333, .223)


def test_exif_orientation_is_applied(tmp_path):
    # stored 60 wide x 40 high, red block at the stored top-left; orientation 6 = display rotated 90 deg clockwise
    a = np.zeros((40, 60, 3), np.uint8)
    a[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.png"
    Image.fromarray(a).save(p, exif=exif.tobytes())
    ph = cio.load_photo(p)
    assert ph.original.shape == (60, 40, 3)  # displayed: 40 wide, 60 high
    # rotating clockwise moves the stored top-left corner to the top-right
    np.testing.assert_array_equal(ph.original[0, -1], (255, 0, 0))
    np.testing.assert_array_equal(ph.original[0, 0], (0, 0, 0))
    assert ph.working.shape == (512, 320, 3)  # portrait (40x60 -> 341.3 -> 320)


def test_grayscale_palette_cmyk_16bit(tmp_path):
    g = np.full((30, 50), 100, np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(cio.load_photo(tmp_path / "g.png").original[0, 0], (100, 100, 100))

    pal = Image.new("P", (50, 30))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.paste(1, (0, 0, 50, 30))
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(cio.load_photo(tmp_path / "p.png").original[5, 5], (10, 200, 30))

    cmyk = Image.new("CMYK", (50, 30), (255, 0, 0, 0))  # pure cyan
    cmyk.save(tmp_path / "c.tif")
    np.testing.assert_array_equal(cio.load_photo(tmp_path / "c.tif").original[0, 0], (0, 255, 255))

    a16 = np.full((30, 50), 200 * 257, np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    ph = cio.load_photo(tmp_path / "g16.png")
    np.testing.assert_array_equal(ph.original[0, 0], (200, 200, 200))


def test_embedded_srgb_profile_is_harmless(tmp_path):
    from PIL import ImageCms

    src = rgb_pattern()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(src).save(tmp_path / "icc.png", icc_profile=icc)
    assert Image.open(tmp_path / "icc.png").info.get("icc_profile")
    got = cio.load_photo(tmp_path / "icc.png").original
    assert np.abs(got.astype(int) - src).max() <= 2


def test_alpha_is_kept_as_a_mask(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 255
    rgba[:, :30, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    ph = cio.load_photo(tmp_path / "a.png")
    np.testing.assert_array_equal(ph.original[0, 0], (10, 20, 30))  # colour kept, not composited
    assert ph.alpha is not None and ph.alpha.shape == ph.working.shape[:2] and ph.alpha.dtype == np.float32
    w = ph.alpha.shape[1]
    assert ph.alpha[:, : w // 2 - 8].max() == 0.0 and ph.alpha[:, w // 2 + 8 :].min() == 1.0

    rgba[..., 3] = 255  # fully opaque: no mask
    Image.fromarray(rgba, "RGBA").save(tmp_path / "o.png")
    assert cio.load_photo(tmp_path / "o.png").alpha is None

    la = np.zeros((40, 60, 2), np.uint8)
    la[..., 0] = 77
    la[..., 1] = 128
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    ph = cio.load_photo(tmp_path / "la.png")
    np.testing.assert_array_equal(ph.original[0, 0], (77, 77, 77))
    np.testing.assert_allclose(ph.alpha, 128 / 255, atol=1e-6)


# ----------------------------------------------------------------------------- photos: bad files
def test_missing_folder_empty_and_non_image(tmp_path):
    with pytest.raises(InputError) as e:
        cio.load_photo(tmp_path / "nope.png")
    assert_one_line_naming(e, tmp_path / "nope.png", "not found")
    with pytest.raises(InputError) as e:
        cio.load_photo(tmp_path)
    assert_one_line_naming(e, tmp_path, "folder")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError) as e:
        cio.load_photo(tmp_path / "empty.png")
    assert_one_line_naming(e, tmp_path / "empty.png", "empty")
    (tmp_path / "notes.jpg").write_text("these are not pixels\n" * 20)
    with pytest.raises(InputError) as e:
        cio.load_photo(tmp_path / "notes.jpg")
    assert_one_line_naming(e, tmp_path / "notes.jpg", "not an image")


def test_unsupported_format_is_refused(tmp_path):
    Image.fromarray(rgb_pattern()).save(tmp_path / "a.gif")
    with pytest.raises(InputError) as e:
        cio.load_photo(tmp_path / "a.gif")
    assert_one_line_naming(e, tmp_path / "a.gif", "supported")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files(tmp_path, fmt):
    rng = np.random.default_rng(0)
    p = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(p, format=fmt)
    data = p.read_bytes()
    t = tmp_path / f"cut.{fmt.lower()}"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        cio.load_photo(t)
    assert_one_line_naming(e, t)
    assert "truncated" in str(e.value) or "damaged" in str(e.value)


def test_zero_sized_image(tmp_path):
    p = header_only_png(tmp_path / "zero.png", 0, 10)
    with pytest.raises(InputError) as e:
        cio.load_photo(p)
    assert_one_line_naming(e, p, "zero width or height")


def test_decompression_bombs(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    # over our 100 MP limit but under Pillow's own error threshold: our check, no Pillow warning
    p = header_only_png(tmp_path / "110mp.png", 11000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError) as e:
            cio.load_photo(p)
    assert_one_line_naming(e, p, "110 megapixels", "100-megapixel")
    # far over: Pillow refuses at open, still our one-line error
    p = header_only_png(tmp_path / "400mp.png", 20000, 20000)
    with pytest.raises(InputError) as e:
        cio.load_photo(p)
    assert_one_line_naming(e, p, "too large")
    assert Image.MAX_IMAGE_PIXELS == before  # no global side effect


# ----------------------------------------------------------------------------- depth files
def write_exr(path, channels: dict, half=False, piz=False):
    import OpenEXR

    header = {"compression": OpenEXR.PIZ_COMPRESSION if piz else OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    chans = {k: OpenEXR.Channel(np.ascontiguousarray(v, np.float16 if half else np.float32)) for k, v in channels.items()}
    with OpenEXR.File(header, chans) as f:
        f.write(str(path))


def ramp(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return (1.0 + 0.05 * x + 0.02 * y).astype(np.float32)


def test_exr_single_and_multi_channel(tmp_path):
    d = ramp()
    write_exr(tmp_path / "y16.exr", {"Y": d}, half=True, piz=True)  # the photogen layout
    got = cio.load_depth(tmp_path / "y16.exr")
    assert got.dtype == np.float32 and got.shape == d.shape
    np.testing.assert_allclose(got, d, rtol=1e-3)  # float16 precision
    write_exr(tmp_path / "rgbz.exr", {"R": d * 0 + 0.5, "G": d * 0 + 0.5, "B": d * 0 + 0.5, "Z": d})
    np.testing.assert_array_equal(cio.load_depth(tmp_path / "rgbz.exr"), d)
    write_exr(tmp_path / "named.exr", {"depth": d, "alpha": d * 0 + 1})
    np.testing.assert_array_equal(cio.load_depth(tmp_path / "named.exr"), d)
    write_exr(tmp_path / "odd.exr", {"foo": d, "bar": d})
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "odd.exr")
    assert_one_line_naming(e, tmp_path / "odd.exr", "bar, foo")


def test_photogen_exr(photogen_scene):
    d = cio.load_depth(photogen_scene / "depth.exr")
    assert d.shape == (512, 512) and d.dtype == np.float32
    assert 1.0 < float(d.min()) < float(d.max()) < 200.0


def test_png16_with_scale(tmp_path):
    v = np.arange(1, 48 * 64 + 1, dtype=np.uint16).reshape(48, 64)
    info = PngImagePlugin.PngInfo()
    info.add_text(cio.DEPTH_SCALE_KEY, "0.001")
    Image.fromarray(v).save(tmp_path / "d.png", pnginfo=info)
    np.testing.assert_allclose(cio.load_depth(tmp_path / "d.png"), v * 0.001, rtol=1e-6)
    # the caller's scale wins
    np.testing.assert_allclose(cio.load_depth(tmp_path / "d.png", scale=0.01), v * 0.01, rtol=1e-6)
    Image.fromarray(v).save(tmp_path / "noscale.png")
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "noscale.png")
    assert_one_line_naming(e, tmp_path / "noscale.png", "scale")
    np.testing.assert_allclose(cio.load_depth(tmp_path / "noscale.png", scale=0.5), v * 0.5)
    Image.fromarray(rgb_pattern()).save(tmp_path / "rgb.png")
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "rgb.png", scale=1.0)
    assert_one_line_naming(e, tmp_path / "rgb.png", "one channel")


def test_float_tiff_and_npy(tmp_path):
    d = ramp()
    Image.fromarray(d, "F").save(tmp_path / "d.tif")
    np.testing.assert_array_equal(cio.load_depth(tmp_path / "d.tif"), d)
    np.save(tmp_path / "d.npy", d.astype(np.float64))
    got = cio.load_depth(tmp_path / "d.npy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, d)
    np.save(tmp_path / "d3.npy", d[:, :, None])
    np.testing.assert_array_equal(cio.load_depth(tmp_path / "d3.npy"), d)
    np.save(tmp_path / "bad.npy", np.ones((2, 3, 4)))
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "bad.npy")
    assert_one_line_naming(e, tmp_path / "bad.npy", "2-D")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "obj.npy")
    assert_one_line_naming(e, tmp_path / "obj.npy")
    (tmp_path / "d.xyz").write_bytes(b"123")
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "d.xyz")
    assert_one_line_naming(e, tmp_path / "d.xyz", "unsupported")
    (tmp_path / "fake.exr").write_bytes(b"not an exr at all")
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "fake.exr")
    assert_one_line_naming(e, tmp_path / "fake.exr", "OpenEXR")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "empty.npy")
    assert_one_line_naming(e, tmp_path / "empty.npy", "empty")


def test_truncated_exr_and_npy(tmp_path):
    write_exr(tmp_path / "d.exr", {"Y": ramp(256, 256)})
    data = (tmp_path / "d.exr").read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "cut.exr")
    assert_one_line_naming(e, tmp_path / "cut.exr")
    np.save(tmp_path / "d.npy", ramp(256, 256))
    data = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "cut.npy")
    assert_one_line_naming(e, tmp_path / "cut.npy")


def test_disparity(tmp_path):
    disp = ramp()
    np.save(tmp_path / "disp.npy", disp)
    np.testing.assert_allclose(cio.load_depth(tmp_path / "disp.npy", kind="disparity"), 1.0 / disp, rtol=1e-6)
    with pytest.raises(InputError):
        cio.load_depth(tmp_path / "disp.npy", kind="inverse")


def test_invalid_values_are_reported_with_count_and_place(tmp_path):
    d = np.full((20, 30), 3.0, np.float32)
    d[3, 5] = np.nan
    d[7, 2] = 0.0
    d[9, 11] = -1.0
    d[9, 12] = np.inf
    np.save(tmp_path / "d.npy", d)
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "d.npy")
    msg = str(e.value)
    assert_one_line_naming(e, tmp_path / "d.npy")
    for part in ("4 invalid values", "NaN 1", "infinite 1", "zero 1", "negative 1", "rows 3-9", "columns 2-12", "first at x=5, y=3"):
        assert part in msg, msg


def test_repair_fills_from_the_nearest_valid_pixel(tmp_path):
    d = np.ones((10, 10), np.float32)
    d[:, 5:] = 2.0
    d[4, 1] = np.nan  # nearest valid neighbours are all 1.0
    d[6, 8] = 0.0  # nearest valid neighbours are all 2.0
    d[0:3, 9] = np.inf  # a run along the right edge: nearest valid are 2.0
    np.save(tmp_path / "d.npy", d)
    got = cio.load_depth(tmp_path / "d.npy", repair=True)
    expected = np.ones((10, 10), np.float32)
    expected[:, 5:] = 2.0
    np.testing.assert_array_equal(got, expected)
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "nan.npy", repair=True)
    assert "no valid" in str(e.value)


def test_resize_depth_keeps_edges_and_averages_smooth_regions():
    d = np.full((256, 256), 10.0, np.float32)
    d[60:190, 70:170] = 1.0  # a fronto-parallel object in front of a wall
    small = cio.resize_depth(d, (100, 100))
    assert small.shape == (100, 100)
    # no "flying pixels": every value is the object's or the wall's
    assert np.all((np.abs(small - 1.0) < 1e-6) | (np.abs(small - 10.0) < 1e-6))
    # the object keeps its place and size (within one output pixel)
    rows = np.flatnonzero((small < 5).any(axis=1))
    cols = np.flatnonzero((small < 5).any(axis=0))
    assert abs(rows[0] - 60 * 100 / 256) <= 1 and abs(rows[-1] + 1 - 190 * 100 / 256) <= 1
    assert abs(cols[0] - 70 * 100 / 256) <= 1 and abs(cols[-1] + 1 - 170 * 100 / 256) <= 1

    # smooth data shrunk by an integer factor: exactly the 4x4 block means
    r = ramp(256, 256)
    block = r.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(cio.resize_depth(r, (64, 64)), block, rtol=1e-5)
    # enlarging a linear ramp: linear interpolation is exact away from the border
    big = cio.resize_depth(r[:64, :64], (128, 128))
    x = (np.arange(128) + 0.5) / 2 - 0.5
    y = x
    exp = 1.0 + 0.05 * x[None, :] + 0.02 * y[:, None]
    np.testing.assert_allclose(big[2:-2, 2:-2], exp[2:-2, 2:-2], rtol=1e-4)


def test_load_depth_resizes_to_the_working_size(tmp_path):
    np.save(tmp_path / "d.npy", ramp(96, 128))
    got = cio.load_depth(tmp_path / "d.npy", size=(64, 48))
    assert got.shape == (48, 64)
    np.testing.assert_allclose(got, ramp(96, 128).reshape(48, 2, 64, 2).mean(axis=(1, 3)), rtol=1e-5)


@pytest.mark.parametrize("ext", [".exr", ".npy", ".tif", ".png"])
def test_save_depth_round_trip(tmp_path, ext):
    d = ramp(48, 64) * 3.0
    p = cio.save_depth(tmp_path / f"out{ext}", d)
    got = cio.load_depth(p)
    if ext == ".png":
        scale = float(Image.open(p).info[cio.DEPTH_SCALE_KEY])
        assert scale == pytest.approx(float(d.max()) / 65535)
        assert Image.open(p).mode.startswith("I;16")
        assert np.abs(got - d).max() <= scale / 2 + 1e-7
    else:
        np.testing.assert_array_equal(got, d)
    if ext == ".exr":
        import OpenEXR

        ch = OpenEXR.File(str(p), separate_channels=True).channels()
        assert list(ch) == ["Y"] and ch["Y"].pixels.dtype == np.float32


def test_save_depth_refuses_what_it_cannot_store(tmp_path):
    d = ramp()
    d[0, 0] = np.nan
    with pytest.raises(InputError):
        cio.save_depth(tmp_path / "x.png", d)
    with pytest.raises(InputError):
        cio.save_depth(tmp_path / "x.jpg", ramp())
    with pytest.raises(InputError):
        cio.save_depth(tmp_path / "x.npy", np.ones(5))


# ----------------------------------------------------------------------------- scene_from_photo
def test_scene_from_photo(tmp_path):
    Image.fromarray(rgb_pattern(120, 200)).save(tmp_path / "p.png")
    np.save(tmp_path / "d.npy", ramp(120, 200))
    s = cio.scene_from_photo(tmp_path / "p.png", tmp_path / "d.npy", fov_deg=40)
    assert s.size == (512, 320) and s.depth.shape == (320, 512) and s.camera.fov_deg == 40
    assert s.original_photo.shape == (120, 200, 3) and s.depth_source == "file" and s.name == "p"
    assert 1.0 <= s.depth.min() and s.depth.max() <= ramp(120, 200).max()
    s2 = cio.scene_from_photo(tmp_path / "p.png", ramp(30, 50))
    assert s2.depth.shape == (320, 512) and s2.depth_source == "array"
    s3 = cio.scene_from_photo(tmp_path / "p.png", None)
    assert s3.depth_source == "none" and np.all(s3.depth == 1.0)
    bad = ramp(30, 50)
    bad[2, 3] = -1
    with pytest.raises(InputError):
        cio.scene_from_photo(tmp_path / "p.png", bad)
