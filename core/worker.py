"""The engine: renders and model tasks, in this process or in a process of its own.

The editor's render worker (``editor/worker.py``) runs one job at a time, latest wins. A job is a
render (a scene snapshot, a resolved :class:`core.jobs.RenderRequest` and the project's caches) or
a named model task (:class:`TaskSpec`: depth estimation, segmentation, freeing memory). Both run
through :func:`execute_render` / :func:`run_task` here, so the same code serves:

* **in-thread** (tests with fake renderers, ``HANDLES_ENGINE=thread``): the worker thread calls
  them directly;
* **in its own process** (the editor's default): :class:`EngineProcess` starts
  ``python -m core.worker --fd N`` and speaks the engine protocol of :mod:`core.wire` to it over
  a socket pair. The host (:func:`serve`) keeps its models loaded between jobs; a newer job or a
  ``cancel`` message cancels the running one at its next denoising step (the host reads messages
  on a thread of its own while the job computes). If the host dies (a crash, the out-of-memory
  killer), the job in flight ends in a one-line :class:`EngineCrashError` error naming the exit
  status, a fresh host starts at once (state ``restarting`` -> ``idle``), and the editor's
  document is untouched: it never left the editor's process.

Messages, client -> host: ``render`` {job, request, scene, cache names} + scene arrays and cache
blobs; ``task`` {job, name, params} + arrays; ``cancel`` {job}; ``shutdown``. Host -> client, each
with {job}: ``progress``, ``preview``, ``finished``, ``cancelled``, ``error`` (the events of
:mod:`core.jobs`), ``task_done`` {result} + arrays; and ``hello`` {pid} once. JSON and raw arrays
only, so the host could run on another machine (a GPU server) behind the same client calls: see
``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import HandlesError, RenderCancelled
from core.jobs import Cancelled, CancelToken, Error, Event, Finished, Preview, Progress, RenderRequest

log = logging.getLogger(__name__)

EmitFn = Callable[[Any], None]


#: seconds a job may run on after its Cancel before the client replaces the host (a denoising step
#: of a full-size model on a slow CPU takes ~10 s; loading one, which cannot stop midway, longer)
CANCEL_GRACE_S = 60.0


class EngineCrashError(HandlesError):
    """The engine process stopped in the middle of a job."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed by its type unless it is a HandlesError."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, HandlesError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- renderers
class ModelRendererFactory:
    """Real renderer factory: the Diffusion Handles engine for a request that names a model on
    disk, the geometric preview for one that does not (the request says why).

    The request is already resolved (model folder, device, precision, settings:
    :func:`core.request.resolve_request`); the one engine renderer keeps the loaded model (one at
    a time) and the current photo's identity between requests.
    """

    def __init__(self) -> None:
        self._engine = None
        self._lock = threading.Lock()

    def __call__(self, request: RenderRequest):
        from core.render import GeometricRenderer

        if request.geometric or not request.model_path:
            return GeometricRenderer()
        with self._lock:
            if self._engine is None:
                from core.ml.handles import DiffusionHandlesRenderer  # heavy: torch, diffusers

                self._engine = DiffusionHandlesRenderer()
            return self._engine

    def unload(self) -> None:
        with self._lock:
            if self._engine is not None:
                log.info("unloading the diffusion engine")
                self._engine.clear()
            self._engine = None


def execute_render(factory, scene, request: RenderRequest, caches: dict, emit: EmitFn, token: CancelToken) -> Finished:
    """Render ``scene`` for ``request`` with the factory's renderer; the Finished event (not emitted)."""
    from core.render import GeometricRenderer

    emit(Progress(stage="loading", step=0, total=1, message="preparing the renderer"))
    renderer = factory(request)
    token.check()
    t0 = time.monotonic()
    result = renderer.render(scene, request, emit, token, caches=caches)
    token.check()
    info = {"renderer": getattr(renderer, "name", type(renderer).__name__), **result.info}
    info.setdefault("seconds", round(time.monotonic() - t0, 3))
    info.setdefault("geometric", isinstance(renderer, GeometricRenderer))
    return Finished(request, result.image, info, dict(result.blobs))


# ----------------------------------------------------------------------------- tasks
@dataclass
class TaskSpec:
    """A model task by name (see :data:`TASKS`) with JSON-able ``params`` and named ``arrays``:
    what can cross to an engine process, unlike a closure."""

    name: str
    params: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


