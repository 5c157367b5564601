"""Hostile and mismatched inputs (issue 8): size bombs in depth files, header-only giants, an unbounded
--long-side, a layered EXR that hides its Z channel, and depth maps of another shape than the photo.

Every bomb is a small file whose header claims a huge image; the tests that read one run in a child
process under an address-space limit, so a regression fails fast (MemoryError or a kill) instead of
taking gigabytes from the machine.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import io as cio
from core.errors import InputError

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers
def _exr_attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _exr_zip(raw: bytes) -> bytes:
    """OpenEXR's ZIP_COMPRESSION of one block: bytes split odd/even, delta predictor, zlib."""
    a = np.frombuffer(raw, np.uint8)
    t = np.concatenate([a[0::2], a[1::2]]).astype(np.int16)
    d = t.copy()
    d[1:] = (t[1:] - t[:-1] + 128 + 256) & 0xFF
    return zlib.compress(d.astype(np.uint8).tobytes(), 9)


def constant_exr(path: Path, width: int, height: int, channels: dict[str, float], float32: bool = False) -> Path:
    """A valid scanline, ZIP-compressed, half-float (or ``float32``) EXR with a constant value per
    channel.

    Written block by block without ever holding the image, so a 16000x16000 file (the issue's
    556 KB bomb) costs a few MB to make.
    """
    names = sorted(channels)
    ptype, dtype = (2, np.float32) if float32 else (1, np.float16)
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", ptype, 0, 1, 1) for n in names) + b"\0"
    box = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    header = (
        b"\x76\x2f\x31\x01"
        + struct.pack("<i", 2)
        + _exr_attr("channels", "chlist", chlist)
        + _exr_attr("compression", "compression", bytes([3]))  # ZIP: 16 scanlines per block
        + _exr_attr("dataWindow", "box2i", box)
        + _exr_attr("displayWindow", "box2i", box)
        + _exr_attr("lineOrder", "lineOrder", bytes([0]))
        + _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + _exr_attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0))
        + _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + b"\0"
    )
    line = b"".join(np.full(width, channels[n], dtype).tobytes() for n in names)
    blocks, cache = [], {}
    for y in range(0, height, 16):
        n = min(16, height - y)
        if n not in cache:
            cache[n] = _exr_zip(line * n)
        blocks.append(struct.pack("<ii", y, len(cache[n])) + cache[n])
    offset = len(header) + 8 * len(blocks)
    offsets = []
    for b in blocks:
        offsets.append(offset)
        offset += len(b)
    path.write_bytes(header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(blocks))
    return path


def npy_header_only(path: Path, shape, dtype="<f8", data: bytes = b"") -> Path:
    """A .npy file whose header claims ``shape`` followed by only ``data``."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
        fh.write(data)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A small float TIFF whose ImageWidth/ImageLength tags are patched to ``width`` x ``height``."""
    Image.fromarray(np.ones((4, 4), np.float32), "F").save(path, format="TIFF")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, _n = struct.unpack_from("<HHI", data, at)
        if tag in (256, 257):
            value = width if tag == 256 else height
            if kind == 3:  # SHORT
                struct.pack_into("<HH", data, at + 8, value, 0)
            else:
                struct.pack_into("<I", data, at + 8, value)
    path.write_bytes(bytes(data))
    return path


def run_limited(code: str, mem_mb: int = 700, timeout: float = 60.0) -> tuple[str, float]:
    """Run ``code`` in a child Python under an address-space limit of ``mem_mb``.

    Returns (stdout + stderr, CPU seconds of the child): CPU time, not wall time, so that a busy
    machine does not make the "fails fast" checks flaky.
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
        deadline = time.monotonic() + timeout
        while True:
            pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, _, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = 0  # reaped by wait4: Popen must not wait again
        log.seek(0)
        return log.read(), usage.ru_utime + usage.ru_stime


LOAD_DEPTH = """
    from core import io as cio
    from core.errors import InputError
    try:
        cio.load_depth({path!r})
        print("LOADED")
    except InputError as exc:
        print("InputError:", exc)
