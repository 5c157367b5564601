"""core.project: round trip of every field, atomic saving (failure, SIGKILL), hostile and damaged files, migrations."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import project as P
from core.camera import Camera
from core.errors import ProjectError
from core.scene import Scene, SceneObject
from core.transform import Transform3D

REPO = Path(__file__).resolve().parents[2]


def make_scene(w=128, h=64, seed=0) -> Scene:
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.01 * x + 0.02 * y).astype(np.float32)
    m1 = np.zeros((h, w), bool)
    m1[10:30, 20:50] = True
    m2 = np.zeros((h, w), bool)
    m2[35:60, 70:120] = True
    t1 = Transform3D.from_axis_angle((0.2, 1.0, 0.1), 17.0, translation=(0.1, -0.2, 0.3), scale=1.25)
    t2 = Transform3D(translation=(-0.5, 0.0, 1.0))
    scene = Scene(
        photo=photo,
        depth=depth,
        camera=Camera(w, h, 48.5),
        prompt="a cup on a table, ünïcode",
        objects=[SceneObject("cup", m1, t1, True, "id-cup"), SceneObject("plate", m2, t2, False, "id-plate")],
        variants={"left": {"cup": t2, "plate": t1}, "empty": {}},
        name="kitchen",
        depth_unit="cm",
        depth_source="estimated:depth-anything-small",
        original_photo=rng.integers(0, 256, (h * 3, w * 3, 3), dtype=np.uint8),
        alpha=rng.random((h, w)).astype(np.float32),
        background_depth=(depth + 1.0).astype(np.float32),
    )
    return scene


def make_project(seed=0, cache_bytes=3_000_000) -> P.Project:
    scene = make_scene(seed=seed)
    rng = np.random.default_rng(seed + 1)
    renders = [
        P.RenderRecord(
            image=rng.integers(0, 256, (64, 128, 3), dtype=np.uint8),
            request={"scene_id": "abc", "transforms": {"cup": Transform3D().to_dict()}, "seed": i, "steps": 50},
            info={"renderer": "fake", "seconds": np.float32(1.5), "unet_evals": np.int64(50), "shape": np.array([64, 128])},
            created=f"2026-01-0{i + 1}T10:00:00+00:00",
            id=f"render{i}",
        )
        for i in range(2)
    ]
    return P.Project(
        scene=scene,
        renders=renders,
        settings={"render": {"preset": "fast", "steps": 20}, "ui": {"split": [0.4, 0.6]}},
        caches={"identity:abc": rng.integers(0, 256, cache_bytes, dtype=np.uint8).tobytes(), "empty": b""},
        thumbnail=rng.integers(0, 256, (128, 256, 3), dtype=np.uint8),
    )


def assert_same_transform(a: Transform3D, b: Transform3D):
    np.testing.assert_allclose(a.translation, b.translation, atol=1e-12)
    np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-12)
    assert a.scale == pytest.approx(b.scale, abs=1e-12)


# ----------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_field(tmp_path):
    pr = make_project()
    path = P.save_project(tmp_path / "k.handles", pr)
    q = P.load_project(path)
    s, t = pr.scene, q.scene
    np.testing.assert_array_equal(t.photo, s.photo)
    np.testing.assert_array_equal(t.depth, s.depth)
    assert t.depth.dtype == np.float32
    np.testing.assert_array_equal(t.original_photo, s.original_photo)
    np.testing.assert_array_equal(t.alpha, s.alpha)
    np.testing.assert_array_equal(t.background_depth, s.background_depth)
    assert t.camera == s.camera
    assert (t.prompt, t.name, t.depth_unit, t.depth_source) == (s.prompt, s.name, s.depth_unit, s.depth_source)
    assert [(o.name, o.id, o.visible) for o in t.objects] == [("cup", "id-cup", True), ("plate", "id-plate", False)]
    for a, b in zip(t.objects, s.objects):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert_same_transform(a.transform, b.transform)
    assert set(t.variants) == {"left", "empty"} and t.variants["empty"] == {}
    for o in ("cup", "plate"):
        assert_same_transform(t.variants["left"][o], s.variants["left"][o])
    assert len(q.renders) == 2
    for a, b in zip(q.renders, pr.renders):
        np.testing.assert_array_equal(a.image, b.image)
        assert (a.id, a.created) == (b.id, b.created)
        assert a.request == b.request
    assert q.renders[0].info == {"renderer": "fake", "seconds": 1.5, "unet_evals": 50, "shape": [64, 128]}
    assert q.settings == pr.settings
    assert q.caches == pr.caches
    np.testing.assert_array_equal(q.thumbnail, pr.thumbnail)
    assert q.created and q.modified and q.schema_version == P.SCHEMA_VERSION
    # skipping caches
    assert P.load_project(path, caches=False).caches == {}


def test_minimal_scene_and_automatic_thumbnail(tmp_path):
    scene = Scene(photo=np.full((512, 384, 3), 9, np.uint8), depth=np.ones((512, 384), np.float32), camera=Camera(384, 512))
    P.save_project(tmp_path / "m.handles", P.Project(scene))
    q = P.load_project(tmp_path / "m.handles")
    assert q.thumbnail.shape == (256, 192, 3) and int(q.thumbnail.mean()) == 9  # long side 256, from the photo
    assert q.scene.objects == [] and q.renders == [] and q.scene.original_photo is None and q.scene.alpha is None
    # with renders: the latest render
    img = np.full((512, 384, 3), 200, np.uint8)
    P.save_project(tmp_path / "r.handles", P.Project(scene, renders=[P.RenderRecord(img)]))
    assert int(P.load_project(tmp_path / "r.handles").thumbnail.mean()) == 200


def test_zip_layout(tmp_path):
    path = P.save_project(tmp_path / "k.handles", make_project())
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert infos[0].filename == "mimetype" and infos[0].compress_type == zipfile.ZIP_STORED
        assert zf.read("mimetype") == b"application/x-handles-studio"
        m = json.loads(zf.read("manifest.json"))
        assert m["schema_version"] == P.SCHEMA_VERSION and m["app_version"] and m["created"] and m["modified"]
        caches = {c["name"]: c for c in m["caches"]}
        cinfo = zf.getinfo(caches["identity:abc"]["entry"])
        assert cinfo.compress_type == zipfile.ZIP_STORED and cinfo.file_size == 3_000_000
        assert Image.open(io.BytesIO(zf.read(m["thumbnail"]))).size == (256, 128)
    # the raw mimetype bytes sit at the very start (after the 30-byte local header + name)
    raw = path.read_bytes()
    assert raw[30:38] == b"mimetype" and raw[38:66] == b"application/x-handles-studio"


# ----------------------------------------------------------------------------- atomic saving
def test_backup_and_no_leftovers(tmp_path):
    path = tmp_path / "k.handles"
    P.save_project(path, make_project(seed=1, cache_bytes=10))
    first = path.read_bytes()
    P.save_project(path, make_project(seed=2, cache_bytes=10))
    assert P.backup_path(path).read_bytes() == first
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.handles", "k.handles.bak"]
    assert P.load_project(path).scene.photo.tobytes() == make_scene(seed=2).photo.tobytes()


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "k.handles"
    P.save_project(path, make_project(seed=1, cache_bytes=10))
    before = path.read_bytes()

    real = P._npy_bytes
    calls = {"n": 0}

    def failing(arr):
        calls["n"] += 1
        if calls["n"] == 2:  # in the middle of writing the new zip
            raise OSError(28, "No space left on device")
        return real(arr)

    monkeypatch.setattr(P, "_npy_bytes", failing)
    with pytest.raises(ProjectError) as e:
        P.save_project(path, make_project(seed=2, cache_bytes=10))
    assert "(disk full)" in str(e.value) and "unchanged" in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.handles"]  # temp file removed, no .bak yet
    monkeypatch.setattr(P, "_npy_bytes", real)

    # failing at the very last step (the rename) also leaves the target intact
    def no_replace(src, dst):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(P.os, "replace", no_replace)
    with pytest.raises(ProjectError):
        P.save_project(path, make_project(seed=3, cache_bytes=10))
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert P.load_project(path).scene.photo.tobytes() == make_scene(seed=1).photo.tobytes()


def test_next_save_removes_stale_temp_files(tmp_path):
    path = tmp_path / "k.handles"
    stale = tmp_path / ".k.handles.abc123.tmp"
    fresh = tmp_path / ".k.handles.def456.tmp"
    other = tmp_path / ".other.handles.abc.tmp"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - P.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    P.save_project(path, make_project(cache_bytes=10))
    assert not stale.exists() and fresh.exists() and other.exists()


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(ProjectError) as e:
        P.save_project(tmp_path / "nope" / "k.handles", make_project(cache_bytes=10))
    assert "does not exist" in str(e.value)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, zipfile
    import numpy as np
    from core import project as P
    path = sys.argv[1]
    pr = P.load_project(path)
    pr.scene.prompt = "NEW"
    pr.caches["big"] = np.zeros(48 * 1024 * 1024, np.uint8).tobytes()
    P._CHUNK = 256 * 1024
    real_write = zipfile._ZipWriteFile.write
    def slow_write(self, data):
        time.sleep(0.02)  # make the save last long enough to be killed in the middle
        return real_write(self, data)
    zipfile._ZipWriteFile.write = slow_write
    print("saving", flush=True)
    P.save_project(path, pr)
    print("saved", flush=True)
    """
)


