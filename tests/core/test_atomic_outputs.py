"""Every output is written atomically: a failed write (full disk, read-only folder, bad second
output, Ctrl+C) leaves the previous file byte-identical and no temporary behind."""

from __future__ import annotations

import builtins
import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.cli import main
from core.errors import InputError


# ----------------------------------------------------------------------------- helpers
def full_disk_after_a_few_bytes(monkeypatch) -> None:
    """Simulate a full disk: the image and .npy encoders write a few bytes, then ENOSPC."""

    def fail(fp):
        fp.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ImageFile, "_save", lambda im, fp, *args, **kwargs: fail(fp))
    monkeypatch.setattr(np.lib.format, "write_array", lambda fp, *args, **kwargs: fail(fp))


def old_file(path: Path, data: bytes = b"the previous contents " * 64) -> bytes:
    path.write_bytes(data)
    return data


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def readonly(folder: Path, monkeypatch) -> None:
    """Make ``folder`` read-only: no file can be created, renamed or removed in it, while its
    existing (writable) files can still be opened for writing, as on a real read-only folder.
    Permissions do not stop root, so for root the same rules are enforced by patching the calls."""
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return
    here = folder.resolve()
    real_open, real_os_open = builtins.open, os.open
    real_replace, real_unlink = os.replace, os.unlink

    def inside(p) -> bool:
        try:
            return Path(os.fspath(p)).resolve().parent == here
        except TypeError:
            return False

    def deny(p):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and inside(file) and not os.path.exists(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and inside(path) and not os.path.exists(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_replace(src, dst, *args, **kwargs):
        if inside(src) or inside(dst):
            deny(dst)
        return real_replace(src, dst, *args, **kwargs)

    def fake_unlink(path, *args, **kwargs):
        if inside(path):
            deny(path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(os, "unlink", fake_unlink)


@pytest.fixture
def ro_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A small (128x64) copy of the built-in sample as a project file."""
    from core.project import Project, save_project
    from core.sample import sample_scene

    path = tmp_path_factory.mktemp("proj") / "s.handles"
    save_project(path, Project(scene=sample_scene(128, 64)))
    return path


def preview(project: Path, *outputs, capsys) -> tuple[int, str]:
    code = main(["preview", str(project), "--object", "sphere", "--translate", "0.2", "0", "0", *map(str, outputs)])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- (a) full disk
def test_image_export_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    from editor.files import export_image

    target = tmp_path / "render.png"
    before = old_file(target)
    full_disk_after_a_few_bytes(monkeypatch)
    with pytest.raises(InputError) as e:
        export_image(target, np.zeros((8, 8, 3), np.uint8))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(target)) and "disk full" in msg and ".tmp" not in msg
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["render.png"]


@pytest.mark.parametrize("name", ["depth.npy", "depth.png"])
def test_depth_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, name):
    from core.io import save_depth

    target = tmp_path / name
    before = old_file(target)
    full_disk_after_a_few_bytes(monkeypatch)
    with pytest.raises(InputError, match="disk full") as e:
        save_depth(target, np.full((4, 6), 2.0, np.float32))
    assert str(e.value).startswith(str(target))
    assert target.read_bytes() == before
    assert listing(tmp_path) == [name]


def test_preview_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, capsys, project):
    out = tmp_path / "p.png"
    before = old_file(out)
    full_disk_after_a_few_bytes(monkeypatch)
    code, err = preview(project, "-o", out, capsys=capsys)
    line = one_line(err)
    assert code == 1 and str(out) in line and "disk full" in line and ".tmp" not in line
    assert out.read_bytes() == before
    assert listing(tmp_path) == ["p.png"]


def test_preview_failing_on_its_second_output_leaves_the_first_unwritten(tmp_path, monkeypatch, capsys, project):
    out, depth = tmp_path / "p.png", tmp_path / "d.npy"
    before = old_file(depth)
    monkeypatch.setattr(np.lib.format, "write_array", lambda fp, *a, **k: (fp.write(b"x"), _raise(errno.ENOSPC)))
    code, err = preview(project, "-o", out, "--depth-out", depth, capsys=capsys)
    assert code == 1 and "disk full" in one_line(err) and str(depth) in err
    assert depth.read_bytes() == before and not out.exists()
    assert listing(tmp_path) == ["d.npy"]


def _raise(code: int):
    raise OSError(code, os.strerror(code))


# ----------------------------------------------------------------------------- (b) read-only folder
def test_preview_into_a_read_only_folder_is_one_line_naming_the_target(ro_folder, monkeypatch, capsys, project):
    out = ro_folder / "p.png"
    before = old_file(out)
    readonly(ro_folder, monkeypatch)
    code, err = preview(project, "-o", out, capsys=capsys)
    line = one_line(err)
    assert code == 1 and f"{out}: cannot write the preview image" in line and "permission" in line and str(ro_folder) in line
    assert out.read_bytes() == before


def test_image_export_into_a_read_only_folder(ro_folder, monkeypatch):
    from editor.files import export_image

    target = ro_folder / "x.jpg"
    before = old_file(target)
    readonly(ro_folder, monkeypatch)
    with pytest.raises(InputError, match="no permission to write in folder") as e:
        export_image(target, np.zeros((8, 8, 3), np.uint8))
    assert str(e.value).startswith(str(target)) and "\n" not in str(e.value)
    assert target.read_bytes() == before and listing(ro_folder) == ["x.jpg"]


# ----------------------------------------------------------------------------- (c) bad second output
@pytest.mark.parametrize(
    "extra",
    [
        ("--hole-out", "hole.xyz"),
        ("--depth-out", "depth.jpg"),
        ("--hole-out", "missing/hole.png"),
        ("--hole-out", "p.png"),  # the same file twice
    ],
)
def test_preview_with_a_bad_output_writes_nothing(tmp_path, capsys, project, extra):
    flag, name = extra
    code, err = preview(project, "-o", tmp_path / "p.png", "--depth-out", tmp_path / "d.npy", flag, tmp_path / name, capsys=capsys)
    assert code == 1 and str(tmp_path / name) in one_line(err)
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- the helper itself
def test_the_temporary_is_named_after_the_target_and_removed_on_ctrl_c(tmp_path):
    from core.atomic import atomic_write

    target = tmp_path / "out.bin"
    before = old_file(target)
    seen = []

    def write(tmp: Path):
        seen.append(tmp)
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(f".out.bin.w{os.getpid()}-") and seen[0].name.endswith(".tmp")
    assert target.read_bytes() == before and listing(tmp_path) == ["out.bin"]


def test_all_or_nothing_and_modes(tmp_path):
    from core.atomic import Output, atomic_write_bytes, write_atomically

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    before = old_file(first)
    first.chmod(0o640)

    def bad(tmp: Path):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(InputError, match=r"b\.txt: cannot write the mask \(Input/output error\)"):
        write_atomically([Output(first, lambda t: t.write_bytes(b"new")), Output(second, bad, "mask")])
    assert first.read_bytes() == before and listing(tmp_path) == ["a.txt"]
    write_atomically([Output(first, lambda t: t.write_bytes(b"new")), Output(second, lambda t: t.write_bytes(b"2"))])
    assert first.read_bytes() == b"new" and second.read_bytes() == b"2"
    assert stat.S_IMODE(first.stat().st_mode) == 0o640  # the replaced file's mode is kept
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(second.stat().st_mode) == 0o666 & ~umask  # not the temporary's private 0600
    link = tmp_path / "link.txt"
    link.symlink_to(first)
    atomic_write_bytes(link, b"through the link")
    assert link.is_symlink() and first.read_bytes() == b"through the link"


def test_image_format_comes_from_the_target_and_errors_name_it(tmp_path):
    from core.atomic import save_image

    save_image(tmp_path / "x.jpg", np.full((8, 8, 3), 128, np.uint8))
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.format == "JPEG"
    with pytest.raises(InputError, match=r"missing[/\\]x\.png: cannot write the image \(folder .*missing does not exist\)"):
        save_image(tmp_path / "missing" / "x.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(InputError, match="unsupported image type .gif"):
        save_image(tmp_path / "x.gif", np.zeros((2, 2), np.uint8))
    assert listing(tmp_path) == ["x.jpg"]


def test_settings_writes_stay_atomic_and_raise_oserror(tmp_path, monkeypatch):
    from core.settings import atomic_write_text

    target = tmp_path / "settings.json"
    before = old_file(target)
    monkeypatch.setattr(os, "fsync", lambda fd: _raise(errno.ENOSPC))
    with pytest.raises(OSError, match="settings.json: cannot write the file \\(disk full\\)"):
        atomic_write_text(target, "{}")
    assert target.read_bytes() == before and listing(tmp_path) == ["settings.json"]


def test_atomic_output_context_manager(tmp_path):
    from core.atomic import atomic_output

    target = tmp_path / "c.bin"
    before = old_file(target)
    with pytest.raises(InputError, match=r"c\.bin: cannot write the cloud \(disk full\); the previous file is unchanged"):
        with atomic_output(target, what="cloud", keep_suffix=True) as tmp:
            assert tmp.name.endswith(".tmp.bin")
            tmp.write_bytes(b"half")
            _raise(errno.ENOSPC)
    assert target.read_bytes() == before and listing(tmp_path) == ["c.bin"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and listing(tmp_path) == ["c.bin"]


# ----------------------------------------------------------------------------- (d) read-only folder: transforms, projects
def test_transforms_and_projects_into_a_read_only_folder_name_the_target(ro_folder, monkeypatch, capsys, project):
    """The temporary is never named: export-transforms went through its own mkstemp, and a project
    save created its temporary outside its error handling (a raw PermissionError naming it)."""
    tj, pj = ro_folder / "t.json", ro_folder / "p.handles"
    before = old_file(tj), old_file(pj)
    readonly(ro_folder, monkeypatch)
    assert main(["export-transforms", str(project), "-o", str(tj)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"{tj}: cannot write the transforms file (no permission to write in folder {ro_folder})" in line and ".tmp" not in line, line
    assert main(["sample", "--width", "64", "--height", "64", "-o", str(pj)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"{pj}: cannot save the project (no permission to write in folder {ro_folder})" in line and ".tmp" not in line, line
    assert (tj.read_bytes(), pj.read_bytes()) == before and listing(ro_folder) == ["p.handles", "t.json"]


# ----------------------------------------------------------------------------- (e) killed writers leave nothing behind
KILLED_PREVIEW = """
    import os, sys, time
    from core.cli import main
    def stop(fd):  # the new image is in the temporary: be killed here
        print("ready", flush=True)
        time.sleep(60)
    os.fsync = stop
    main(["preview", sys.argv[1], "--object", "sphere", "--translate", "0.2", "0", "0", "-o", sys.argv[2]])
    """


def test_previews_killed_with_sigkill_leave_nothing_after_the_next_write(tmp_path, project, capsys):
    """Killed writers' temporaries (named after the writer's pid and start time) are removed by the
    next write of the same target, however young; before, they stayed for ever."""
    import signal
    import subprocess
    import sys
    import textwrap

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "p.png"
    before = old_file(out)
    env = dict(os.environ, PYTHONPATH=str(repo), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    for _ in range(2):  # the second killed write already removes what the first left
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(KILLED_PREVIEW), str(project), str(out)], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else ""
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        left = [p.name for p in tmp_path.glob(".p.png.*.tmp")]
        assert len(left) == 1 and left[0].startswith(f".p.png.w{proc.pid}-") and (tmp_path / left[0]).stat().st_size > 0, left
        assert out.read_bytes() == before  # the killed write never replaced it
    assert main(["preview", str(project), "--object", "sphere", "--translate", "0.2", "0", "0", "-o", str(out)]) == 0, capsys.readouterr().err
    assert listing(tmp_path) == ["p.png"] and out.read_bytes() != before