"""


def load_depth_limited(path: Path, mem_mb: int = 700) -> tuple[str, float]:
    return run_limited(LOAD_DEPTH.format(path=str(path)), mem_mb)


def make_dh_folder(folder: Path, w: int = 64, h: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(folder / "input.png")
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    Image.fromarray(m).save(folder / "mask.png")
    constant_exr(folder / "depth.exr", w, h, {"Y": 3.0})
    return folder


# ----------------------------------------------------------------------------- the helpers are sound
def test_constant_exr_is_a_valid_openexr_file(tmp_path):
    import OpenEXR

    p = constant_exr(tmp_path / "c.exr", 37, 21, {"Y": 2.5, "A": 1.0})  # 21 lines: a short last block
    ch = OpenEXR.File(str(p), separate_channels=True).channels()
    assert set(ch) == {"Y", "A"}
    np.testing.assert_array_equal(ch["Y"].pixels, np.full((21, 37), 2.5, np.float16))
    np.testing.assert_array_equal(cio.load_depth(p), np.full((21, 37), 2.5, np.float32))


# ----------------------------------------------------------------------------- 1, 2: pixel cap from the header
def test_a_16000_square_exr_is_refused_from_its_header(tmp_path):
    p = constant_exr(tmp_path / "bomb.exr", 16000, 16000, {"Y": 1.0})
    assert p.stat().st_size < 1_000_000  # the 556 KB file
    out, cpu_s = load_depth_limited(p)
    assert "InputError:" in out, out
    msg = out.split("InputError:", 1)[1].strip()
    assert "\n" not in msg and "bomb.exr" in msg and "16000x16000" in msg and "100-megapixel" in msg, msg
    assert cpu_s < 5, cpu_s


def test_import_scene_with_a_bomb_depth_fails_fast_with_one_line(tmp_path):
    folder = make_dh_folder(tmp_path / "scene")
    constant_exr(folder / "depth.exr", 16000, 16000, {"Y": 1.0})
    out, cpu_s = run_limited(
        f"""
        import sys
        from core.cli import main
        sys.exit(main(["import-scene", {str(folder)!r}, "-o", {str(tmp_path / "p.handles")!r}]))
        """
    )
    assert "handles-studio: error:" in out and "depth.exr" in out and "megapixel" in out, out
    assert "MemoryError" not in out and "Traceback" not in out, out
    assert cpu_s < 5, cpu_s


def test_npy_header_claiming_100000_square_is_an_input_error(tmp_path):
    p = npy_header_only(tmp_path / "huge.npy", (100000, 100000))
    out, _ = load_depth_limited(p)
    assert "InputError:" in out and "MemoryError" not in out, out
    msg = out.split("InputError:", 1)[1].strip()
    assert "huge.npy" in msg and "100000x100000" in msg and "megapixel" in msg, msg
    # in this process too: refused from the header, nothing allocated
    with pytest.raises(InputError, match="megapixel"):
        cio.load_depth(p)


def test_npy_under_the_cap_but_truncated_is_refused_before_reading(tmp_path):
    # 81 MP of float64 = 648 MB claimed, 80 bytes present: the size check needs no allocation
    p = npy_header_only(tmp_path / "short.npy", (9000, 9000), data=b"\0" * 80)
    out, _ = load_depth_limited(p, mem_mb=500)
    assert "InputError:" in out and "MemoryError" not in out, out
    msg = out.split("InputError:", 1)[1].strip()
    assert "short.npy" in msg and "truncated" in msg, msg


def test_npy_header_checks_keep_the_old_messages(tmp_path):
    p = npy_header_only(tmp_path / "obj.npy", (3, 3), dtype="|O")
    with pytest.raises(InputError, match="obj.npy"):
        cio.load_depth(p)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(InputError, match="junk.npy"):
        cio.load_depth(tmp_path / "junk.npy")
    np.save(tmp_path / "col.npy", np.ones((1, 20, 30), np.float32))
    assert cio.load_depth(tmp_path / "col.npy").shape == (20, 30)


@pytest.mark.parametrize("kind", ["png", "tif"])
def test_image_depth_over_the_cap_is_refused_from_its_header(tmp_path, kind):
    p = png_header_only(tmp_path / "big.png", 16000, 16000) if kind == "png" else tiff_claiming(tmp_path / "big.tif", 12000, 9000)
    out, cpu_s = load_depth_limited(p)
    assert "InputError:" in out, out
    msg = out.split("InputError:", 1)[1].strip()
    assert p.name in msg and ("megapixel" in msg or "too large" in msg), msg
    assert cpu_s < 5, cpu_s


# ----------------------------------------------------------------------------- 3: --long-side
@pytest.mark.parametrize("value", [100000, 4097, 0, -5])
def test_working_size_refuses_a_long_side_out_of_range(value):
    with pytest.raises(InputError) as e:
        cio.working_size(640, 480, long_side=value)
    msg = str(e.value)
    assert "\n" not in msg and str(value) in msg and "64" in msg and str(cio.MAX_LONG_SIDE) in msg, msg


def test_working_size_accepts_the_limits():
    assert cio.working_size(640, 480, long_side=cio.MAX_LONG_SIDE) == (1536, 1152)
    assert cio.working_size(640, 480, long_side=64) == (64, 64)


def _cli_argv(command: str, tmp_path: Path, value: str) -> list[str]:
    folder = tmp_path / "scene"
    if command == "import-scene":
        return ["import-scene", str(folder), "-o", str(tmp_path / "p.handles"), "--long-side", value]
    if command == "preview":
        return ["preview", str(folder), "--translate", "0", "0", "0", "-o", str(tmp_path / "o.png"), "--long-side", value]
    return ["depth", str(folder / "input.png"), "-o", str(tmp_path / "d.npy"), "--long-side", value]


@pytest.mark.parametrize("command", ["import-scene", "preview", "depth"])
@pytest.mark.parametrize("value", ["100000", "0", "-5", "big"])
def test_cli_long_side_is_bounded_and_positive(tmp_path, capsys, command, value):
    from core.cli import main

    make_dh_folder(tmp_path / "scene")
    code = main(_cli_argv(command, tmp_path, value))
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "argument --long-side" in last and value in last and str(cio.MAX_LONG_SIDE) in last, err
    assert not (tmp_path / "p.handles").exists() and not (tmp_path / "o.png").exists()


def test_cli_help_states_the_long_side_limit(capsys):
    from core.cli import main

    for command in ("import-scene", "preview", "depth"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"64 to {cio.MAX_LONG_SIDE}" in text, (command, text)


def test_one_long_side_limit_for_every_command_the_settings_and_projects():
    from core.commands import LONG_SIDE_RANGE
    from core.settings import Settings

    assert LONG_SIDE_RANGE == f"{cio.MIN_LONG_SIDE} to {cio.MAX_LONG_SIDE}"
    assert Settings(working_resolution=cio.MAX_LONG_SIDE).validated().working_resolution == cio.MAX_LONG_SIDE
    with pytest.warns(UserWarning, match="working_resolution"):  # an earlier version's large setting: the largest now
        assert Settings(working_resolution=cio.MAX_LONG_SIDE + 64).validated().working_resolution == cio.MAX_LONG_SIDE
    with pytest.warns(UserWarning, match="working_resolution"):  # nonsense: the default
        assert Settings(working_resolution=100_000).validated().working_resolution == 512


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--width", "2048"],
        ["render", "SRC", "--resolution", "0"],
        ["render", "SRC", "--resolution", "100000"],
        ["render", "SRC", "--resolution", "100"],
    ],
)
def test_sizes_of_sample_and_render_have_the_same_limit(tmp_path, capsys, argv):
    """sample --width 2048 and render --resolution 0/100000/100 are refused at once, before any
    work (render --resolution 0 used to mean the default; 100000 failed after the model load)."""
    from core.cli import main

    folder = make_dh_folder(tmp_path / "scene")
    argv = [str(folder) if a == "SRC" else a for a in argv] + ["-o", str(tmp_path / ("s.handles" if argv[0] == "sample" else "r.png"))]
    code = main(argv)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == (1 if argv[0] == "sample" else 2) and str(cio.MAX_LONG_SIDE) in last and "64" in last, last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_preview_at_the_largest_long_side_stays_under_2_gb(tmp_path):
    """The worst case at the limit: an object over 94 % of the photo, moved close to the camera, at
    --long-side MAX_LONG_SIDE, with all three outputs: under 2 GB of address space and 30 s of CPU
    (at 2048 px it took 6.4 GB and 48 s, at 4096 px 5.8 GB for a small object)."""
    folder = make_dh_folder(tmp_path / "scene", 512, 512)
    m = np.zeros((512, 512), np.uint8)
    m[16:496, 16:496] = 255
    Image.fromarray(m).save(folder / "mask.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(folder / "input.png")
    argv = ["preview", str(folder), "--translate", "0.3", "0", "-1", "-o", str(tmp_path / "p.png"), "--depth-out", str(tmp_path / "d.npy")]
    argv += ["--hole-out", str(tmp_path / "h.png"), "--long-side", str(cio.MAX_LONG_SIDE)]
    text, cpu_s = run_limited(f"import sys\nfrom core.cli import main\nsys.exit(main({argv!r}))", mem_mb=2048, timeout=120)
    assert f"({cio.MAX_LONG_SIDE}x{cio.MAX_LONG_SIDE}," in text and "error" not in text, text
    assert cpu_s < 30, cpu_s


def test_load_any_scene_does_not_turn_zero_into_the_default(tmp_path):
    from core.commands.project import load_any_scene

    folder = make_dh_folder(tmp_path / "scene")
    with pytest.raises(InputError, match="64"):
        load_any_scene(folder, long_side=0)
    assert load_any_scene(folder)[0].size == (512, 512)


# ----------------------------------------------------------------------------- 4: layered EXR channels
def write_exr(path: Path, channels: dict[str, float], h: int = 8, w: int = 12) -> Path:
    import OpenEXR

    chans = {k: OpenEXR.Channel(np.full((h, w), v, np.float32)) for k, v in channels.items()}
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, chans) as f:
        f.write(str(path))
    return path


@pytest.mark.parametrize(
    "channels, expected",
    [
        ({"view.Z": 7.0, "view.R": 0.5, "view.G": 0.5, "view.B": 0.5}, 7.0),  # the file
        ({"view.Z": 7.0, "R": 0.5}, 7.0),  # a layer's Z beats a bare colour channel
        ({"Z": 3.0, "a.Z": 5.0, "R": 0.5}, 3.0),  # the exact name first
        ({"R": 0.5, "G": 0.5, "B": 0.5, "render.depth": 4.0}, 4.0),
        ({"beauty.R": 0.5, "beauty.Y": 0.25}, 0.25),  # no depth name at all: Y, then R
    ],
)
def test_exr_prefers_z_like_channels(tmp_path, channels, expected):
    p = write_exr(tmp_path / "layers.exr", channels)
    np.testing.assert_array_equal(cio.load_depth(p), np.full((8, 12), expected, np.float32))


# ----------------------------------------------------------------------------- 5: depth of another shape
def _photo(tmp_path: Path, w: int, h: int) -> Path:
    p = tmp_path / "photo.png"
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(p)
    return p


@pytest.mark.parametrize("dw, dh", [(100, 37), (1, 1), (512, 256), (256, 512), (512, 560)])
def test_depth_of_another_aspect_ratio_is_refused(tmp_path, dw, dh):
    photo = _photo(tmp_path, 512, 512)
    np.save(tmp_path / "d.npy", np.ones((dh, dw), np.float32))
    with pytest.raises(InputError) as e:
        cio.scene_from_photo(photo, tmp_path / "d.npy")
    msg = str(e.value)
    assert "\n" not in msg and "d.npy" in msg and f"{dw}x{dh}" in msg and "512x512" in msg, msg
    with pytest.raises(InputError, match=f"{dw}x{dh}"):
        cio.scene_from_photo(photo, np.ones((dh, dw), np.float32))


@pytest.mark.parametrize(
    "photo_wh, depth_wh",
    [
        ((512, 512), (256, 256)),  # the same aspect, resampled
        ((512, 512), (1024, 1024)),
        ((1920, 1080), (512, 320)),  # a depth made at the working size (the `depth` command's output)
        ((1920, 1080), (960, 540)),  # a depth at the photo's aspect
        ((200, 120), (100, 61)),  # one pixel of rounding
        ((2000, 1200), (1008, 600)),  # 0.8 % off
    ],
)
def test_depth_of_the_photos_or_the_working_aspect_is_accepted(tmp_path, photo_wh, depth_wh):
    photo = _photo(tmp_path, *photo_wh)
    dw, dh = depth_wh
    s = cio.scene_from_photo(photo, np.full((dh, dw), 2.0, np.float32))
    assert s.depth.shape == (s.size[1], s.size[0]) and np.all(s.depth == 2.0)


def test_load_depth_to_a_working_size_refuses_a_gross_mismatch(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((37, 100), np.float32))
    with pytest.raises(InputError) as e:
        cio.load_depth(tmp_path / "d.npy", size=(512, 512))
    assert "100x37" in str(e.value) and "512x512" in str(e.value)
    # without the photo's size, any aspect that gives the same working size passes
    np.save(tmp_path / "w.npy", np.ones((1080, 1920), np.float32))
    assert cio.load_depth(tmp_path / "w.npy", size=(512, 320)).shape == (320, 512)
    assert cio.prepare_depth(np.ones((320, 512), np.float32), size=(256, 192)).shape == (192, 256)  # 1.6 -> 256x192


# ----------------------------------------------------------------------------- 6: memory under the pixel cap
def test_a_100_megapixel_depth_under_the_cap_imports_in_bounded_memory(tmp_path):
    """A 220 KB EXR of 10000x10000 (the cap) for a small photo: accepted and resampled, under 1.5 GB
    of address space (it took 3.9 GB: full-size float64 disparities and masks in the value check
    and the edge-aware resize)."""
    folder = make_dh_folder(tmp_path / "scene")
    constant_exr(folder / "depth.exr", 10_000, 10_000, {"Y": 3.0})
    assert (folder / "depth.exr").stat().st_size < 1_000_000
    out, cpu_s = run_limited(
        f"""
        import sys
        from core.cli import main
        sys.exit(main(["import-scene", {str(folder)!r}, "-o", {str(tmp_path / "p.handles")!r}]))
        """,
        mem_mb=1500,
    )
    assert "wrote" in out and "MemoryError" not in out and "error" not in out, out
    assert cpu_s < 30, cpu_s


def test_a_100_megapixel_exr_of_many_channels_is_refused_from_its_header(tmp_path):
    """OpenEXR's binding decodes every channel: four float32 channels of 100 MP (a 2 MB file) took
    2 GB. Over two channels' worth of samples the file is refused before any pixel is read; two
    (Z and Y) still import, under 1.5 GB."""
    folder = make_dh_folder(tmp_path / "scene")
    constant_exr(folder / "depth.exr", 10_000, 10_000, {"Z": 3.0, "R": 0.5, "G": 0.5, "B": 0.5}, float32=True)
    code = f"""
        import sys
        from core.cli import main
        sys.exit(main(["import-scene", {str(folder)!r}, "-o", {str(tmp_path / "p.handles")!r}]))
        """
    out, cpu_s = run_limited(code, mem_mb=700)
    assert "handles-studio: error:" in out and "depth.exr" in out and "400 million channel samples" in out and "single-channel" in out, out
    assert cpu_s < 5 and not (tmp_path / "p.handles").exists(), cpu_s
    constant_exr(folder / "depth.exr", 10_000, 10_000, {"Z": 3.0, "Y": 0.5}, float32=True)
    out, cpu_s = run_limited(code, mem_mb=1500)
    assert "wrote" in out and "error" not in out, out
    assert cpu_s < 30, cpu_s


def png16_constant(path: Path, width: int, height: int, value: int, scale: float) -> Path:
    """A 16-bit grayscale PNG of one value with its depth scale, streamed (never held whole)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + struct.pack(">H", value) * width
    c = zlib.compressobj(6)
    rows = max(1, (8 << 20) // len(row))
    idat = b"".join(c.compress(row * min(rows, height - y)) for y in range(0, height, rows)) + c.flush()
    text = cio.DEPTH_SCALE_KEY.encode() + b"\0" + repr(scale).encode()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", text) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_100_megapixel_16_bit_png_depth_loads_in_bounded_memory(tmp_path):
    """A 16-bit PNG depth of 10000x10000 (a few hundred KB) for a small photo: read strip by strip
    into float32 when every scaled value is well inside the depth range, under 1.3 GB of address
    space (a full-size float64 copy took 1.7 GB, 2.4 GB with repair)."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(photo)
    depth = png16_constant(tmp_path / "depth.png", 10_000, 10_000, 3000, 0.001)
    assert depth.stat().st_size < 2_000_000
    np.testing.assert_array_equal(cio.load_depth(png16_constant(tmp_path / "small.png", 40, 30, 3000, 0.001)), np.full((30, 40), 3.0, np.float32))
    out, cpu_s = run_limited(
        f"""
        from core import io as cio
        s = cio.scene_from_photo({str(photo)!r}, {str(depth)!r})
        print("LOADED", s.depth.shape, float(s.depth.min()), float(s.depth.max()))
        """,
        mem_mb=1300,
    )
    assert "LOADED (512, 512) 3.0 3.0" in out, out
    assert cpu_s < 30, cpu_s


def test_a_100_megapixel_photo_mask_and_depth_import_in_bounded_memory(tmp_path):
    """The largest photo accepted, with its mask and depth (under 1 MB in all): under 2 GB of
    address space (it took 4.2 GB)."""
    from tests.core.test_hostile_projects import png_zeros

    folder = tmp_path / "scene"
    folder.mkdir()
    (folder / "input.png").write_bytes(png_zeros(10_000, 10_000))
    mask = Image.new("L", (10_000, 10_000), 0)
    mask.paste(255, (3000, 3000, 6000, 6000))
    mask.save(folder / "mask.png")
    del mask
    constant_exr(folder / "depth.exr", 10_000, 10_000, {"Y": 3.0})
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    out, cpu_s = run_limited(
        f"""
        import sys
        from core.cli import main
        sys.exit(main(["import-scene", {str(folder)!r}, "-o", {str(tmp_path / "p.handles")!r}]))
        """,
        mem_mb=2048,
    )
    assert "wrote" in out and "(512x512, 0 variants)" in out and "MemoryError" not in out, out
    assert cpu_s < 30, cpu_s


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "PT", "L", "I;16", "I", "F", "CMYK", "1"])
def test_photos_converted_in_strips_are_the_photos_converted_whole(tmp_path, monkeypatch, mode):
    """The strip-by-strip conversion (a second full copy of a 100 MP photo is never made) gives the
    very pixels of a whole-image conversion: strips of 7 rows against one strip."""
    rng = np.random.default_rng(5)
    h, w = 45, 31
    if mode in ("I;16", "I"):
        im = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32))
    elif mode in ("P", "PT"):
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert("P")
        if mode == "PT":
            im.info["transparency"] = 7
    else:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    assert im.mode == ("P" if mode == "PT" else mode)
    path = tmp_path / ("p.tif" if mode in ("I;16", "I", "F", "CMYK") else "p.png")
    im.save(path)
    whole = cio.load_photo(path, long_side=64)
    monkeypatch.setattr(cio, "STRIP_PIXELS", 7 * w)
    strips = cio.load_photo(path, long_side=64)
    np.testing.assert_array_equal(strips.original, whole.original)
    assert (strips.alpha is None) == (whole.alpha is None)
    if whole.alpha is not None:
        np.testing.assert_array_equal(strips.alpha, whole.alpha)


def test_depth_checked_and_resized_in_strips_is_the_depth_checked_whole(monkeypatch):
    """Edges found strip by strip (with a row of context each side) and invalid values counted
    strip by strip: the same resized depth and the same message as in one pass."""
    rng = np.random.default_rng(2)
    d = np.full((101, 77), 6.0, np.float32)
    d[20:70, 10:40] = 2.0  # a box: depth edges across many strips
    d += rng.random(d.shape, dtype=np.float32) * 0.01
    bad = d.copy()
    bad[[3, 50, 99], [5, 30, 70]] = [np.nan, -1.0, 0.0]
    whole = cio.resize_depth(d, (40, 52))
    with pytest.raises(InputError) as e_whole:
        cio.prepare_depth(bad)
    monkeypatch.setattr(cio, "STRIP_PIXELS", 5 * 77)
    np.testing.assert_array_equal(cio.resize_depth(d, (40, 52)), whole)
    with pytest.raises(InputError) as e_strips:
        cio.prepare_depth(bad)
    assert str(e_strips.value) == str(e_whole.value)
    assert "3 invalid values" in str(e_whole.value) and "NaN 1" in str(e_whole.value)
