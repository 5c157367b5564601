"""The engine in a process of its own (core.worker): the same pixels as in-process, cancel,
crash and restart, stored identities fetched only when needed, the wire format's refusals."""

from __future__ import annotations

import dataclasses
import glob
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection

import numpy as np
import pytest

from core import wire
from core.jobs import Cancelled, CancelToken, Error, Finished, Progress
from core.sample import sample_scene
from core.transform import Transform3D
from core.worker import EngineCrashError, EngineProcess, ModelRendererFactory, TaskSpec, execute_render


def _shm_blocks() -> set[str]:
    return set(glob.glob("/dev/shm/psm_*"))


@pytest.fixture(scope="module")
def engine():
    states: list[str] = []
    e = EngineProcess(on_state=states.append, env=dict(os.environ, OMP_NUM_THREADS="2"))
    e.states = states  # type: ignore[attr-defined]
    yield e
    e.shutdown()
    assert e.state == "stopped"


def _scene():
    s = sample_scene()
    s.objects[0].transform = Transform3D(translation=(0.25, 0.0, 0.0))
    return s


def _request(scene, preset="fast", steps=4, seed=0):
    from core.request import resolve_request
    from core.settings import Settings

    req = resolve_request(scene, {"preset": preset, "steps": steps, "seed": seed}, Settings(device="cpu"))
    if preset != "geometric":
        assert req.model == "world" and req.model_path, "the sample renders with the bundled world model"
    return req


def test_the_engine_starts_in_its_own_process_and_reports_idle(engine):
    assert engine.pid and engine.pid != os.getpid()
    assert engine.states[:2] == ["starting", "idle"]


def test_a_render_in_the_engine_process_equals_the_same_render_in_this_process(engine):
    scene = _scene()
    req = _request(scene)
    events = []
    remote = engine.render(scene, req, {}, events.append, CancelToken())
    assert isinstance(remote, Finished), remote
    assert remote.request is req and remote.info["renderer"] == "diffusion-handles" and not remote.info["geometric"]
    assert any(isinstance(e, Progress) and e.stage == "render" for e in events)
    local = execute_render(ModelRendererFactory(), scene, req, {}, lambda e: None, CancelToken())
    assert remote.image.shape == local.image.shape and np.array_equal(remote.image, local.image)
    assert set(remote.blobs) == set(local.blobs) and all(remote.blobs[k] == local.blobs[k] for k in local.blobs)
    assert engine.state == "idle"


def test_a_stored_identity_crosses_only_when_the_renderer_asks_for_it(engine):
    scene = _scene()
    req = _request(scene, seed=1)
    first = engine.render(scene, req, {}, lambda e: None, CancelToken())
    ((name, data),) = first.blobs.items()
    freed = engine.task(TaskSpec("unload"), lambda e: None, CancelToken())  # the engine forgets it
    assert freed >= 1  # the world model was loaded in the engine's process, and is no more

    class Watched(dict):
        reads: list = []

        def __getitem__(self, key):
            self.reads.append(key)
            return dict.__getitem__(self, key)

    caches = Watched({name: data, "render:unrelated": b"x" * 1000})
    again = engine.render(scene, req, caches, lambda e: None, CancelToken())
    assert isinstance(again, Finished) and again.info["identity_reused"] == "stored"
    assert Watched.reads == [name]  # the other cache never travelled
    assert np.array_equal(again.image, first.image) and again.blobs == {}


def test_cancel_reaches_the_engine_at_its_next_step(engine):
    scene = _scene()
    req = _request(scene, steps=12, seed=2)
    token = CancelToken()
    t = {}

    def emit(ev):
        if isinstance(ev, Progress) and ev.stage in ("identity", "render") and "at" not in t:
            t["at"] = time.monotonic()
            token.cancel()

    final = engine.render(scene, req, {}, emit, token)
    assert isinstance(final, Cancelled) and final.request is req
    assert time.monotonic() - t["at"] < 10.0
    # the engine still works afterwards
    assert isinstance(engine.render(scene, _request(scene, "geometric"), {}, lambda e: None, CancelToken()), Finished)


def test_a_killed_engine_is_a_one_line_error_and_restarts(engine):
    scene = _scene()
    req = _request(scene, steps=12, seed=3)
    old = engine.pid

    def kill(ev):
        if isinstance(ev, Progress) and ev.stage in ("identity", "render"):
            os.kill(engine.pid, signal.SIGKILL)

    before = _shm_blocks()
    with pytest.raises(EngineCrashError) as info:
        engine.render(scene, req, {}, kill, CancelToken())
    msg = str(info.value)
    assert "\n" not in msg and "killed by signal 9" in msg and "restarts" in msg
    deadline = time.monotonic() + 60
    while engine.state != "idle" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.state == "idle" and engine.pid != old and "restarting" in engine.states
    fin = engine.render(scene, _request(scene, "geometric"), {}, lambda e: None, CancelToken())
    assert isinstance(fin, Finished) and fin.info["geometric"]
    assert _shm_blocks() <= before  # nothing left behind in shared memory