def test_sigkill_during_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "k.handles"
    P.save_project(path, make_project(seed=4, cache_bytes=10))
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        tmp = None
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if tmps and tmps[0].stat().st_size > 2 * 1024 * 1024:
                tmp = tmps[0]
                break
            time.sleep(0.02)
        assert tmp is not None, f"the save never started: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    q = P.load_project(path)
    assert q.scene.prompt == make_scene().prompt and "big" not in q.caches
    # the partial temp file is not a valid project
    with pytest.raises(ProjectError):
        P.load_project(tmp)


# ----------------------------------------------------------------------------- bad files
def rewrite(src: Path, dst: Path, drop=(), replace=None, extra=(), first=None):
    """Copy a project zip entry by entry, dropping/replacing entries and adding extra ones."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = [i.filename for i in zin.infolist()]
        if first:
            names.remove(first)
            names.insert(0, first)
        for name in names:
            if name in drop:
                continue
            data = replace[name] if name in replace else zin.read(name)
            zout.writestr(name, data, compress_type=zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED)
        for name, data in extra:
            if isinstance(name, str):
                zout.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
            else:
                zout.writestr(name, data)
    return dst


@pytest.fixture
def saved(tmp_path):
    return P.save_project(tmp_path / "good.handles", make_project(cache_bytes=1000))


def load_and_use(path) -> P.Project:
    """Load a project and touch everything that is read lazily (render images, thumbnail, caches)."""
    q = P.load_project(path)
    for r in q.renders:
        assert r.image is not None
    assert q.thumbnail is None or q.thumbnail.ndim == 3
    for name in q.caches:
        assert isinstance(q.caches[name], bytes)
    return q


def expect_error(path, *words):
    before = sorted(p.name for p in Path(path).parent.parent.rglob("*"))
    with pytest.raises(ProjectError) as e:
        load_and_use(path)
    msg = str(e.value)
    assert "\n" not in msg and Path(path).name in msg, msg
    for w in words:
        assert w in msg, msg
    assert sorted(p.name for p in Path(path).parent.parent.rglob("*")) == before  # loading writes nothing
    return msg


def test_not_a_project(tmp_path):
    (tmp_path / "text.handles").write_text("hello")
    expect_error(tmp_path / "text.handles", "not a Handles Studio project")
    (tmp_path / "empty.handles").write_bytes(b"")
    expect_error(tmp_path / "empty.handles", "empty")
    expect_error(tmp_path / "missing.handles", "not found")
    with zipfile.ZipFile(tmp_path / "other.handles", "w") as zf:
        zf.writestr("mimetype", "application/zip")
    expect_error(tmp_path / "other.handles", "mimetype")


def test_mimetype_must_come_first(saved, tmp_path):
    expect_error(rewrite(saved, tmp_path / "order.handles", first="manifest.json"), "first entry")


@pytest.mark.parametrize("frac", [0.05, 0.5, 0.9, 0.999])
def test_truncated_zip(saved, tmp_path, frac):
    data = saved.read_bytes()
    cut = tmp_path / "cut.handles"
    cut.write_bytes(data[: int(len(data) * frac)])
    expect_error(cut)


def test_corrupt_entry_is_named(saved, tmp_path):
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("scene/depth.npy")
    data = bytearray(saved.read_bytes())
    # local header: 30 bytes + name + extra; flip bytes inside the compressed data
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(start + info.compress_size // 2, start + info.compress_size // 2 + 8):
        data[k] ^= 0xFF
    bad = tmp_path / "bad.handles"
    bad.write_bytes(bytes(data))
    expect_error(bad, "entry 'scene/depth.npy'")


def test_missing_and_malformed_entries(saved, tmp_path):
    expect_error(rewrite(saved, tmp_path / "a.handles", drop=["scene/depth.npy"]), "entry 'scene/depth.npy'", "missing")
    expect_error(rewrite(saved, tmp_path / "b.handles", drop=["manifest.json"]), "entry 'manifest.json'", "missing")
    expect_error(rewrite(saved, tmp_path / "c.handles", replace={"manifest.json": b"{not json"}), "entry 'manifest.json'", "JSON")
    expect_error(rewrite(saved, tmp_path / "d.handles", replace={"scene/photo.png": b"\x89PNG garbage"}), "entry 'scene/photo.png'")
    with zipfile.ZipFile(saved) as zf:
        m = json.loads(zf.read("manifest.json"))
    mask = m["scene"]["objects"][0]["mask"]
    small = io.BytesIO()
    Image.fromarray(np.zeros((10, 10), bool)).save(small, format="PNG")
    expect_error(rewrite(saved, tmp_path / "e.handles", replace={mask: small.getvalue()}), f"entry '{mask}'", "10x10")
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 3), np.float32))
    expect_error(rewrite(saved, tmp_path / "f.handles", replace={"scene/depth.npy": buf.getvalue()}), "entry 'scene/depth.npy'", "shape")
    m2 = json.loads(json.dumps(m))
    m2["scene"]["objects"][0]["transform"]["scale"] = -1
    expect_error(rewrite(saved, tmp_path / "g.handles", replace={"manifest.json": json.dumps(m2).encode()}), "scale")
    m3 = json.loads(json.dumps(m))
    del m3["scene"]["camera"]
    expect_error(rewrite(saved, tmp_path / "h.handles", replace={"manifest.json": json.dumps(m3).encode()}), "camera")
    np.save(buf := io.BytesIO(), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    expect_error(rewrite(saved, tmp_path / "i.handles", replace={"scene/depth.npy": buf.getvalue()}), "entry 'scene/depth.npy'")


def test_newer_schema_is_refused(saved, tmp_path):
    with zipfile.ZipFile(saved) as zf:
        m = json.loads(zf.read("manifest.json"))
    m["schema_version"] = P.SCHEMA_VERSION + 1
    msg = expect_error(
        rewrite(saved, tmp_path / "new.handles", replace={"manifest.json": json.dumps(m).encode()}),
        "newer Handles Studio",
        f"schema {P.SCHEMA_VERSION + 1}",
        "update to open it",
    )
    assert msg


@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil.txt", "escapes"),
        ("scene/../../evil.txt", "escapes"),
        ("/etc/evil", "absolute"),
        ("C:/Windows/evil.dll", "drive letter"),
        ("c:evil", "drive letter"),
        ("scene\\..\\evil", "backslash"),
    ],
)
def test_path_escaping_entries(saved, tmp_path, name, why):
    sub = tmp_path / "inner"
    sub.mkdir()
    hostile = rewrite(saved, sub / "hostile.handles", extra=[(name, b"pwned")])
    msg = expect_error(hostile, "unsafe path", why)
    assert name in msg
    assert not (tmp_path / "evil.txt").exists() and not (sub / "evil.txt").exists()


def test_duplicate_and_symlink_entries(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        dup = rewrite(saved, tmp_path / "dup.handles", extra=[("manifest.json", b"{}")])
    expect_error(dup, "entry 'manifest.json'", "twice")
    link = zipfile.ZipInfo("scene/link")
    link.external_attr = 0o120777 << 16
    expect_error(rewrite(saved, tmp_path / "link.handles", extra=[(link, b"/etc/passwd")]), "symbolic link")


def test_zip_bomb_declared_size(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_ASSET_BYTES", 1024 * 1024)
    bomb = rewrite(saved, tmp_path / "bomb.handles", extra=[("scene/zeros.bin", b"\0" * (4 * 1024 * 1024))])
    assert bomb.stat().st_size - saved.stat().st_size < 100_000  # 4 MiB of zeros compress to a few KiB
    expect_error(bomb, "entry 'scene/zeros.bin'", "zip bomb")


def test_zip_bomb_total_size_and_entry_count(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_TOTAL_BYTES", 2 * 1024 * 1024)
    extra = [(f"pad/{i}.bin", b"\0" * (512 * 1024)) for i in range(5)]
    expect_error(rewrite(saved, tmp_path / "total.handles", extra=extra), "in all", "zip bomb")
    monkeypatch.undo()
    monkeypatch.setattr(P, "MAX_ENTRIES", 20)
    extra = [(f"pad/{i}.bin", b"x") for i in range(30)]
    expect_error(rewrite(saved, tmp_path / "many.handles", extra=extra), "entries")


def test_zip_bomb_real_size_beyond_the_declared_one(saved, tmp_path):
    """An entry whose header lies about its size: the reader stops at the declared size and fails."""
    real = b"\0" * (8 * 1024 * 1024)
    src = rewrite(saved, tmp_path / "liar.handles", extra=[("caches/lie.bin", real)])
    with zipfile.ZipFile(src) as zf:
        m = json.loads(zf.read("manifest.json"))
    m["caches"].append({"name": "lie", "entry": "caches/lie.bin", "size": 1000})
    src = rewrite(src, tmp_path / "liar2.handles", replace={"manifest.json": json.dumps(m).encode()})
    data = bytearray(src.read_bytes())
    # patch the declared uncompressed size (central directory and local header) down to 1000 bytes
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("caches/lie.bin")
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        assert pos >= 0
        n = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if bytes(data[pos + 46 : pos + 46 + n]) == b"caches/lie.bin":
            data[pos + 24 : pos + 28] = (1000).to_bytes(4, "little")
            break
        pos += 4
    data[info.header_offset + 22 : info.header_offset + 26] = (1000).to_bytes(4, "little")
    liar = tmp_path / "liar3.handles"
    liar.write_bytes(bytes(data))
    t0 = time.monotonic()
    expect_error(liar, "entry 'caches/lie.bin'")
    assert time.monotonic() - t0 < 5


# ----------------------------------------------------------------------------- migrations
def write_schema0(path: Path, scene: Scene):
    """A project in the pre-release layout (schema 0): flat manifest, transforms as t/q/s."""

    def png(a):
        b = io.BytesIO()
        Image.fromarray(a).save(b, format="PNG")
        return b.getvalue()

    def npy(a):
        b = io.BytesIO()
        np.save(b, a)
        return b.getvalue()

    manifest = {
        "schema_version": 0,
        "name": scene.name,
        "prompt": scene.prompt,
        "camera": scene.camera.to_dict(),
        "photo": "photo.png",
        "depth": "depth.npy",
        "objects": [
            {"name": o.name, "mask": f"mask{i}.png", "transform": {"t": list(o.transform.translation), "q": list(o.transform.rotation), "s": o.transform.scale}}
            for i, o in enumerate(scene.objects)
        ],
        "variants": {"v": {"cup": {"t": [1, 2, 3]}}},
        "renders": [{"image": "render0.png", "request": {"seed": 7}, "created": "2025-12-01"}],
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", P.MIMETYPE, compress_type=zipfile.ZIP_STORED)
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("photo.png", png(scene.photo))
        zf.writestr("depth.npy", npy(scene.depth))
        for i, o in enumerate(scene.objects):
            zf.writestr(f"mask{i}.png", png(o.mask))
        zf.writestr("render0.png", png(scene.photo[::-1].copy()))
    return path


def test_migration_from_the_pre_release_schema(tmp_path):
    scene = make_scene()
    q = P.load_project(write_schema0(tmp_path / "old.handles", scene))
    assert q.schema_version == P.SCHEMA_VERSION
    assert [o.name for o in q.scene.objects] == ["cup", "plate"]
    for a, b in zip(q.scene.objects, scene.objects):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert_same_transform(a.transform, b.transform)
    np.testing.assert_array_equal(q.scene.depth, scene.depth)
    assert q.scene.variants["v"]["cup"].translation == (1.0, 2.0, 3.0)
    assert q.renders[0].request == {"seed": 7}
    np.testing.assert_array_equal(q.renders[0].image, scene.photo[::-1])
    # re-saving writes the current schema
    P.save_project(tmp_path / "old.handles", q)
    with zipfile.ZipFile(tmp_path / "old.handles") as zf:
        assert json.loads(zf.read("manifest.json"))["schema_version"] == P.SCHEMA_VERSION


def test_migration_registry_chains_versions(saved, monkeypatch):
    """A registered step N -> N+1 runs on load; a missing step is a clear error."""
    monkeypatch.setattr(P, "SCHEMA_VERSION", P.SCHEMA_VERSION + 1)
    old = P.SCHEMA_VERSION - 1

    def upgrade(manifest, reader):
        manifest = dict(manifest)
        manifest["scene"] = dict(manifest["scene"], prompt=manifest["scene"]["prompt"].upper())
        # a migration can read entries through the reader
        assert reader.read("mimetype") == P.MIMETYPE.encode()
        return manifest

    monkeypatch.setitem(P.MIGRATIONS, old, upgrade)
    q = P.load_project(saved)
    assert q.scene.prompt == make_scene().prompt.upper()
    monkeypatch.delitem(P.MIGRATIONS, old)
    with pytest.raises(ProjectError) as e:
        P.load_project(saved)
    assert f"schema {old}" in str(e.value) and "no migration" in str(e.value)


def test_large_stored_cache_is_checked(saved, tmp_path):
    """Big caches are read straight from the file: a flipped byte is still caught (CRC), and so is a cut."""
    path = P.save_project(tmp_path / "big.handles", make_project(cache_bytes=5_000_000))
    assert P.load_project(path).caches["identity:abc"] == make_project(cache_bytes=5_000_000).caches["identity:abc"]
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
        entry = next(c["entry"] for c in m["caches"] if c["name"] == "identity:abc")
        info = zf.getinfo(entry)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(entry) + 2_500_000] ^= 0x01
    bad = tmp_path / "flip.handles"
    bad.write_bytes(bytes(data))
    expect_error(bad, f"entry '{entry}'", "CRC")


def test_permissions_and_symlinks(tmp_path):
    path = tmp_path / "k.handles"
    P.save_project(path, make_project(cache_bytes=10))
    from core.atomic import umask

    assert path.stat().st_mode & 0o777 == 0o666 & ~umask()
    os.chmod(path, 0o640)
    P.save_project(path, make_project(seed=5, cache_bytes=10))
    assert path.stat().st_mode & 0o777 == 0o640  # a re-save keeps the file's permissions
    link = tmp_path / "link.handles"
    link.symlink_to(path)
    P.save_project(link, make_project(seed=6, cache_bytes=10))
    assert link.is_symlink()
    assert P.load_project(path).scene.photo.tobytes() == make_scene(seed=6).photo.tobytes()