@dataclass
class EngineState:
    """What an engine keeps between jobs: the renderer factory (its loaded model and identity)
    and the loaded segmenters."""

    factory: Any = field(default_factory=ModelRendererFactory)
    segmenters: dict = field(default_factory=dict)


def _task_depth(state: EngineState, spec: TaskSpec, emit: EmitFn, token: CancelToken):
    from core.ml.depth import DepthEstimator  # heavy: torch, transformers

    model = str(spec.params["model"])
    photo = spec.arrays["photo"]
    emit(Progress(stage="loading", step=0, total=2, message=f"loading {model}"))
    est = DepthEstimator(model, device=str(spec.params.get("device", "auto")), extra_dirs=list(spec.params.get("extra_dirs") or []))
    token.check()
    emit(Progress(stage="depth", step=1, total=2, message="estimating depth"))
    h, w = photo.shape[:2]
    depth = est.estimate(photo, size=(w, h))
    token.check()
    emit(Progress(stage="depth", step=2, total=2))
    return np.asarray(depth, dtype=np.float32)


def _task_segment(state: EngineState, spec: TaskSpec, emit: EmitFn, token: CancelToken):
    from core.ml.segment import Segmenter

    name = str(spec.params["name"])
    seg = state.segmenters.get(name)
    if seg is None:
        emit(Progress(stage="loading", step=0, total=1, message=f"loading {name}"))
        seg = state.segmenters[name] = Segmenter(name, device=str(spec.params.get("device", "auto")), extra_dirs=list(spec.params.get("folders") or []))
    token.check()
    points = [(float(x), float(y), int(label)) for x, y, label in spec.params.get("points") or []]
    return np.asarray(seg.segment(spec.arrays["photo"], points=points), dtype=bool)


def _task_unload(state: EngineState, spec: TaskSpec, emit: EmitFn, token: CancelToken):
    from core.ml.device import free_memory, unload_all

    if hasattr(state.factory, "unload"):
        state.factory.unload()  # the engines (and the identities they hold in memory)
    state.segmenters.clear()
    count = unload_all()  # every model in the shared cache: diffusion, depth, SAM
    free_memory()
    return count


def _task_learn(state: EngineState, spec: TaskSpec, emit: EmitFn, token: CancelToken):
    """Learn an identity lock (``core.ml.handles.lock``) of one object on the request's model,
    in the renderer that renders with it (the model is loaded once for both). Params:
    ``request`` (a resolved RenderRequest as a dict), ``word``, ``object_id``, ``settings``
    (LockSettings fields); arrays: ``photo``, ``depth``, ``mask`` and optionally ``photo_1``,
    ``depth_1``, ``mask_1``, ... (extra photos of the object). Result: the lock's bytes as uint8."""
    from core.ml.handles.lock import LockSettings

    request = RenderRequest.from_dict(dict(spec.params["request"]))
    if request.geometric or not request.model_path:
        raise HandlesError(request.missing or "locking an identity needs a diffusion model; choose one in the Render panel")
    renderer = state.factory(request)
    if not hasattr(renderer, "learn"):
        raise HandlesError("this renderer cannot learn identity locks")
    views = []
    for suffix in [""] + [f"_{i}" for i in range(1, 64)]:
        if f"photo{suffix}" not in spec.arrays:
            break
        views.append((spec.arrays[f"photo{suffix}"], spec.arrays[f"depth{suffix}"], np.asarray(spec.arrays[f"mask{suffix}"], bool)))
    settings = LockSettings(**dict(spec.params.get("settings") or {}))
    lock = renderer.learn(views, request, str(spec.params["word"]), settings, object_id=str(spec.params.get("object_id", "")), emit=emit, token=token)
    return np.frombuffer(lock.to_bytes(), dtype=np.uint8).copy()


#: name -> fn(state, spec, emit, token) -> result (an array, or a JSON-able value)
TASKS: dict[str, Callable] = {"depth": _task_depth, "segment": _task_segment, "unload": _task_unload, "learn": _task_learn}


def run_task(state: EngineState, spec: TaskSpec, emit: EmitFn, token: CancelToken):
    fn = TASKS.get(spec.name)
    if fn is None:
        raise HandlesError(f"unknown engine task {spec.name!r} (known: {', '.join(sorted(TASKS))})")
    token.check()
    result = fn(state, spec, emit, token)
    token.check()
    return result