def test_a_failing_task_is_an_error_and_an_unknown_task_is_named(engine):
    with pytest.raises(Exception) as info:
        engine.task(TaskSpec("no-such-task"), lambda e: None, CancelToken())
    assert "unknown engine task 'no-such-task'" in str(info.value)
    with pytest.raises(Exception) as info:
        engine.task(TaskSpec("depth", {"model": "/nonexistent/depth-model"}, {"photo": np.zeros((8, 8, 3), np.uint8)}), lambda e: None, CancelToken())
    assert "\n" not in str(info.value).strip()
    assert engine.state == "idle"


def test_an_error_in_a_render_comes_back_as_an_error_event(engine):
    scene = _scene()
    req = dataclasses.replace(_request(scene), model_path="/nonexistent/model")
    final = engine.render(scene, req, {}, lambda e: None, CancelToken())
    assert isinstance(final, Error) and final.message and "\n" not in final.message


def _in_thread(fn, timeout: float):
    """fn() on a thread of its own; (returned, raised), or pytest.fail when it does not return."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"did not return within {timeout} s")
    return out.get("value"), out.get("error")


def test_a_job_cancelled_before_the_host_starts_it_is_still_answered(monkeypatch):
    """The hang CI met: a render cancelled while it waited in the host was dropped without an
    answer, and its client waited for one for ever. Here the host is busy with a job that holds
    until released; a second job arrives and is cancelled while it waits."""
    import core.worker as worker

    started, release = threading.Event(), threading.Event()

    def hold(state, spec, emit, token):
        started.set()
        release.wait(10)
        deadline = time.monotonic() + 10
        while not token.cancelled and time.monotonic() < deadline:  # job 2 has arrived
            time.sleep(0.01)
        time.sleep(0.5)  # and its cancel, sent right behind it, has been read
        return "held"

    monkeypatch.setitem(worker.TASKS, "hold", hold)
    ours, theirs = _pair()
    host = threading.Thread(target=worker.serve, args=(theirs, worker.EngineState(factory=None), False), daemon=True)
    host.start()
    assert wire.recv(ours)[0] == "hello"
    wire.send(ours, "task", {"job": 1, "name": "hold", "params": {}}, local=False)
    assert started.wait(10)
    wire.send(ours, "task", {"job": 2, "name": "hold", "params": {}}, local=False)  # latest wins: job 1 is cancelled
    wire.send(ours, "cancel", {"job": 2}, local=False)  # job 2 never started
    release.set()
    answers = {}
    while len(answers) < 2:
        assert ours.poll(10), f"the host answered only {answers}"
        kind, header, _ = wire.recv(ours)
        answers[header["job"]] = kind
    assert answers == {1: "cancelled", 2: "cancelled"}
    wire.send(ours, "shutdown", {}, local=False)
    host.join(10)
    assert not host.is_alive()


def test_cancelled_at_once_a_render_always_comes_back(engine):
    """Through the real client and host: a token cancelled before the render is sent makes the
    cancel follow the render at once, the race that hung the editor about one render in six."""
    scene = _scene()
    req = _request(scene, "geometric")
    for _ in range(25):
        token = CancelToken()
        token.cancel()
        final, err = _in_thread(lambda token=token: engine.render(scene, req, {}, lambda e: None, token), 20)
        assert err is None and isinstance(final, (Cancelled, Finished)), (final, err)
    assert engine.state == "idle"


def test_a_host_that_ignores_cancel_is_replaced_and_shutdown_never_hangs(monkeypatch):
    import core.worker as worker

    monkeypatch.setattr(worker, "CANCEL_GRACE_S", 1.0)
    scene = _scene()
    req = _request(scene, steps=12, seed=4)
    e = EngineProcess(env=dict(os.environ, OMP_NUM_THREADS="2"))
    try:
        # the host stops answering (SIGSTOP) in the middle of a render, and the user cancels
        token = CancelToken()

        def freeze(ev):
            if isinstance(ev, Progress) and ev.stage in ("identity", "render") and not token.cancelled:
                os.kill(e.pid, signal.SIGSTOP)
                token.cancel()

        old = e.pid
        t0 = time.monotonic()
        _, err = _in_thread(lambda: e.render(scene, req, {}, freeze, token), 30)
        assert isinstance(err, EngineCrashError) and "did not stop within 1 s of Cancel" in str(err) and "\n" not in str(err)
        assert time.monotonic() - t0 < 20
        deadline = time.monotonic() + 60
        while e.state != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e.state == "idle" and e.pid != old
        # a frozen host during a job: shutdown returns within its timeout (twice: lock, then kill)
        monkeypatch.setattr(worker, "CANCEL_GRACE_S", 600.0)
        token = CancelToken()
        froze = threading.Event()

        def freeze_only(ev):
            if isinstance(ev, Progress) and ev.stage in ("identity", "render") and not froze.is_set():
                os.kill(e.pid, signal.SIGSTOP)
                froze.set()

        job = threading.Thread(target=lambda: _in_thread(lambda: e.render(scene, req, {}, freeze_only, token), 60), daemon=True)
        job.start()
        assert froze.wait(60)
        t0 = time.monotonic()
        _, err = _in_thread(lambda: e.shutdown(timeout=2.0), 30)
        assert err is None and time.monotonic() - t0 < 12 and e.state == "stopped"
        job.join(30)
        assert not job.is_alive()
    finally:
        e.shutdown(timeout=2.0)


# ----------------------------------------------------------------------------- the wire
def _pair():
    a, b = socket.socketpair()
    return Connection(a.detach()), Connection(b.detach())


def _send_and_receive(a, b, *message, local: bool = True):
    """``wire.send(a, *message)`` from a thread of its own (inline arrays fill the socket until
    they are read) and ``wire.recv(b)``; (what send returned, what recv returned)."""
    sent: list = []
    t = threading.Thread(target=lambda: sent.append(wire.send(a, *message, local=local)))
    t.start()
    got = wire.recv(b)
    t.join(10)
    return sent[0], got


@pytest.mark.parametrize("local", [True, False])
def test_arrays_cross_exactly_by_socket_and_by_shared_memory(local):
    a, b = _pair()
    big = np.random.default_rng(0).integers(0, 255, (700, 800, 3), dtype=np.uint8)  # > 1 MB
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    before = _shm_blocks()
    blocks, (kind, header, arrays) = _send_and_receive(a, b, "x", {"v": 1.5, "nan": float("nan")}, {"big": big, "small": small, "mask": small > 3}, local=local)
    assert bool(blocks) == local
    assert kind == "x" and header == {"v": 1.5, "nan": "nan"}
    assert np.array_equal(arrays["big"], big) and np.array_equal(arrays["small"], small) and arrays["mask"].dtype == bool
    assert _shm_blocks() <= before  # the receiver unlinked what it read


def test_the_wire_refuses_what_it_cannot_carry_safely():
    a, b = _pair()
    with pytest.raises(wire.WireError, match="dtype object"):
        wire.send(a, "x", {}, {"o": np.array([object()])})
    a.send_bytes(b"not json")
    with pytest.raises(wire.WireError, match="malformed engine message"):
        wire.recv(b)
    a.send_bytes(b'{"kind": "x", "header": {}, "arrays": {"p": {"dtype": "object", "shape": [1]}}}')
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.recv(b)
    a.send_bytes(b'{"kind": "x", "header": {}, "arrays": {"p": {"dtype": "uint8", "shape": [4]}}}')
    a.send_bytes(b"abc")
    with pytest.raises(wire.WireError, match="3 bytes"):
        wire.recv(b)
    a.send_bytes(b'{"kind": "x", "header": {}, "arrays": {"p": {"dtype": "uint8", "shape": [4], "shm": "psm_gone_0"}}}')
    with pytest.raises(wire.WireError, match="gone"):
        wire.recv(b)


def test_a_scene_crosses_the_wire_whole():
    s = _scene()
    s.variants = {"left": {s.objects[0].name: Transform3D(translation=(0.1, 0.0, 0.0))}}
    s.background_depth = s.depth + 1.0
    a, b = _pair()
    header, arrays = wire.scene_to_wire(s)
    _, (_, h, arr) = _send_and_receive(a, b, "scene", header, arrays)
    t = wire.scene_from_wire(h, arr)
    assert np.array_equal(t.photo, s.photo) and np.array_equal(t.depth, s.depth) and np.array_equal(t.background_depth, s.background_depth)
    assert [(o.id, o.name, o.visible, o.transform) for o in t.objects] == [(o.id, o.name, o.visible, o.transform) for o in s.objects]
    assert all(np.array_equal(o.mask, p.mask) for o, p in zip(t.objects, s.objects))
    assert t.camera == s.camera and t.variants == s.variants and t.prompt == s.prompt