# ----------------------------------------------------------------------------- the host
class _RemoteCaches(dict):
    """The client's project caches as the host sees them: every name is known, a value crosses
    only when the renderer reads it (``need_cache`` -> ``cache``), so a project's other stored
    identities and renders never travel."""

    def __init__(self, names, fetch: Callable[[str], bytes | None]) -> None:
        super().__init__()
        self._names = set(names)
        self._fetch = fetch

    def __contains__(self, key) -> bool:
        return key in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self):
        return iter(sorted(self._names))

    def __getitem__(self, key: str) -> bytes:
        if key not in self._names:
            raise KeyError(key)
        if not dict.__contains__(self, key):
            data = self._fetch(key)
            if data is None:
                self._names.discard(key)
                raise KeyError(key)
            dict.__setitem__(self, key, data)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


def serve(conn, state: EngineState | None = None, local: bool = True) -> int:
    """The engine host's loop on ``conn`` until ``shutdown`` or the client is gone."""
    from core import wire

    state = state or EngineState()
    send_lock = threading.Lock()
    cond = threading.Condition()
    pending: list[tuple[str, dict, dict]] = []
    current: dict[str, Any] = {"job": None, "token": None}
    stopping = threading.Event()
    answers: dict[tuple, Any] = {}

    def send(kind: str, header: dict, arrays: dict | None = None) -> None:
        with send_lock:
            wire.send(conn, kind, header, arrays, local=local)

    def reader() -> None:
        try:
            while True:
                kind, header, arrays = wire.recv(conn)
                with cond:
                    if kind == "shutdown":
                        stopping.set()
                    elif kind == "cache":
                        answers[(header.get("job"), header.get("name"))] = arrays.get("data") if header.get("present") else None
                    elif kind == "cancel":
                        if current["job"] == header.get("job") and current["token"] is not None:
                            current["token"].cancel()
                        # a job cancelled before it started still gets its answer: its client waits for one
                        dropped = [p for p in pending if p[1].get("job") == header.get("job")]
                        pending[:] = [p for p in pending if p[1].get("job") != header.get("job")]
                        for _, old, _ in dropped:
                            send("cancelled", {"job": old.get("job")})
                    elif kind in ("render", "task"):
                        if current["token"] is not None:
                            current["token"].cancel()  # latest wins
                        for _, old, _ in pending:
                            send("cancelled", {"job": old.get("job")})
                        pending[:] = [(kind, header, arrays)]
                    cond.notify_all()
                    if stopping.is_set():
                        return
        except (EOFError, OSError):
            stopping.set()  # the client is gone: stop
        except wire.WireError as exc:
            log.error("engine host: %s", exc)
            stopping.set()
        finally:
            if current["token"] is not None:
                current["token"].cancel()
            with cond:
                cond.notify_all()

    threading.Thread(target=reader, name="engine-reader", daemon=True).start()
    send("hello", {"pid": os.getpid()})
    while True:
        with cond:
            while not pending and not stopping.is_set():
                cond.wait()
            if stopping.is_set():
                return 0
            kind, header, arrays = pending.pop(0)
            token = CancelToken()
            job = header.get("job")
            current.update(job=job, token=token)

        def fetch(name: str, job=job, token=token) -> bytes | None:
            send("need_cache", {"job": job, "name": name})
            with cond:
                while (job, name) not in answers:
                    if stopping.is_set():
                        raise EOFError
                    token.check()
                    cond.wait(0.1)
                data = answers.pop((job, name))
            return None if data is None else data.tobytes()

        def emit(ev, job=job) -> None:
            if isinstance(ev, (Progress, Preview)):
                k, h, a = wire.event_to_wire(ev)
                send(k, {**h, "job": job}, a)

        try:
            if kind == "render":
                request = wire.request_from_wire(header["request"])
                scene = wire.scene_from_wire(header["scene"], arrays)
                caches = _RemoteCaches(header.get("caches") or [], fetch)
                fin = execute_render(state.factory, scene, request, caches, emit, token)
                k, h, a = wire.event_to_wire(fin)
                send(k, {**h, "job": job}, a)
            else:
                spec = TaskSpec(str(header["name"]), dict(header.get("params") or {}), {n: v for n, v in arrays.items()})
                result = run_task(state, spec, emit, token)
                if isinstance(result, np.ndarray):
                    send("task_done", {"job": job, "name": spec.name, "array": True}, {"result": result})
                else:
                    send("task_done", {"job": job, "name": spec.name, "result": result})
        except RenderCancelled:
            send("cancelled", {"job": job})
        except (EOFError, OSError):
            return 0  # the client is gone
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event, never the host's end
            log.error("engine job %s failed: %s", job, one_line(exc), exc_info=True)
            try:
                send("error", {"job": job, "message": one_line(exc), "details": traceback.format_exc()})
            except (EOFError, OSError):
                return 0
        finally:
            with cond:
                current.update(job=None, token=None)


# ----------------------------------------------------------------------------- the client
#: the states an engine reports (the window shows them)
STATES = ("starting", "idle", "busy", "restarting", "stopped")


class EngineProcess:
    """The client of an engine host in a process of its own (see the module docstring).

    :meth:`render` and :meth:`task` block the calling thread (the editor's worker thread) until
    the job ends, relaying its events to ``emit``; a cancelled ``token`` sends ``cancel``. One job
    at a time (the caller serialises). ``on_state(state)`` is called from that thread or the
    restart thread.
    """

    def __init__(self, on_state: Callable[[str], None] | None = None, env: dict | None = None, start: bool = True) -> None:
        self.on_state = on_state
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.RLock()
        self._jobs = 0
        self.state = "stopped"
        self.restarts = 0
        self.pid: int | None = None
        self._stopping = False
        if start:
            self.start()

    # ----- lifecycle -----
    def _set_state(self, state: str) -> None:
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:  # noqa: BLE001 - a status display must not break the engine
                log.exception("engine state callback failed")

    def start(self) -> None:
        from multiprocessing.connection import Connection

        from core import wire

        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._set_state("starting" if self.restarts == 0 else "restarting")
            ours, theirs = socket.socketpair()
            env = dict(os.environ if self._env is None else self._env)
            env.setdefault("HF_HUB_OFFLINE", "1")
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            cmd = [sys.executable, "-m", "core.worker", "--fd", str(theirs.fileno())]
            self._proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
            theirs.close()
            self._conn = Connection(ours.detach())
            try:
                if not self._conn.poll(60):
                    raise EngineCrashError("the engine process did not start within 60 s")
                kind, header, _ = wire.recv(self._conn)
                if kind != "hello":
                    raise EngineCrashError(f"the engine process answered {kind!r} instead of hello")
                self.pid = int(header.get("pid", self._proc.pid))
            except (EOFError, OSError, wire.WireError) as exc:
                code = self._proc.wait(timeout=10)
                raise EngineCrashError(f"the engine process could not start (exit status {code}: {exc})") from exc
            self._stopping = False
            self._set_state("idle")
            log.info("engine process %d started", self.pid)
            threading.Thread(target=self._watch, args=(self._proc,), name="engine-watch", daemon=True).start()

    def _watch(self, proc: subprocess.Popen) -> None:
        """Restart a host that dies while idle (one that dies during a job is the job's error)."""
        code = proc.wait()
        with self._lock:
            if self._proc is not proc or self._stopping:
                return  # shut down, or a job saw it die and restarted it already
            self._proc = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.restarts += 1
            log.error("engine process stopped while idle (exit status %s); restarting it", code)
            try:
                self.start()
            except EngineCrashError as exc:
                log.error("%s", exc)
                self._set_state("stopped")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the host. A job in flight is cancelled first (it sees ``_stopping``); a host that
        does not end it within ``timeout`` is killed, so shutting down never hangs behind a job."""
        from core import wire

        self._stopping = True
        if not self._lock.acquire(timeout=timeout):
            proc = self._proc
            log.error("the engine did not end its job within %.0f s of shutting down; killing it", timeout)
            if proc is not None:
                proc.kill()
            if not self._lock.acquire(timeout=timeout):
                log.error("the engine's job did not return after its process was killed; leaving it")
                self._set_state("stopped")
                return
        try:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            if proc is None:
                return
            try:
                wire.send(conn, "shutdown", {})
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            if conn is not None:
                conn.close()
            self._set_state("stopped")
        finally:
            self._lock.release()

    # ----- jobs -----
    def render(self, scene, request: RenderRequest, caches: dict, emit: EmitFn, token: CancelToken) -> Event:
        """Run a render in the engine; its final event (Finished, Cancelled or Error) is returned,
        the others go to ``emit``. Raises :class:`EngineCrashError` when the engine died."""
        from core import wire

        header, arrays = wire.scene_to_wire(scene)
        msg = {"request": wire.request_to_wire(request), "scene": header, "caches": list(caches)}
        final = self._run("render", msg, arrays, request, emit, token, caches)
        assert isinstance(final, (Finished, Cancelled, Error)), final
        return final

    def task(self, spec: TaskSpec, emit: EmitFn, token: CancelToken):
        """Run a named task in the engine; its result. Raises RenderCancelled when cancelled,
        :class:`EngineCrashError` when the engine died, HandlesError with the engine's message when
        the task failed."""
        ev = self._run("task", {"name": spec.name, "params": spec.params}, dict(spec.arrays), None, emit, token)
        if isinstance(ev, Cancelled):
            raise RenderCancelled("cancelled")
        if isinstance(ev, Error):
            raise HandlesError(ev.message)
        return ev

    def _run(self, kind: str, header: dict, arrays: dict, request: RenderRequest | None, emit: EmitFn, token: CancelToken, caches: dict | None = None) -> Any:
        from core import wire

        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.start()
            conn, proc = self._conn, self._proc
            assert conn is not None and proc is not None
            self._jobs += 1
            job = self._jobs
            blocks: list[str] = []
            self._set_state("busy")
            try:
                blocks = wire.send(conn, kind, {**header, "job": job}, arrays)
                cancel_sent: float | None = None
                killed = False
                while True:
                    if (token.cancelled or self._stopping) and cancel_sent is None:
                        wire.send(conn, "cancel", {"job": job})
                        cancel_sent = time.monotonic()
                    if cancel_sent is not None and not killed and time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                        # a host that does not answer a cancel (stuck in a load, or a bug) is replaced
                        log.error("the engine did not stop job %d within %.0f s of Cancel; killing it", job, CANCEL_GRACE_S)
                        proc.kill()
                        killed = True
                    if not conn.poll(0.05):
                        if proc.poll() is not None and not conn.poll(0):
                            raise EOFError
                        continue
                    k, h, a = wire.recv(conn)
                    if h.get("job") != job:
                        continue  # a late event of an earlier job
                    if k == "need_cache":
                        name = str(h.get("name"))
                        try:
                            data = None if caches is None or name not in caches else caches[name]
                        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
                            log.warning("the project's cache %s cannot be read (%s); the engine recomputes it", name, one_line(exc))
                            data = None
                        extra = {} if data is None else {"data": np.frombuffer(bytes(data), np.uint8)}
                        blocks += wire.send(conn, "cache", {"job": job, "name": name, "present": data is not None}, extra)
                        continue
                    if k == "task_done":
                        self._set_state("idle")
                        return a["result"] if h.get("array") else h.get("result")
                    ev = wire.event_from_wire(k, h, a, request)
                    if k in ("finished", "cancelled", "error"):
                        self._set_state("idle")
                        return ev
                    emit(ev)
            except (EOFError, OSError, wire.WireError) as exc:
                reason = EngineCrashError(f"it did not stop within {CANCEL_GRACE_S:.0f} s of Cancel and was stopped") if killed else exc
                raise self._crashed(blocks, reason) from exc

    def _crashed(self, blocks: list[str], exc: BaseException) -> EngineCrashError:
        from core import wire

        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=5)
        wire.discard_shm(blocks)
        self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if isinstance(exc, EngineCrashError):
            how = str(exc)
        elif code is not None and code < 0:
            how = f"killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
        elif code is not None:
            how = f"exit status {code}"
        else:
            how = one_line(exc)
        if self._stopping:
            self._set_state("stopped")
            return EngineCrashError(f"the engine process stopped while shutting down ({how})")
        self.restarts += 1
        log.error("engine process stopped during a job (%s); restarting it", how)
        self._set_state("restarting")
        threading.Thread(target=self._restart, name="engine-restart", daemon=True).start()
        return EngineCrashError(f"the engine process stopped ({how}); it restarts for the next job, and nothing in the document was lost")

    def _restart(self) -> None:
        try:
            with self._lock:
                if self._proc is not None or self._stopping:
                    return
                self.start()
        except EngineCrashError as exc:
            log.error("%s", exc)
            self._set_state("stopped")


def main(argv: list[str] | None = None) -> int:
    import argparse
    from multiprocessing.connection import Connection

    ap = argparse.ArgumentParser(prog="core.worker", description="the engine host (started by the editor)")
    ap.add_argument("--fd", type=int, required=True, help="the socket the client passed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="engine %(levelname)s %(name)s: %(message)s")
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack on stderr
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return serve(Connection(args.fd))


if __name__ == "__main__":
    sys.exit(main())
