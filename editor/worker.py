"""The render worker: one thread that owns the models and runs one job at a time, latest wins.

The GUI thread submits render requests (:meth:`RenderWorker.submit`) or other model jobs such as
depth estimation (:meth:`RenderWorker.submit_task`). A newer job cancels the running one through
its :class:`core.jobs.CancelToken` and replaces any job still waiting, so while the user drags only
the latest request is rendered. The job's :mod:`core.jobs` events (Queued, Progress, Preview,
Finished, Cancelled, Error, plus :class:`TaskDone` for tasks) are emitted through the Qt signal
:attr:`RenderWorker.event` as ``(job_id, event)``; the worker object lives in the GUI thread, so
Qt queues the signal to it: slots run in the GUI thread and never block on model work.

With ``engine_process=True`` (the editor's default) renders and named model tasks
(:class:`core.worker.TaskSpec`: depth, segmentation, freeing memory) run in the engine's own
process (:class:`core.worker.EngineProcess`): the worker thread only relays the job and its
events, so the editor's interpreter and memory are not the model's; a crash or an out-of-memory
kill of that process ends the job in a one-line error and the engine restarts
(:attr:`RenderWorker.engineState`). Without it (tests with fake renderers, ``HANDLES_ENGINE=thread``)
renderers come from a *renderer factory* ``factory(request) -> Renderer`` called in the worker
thread. :class:`core.worker.ModelRendererFactory` is the real one in either place: the Diffusion
Handles engine when the (already resolved) request names a model on disk (created lazily, kept,
so its identity cache survives between edits of one photo), the geometric renderer otherwise;
the request carries the reason (and the fetch command), and the result's info repeats it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from core.errors import RenderCancelled
from core.jobs import Cancelled, CancelToken, Error, Finished, Queued, RenderRequest
from core.worker import EngineCrashError, EngineProcess, EngineState, ModelRendererFactory, TaskSpec, execute_render, one_line, run_task

__all__ = ["ModelRendererFactory", "RenderWorker", "TaskDone", "TaskSpec", "one_line"]

log = logging.getLogger(__name__)

RendererFactory = Callable[[RenderRequest], Any]
TaskFn = Callable[[Callable[[Any], None], CancelToken], Any]


@dataclass
class TaskDone:
    """A task submitted with :meth:`RenderWorker.submit_task` returned ``result``."""

    name: str
    result: Any


@dataclass
class _Job:
    id: int
    token: CancelToken
    request: RenderRequest | None = None
    scene: Any = None
    task: TaskFn | TaskSpec | None = None
    name: str = "render"
    #: the project's caches (name -> bytes) a renderer may reuse, e.g. a stored identity
    caches: dict = field(default_factory=dict)
    submitted: float = field(default_factory=time.monotonic)


def _describe(job: _Job) -> str:
    """``job 3 (render, request 1a2b...)`` for the log."""
    key = ""
    if job.request is not None:
        try:
            key = f", request {job.request.key()}"
        except Exception:  # noqa: BLE001 - a request that cannot be hashed still renders (and fails there if it must)
            key = ", request ?"
    return f"job {job.id} ({job.name}{key})"


class _Thread(QThread):
    def __init__(self, worker: RenderWorker) -> None:
        super().__init__()
        self._worker = worker
        self.setObjectName("render-worker")

    def run(self) -> None:  # noqa: D401 - Qt override
        self._worker._loop()


class RenderWorker(QObject):
    """One worker thread, one job at a time, latest wins. See the module docstring."""

    #: (job id, core.jobs event or TaskDone)
    event = Signal(int, object)
    #: True while a job runs or waits
    busyChanged = Signal(bool)
    #: the engine process's state (``core.worker.STATES``: starting, idle, busy, restarting, stopped)
    engineState = Signal(str)

    def __init__(self, renderer_factory: RendererFactory | None = None, parent: QObject | None = None, engine_process: bool = False) -> None:
        super().__init__(parent)
        self.renderer_factory: RendererFactory = renderer_factory or ModelRendererFactory()
        #: the engine's own process (renders and model tasks run there), or None: in this thread
        self.engine: EngineProcess | None = EngineProcess(on_state=self.engineState.emit, start=False) if engine_process else None
        self._state = EngineState(factory=self.renderer_factory)
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._pending: _Job | None = None
        self._current: _Job | None = None
        self._stopping = False
        self._busy = False
        self._thread = _Thread(self)
        self._thread.start()

    # ----- GUI-thread API -----
    def submit(self, scene, request: RenderRequest, caches: dict | None = None) -> int:
        """Queue a render of ``scene`` (a snapshot the GUI no longer mutates) for ``request``.

        ``caches`` are the project's stored blobs: a stored identity of this photo is reused, and a
        newly computed one comes back in ``Finished.blobs`` for the project to keep.
        """
        job = _Job(id=next(self._ids), token=CancelToken(), request=request, scene=scene, name="render", caches=dict(caches or {}))
        self._enqueue(job)
        self.event.emit(job.id, Queued(request))
        return job.id

    def submit_task(self, name: str, fn: TaskFn | TaskSpec) -> int:
        """Queue ``fn(emit, token) -> result`` (runs in the worker thread) or a named
        :class:`core.worker.TaskSpec` (runs in the engine, its own process where it has one);
        latest wins too."""
        job = _Job(id=next(self._ids), token=CancelToken(), task=fn, name=name)
        self._enqueue(job)
        return job.id

    def cancel(self) -> None:
        """Cancel the running job and drop the waiting one."""
        dropped = None
        with self._cond:
            if self._current is not None:
                self._current.token.cancel()
            dropped, self._pending = self._pending, None
        if dropped is not None:
            log.debug("job %d (%s) dropped before it started", dropped.id, dropped.name)
            self.event.emit(dropped.id, Cancelled(dropped.request))
        self._update_busy()

    def is_busy(self) -> bool:
        with self._cond:
            return self._current is not None or self._pending is not None

    def current_job(self) -> int | None:
        with self._cond:
            job = self._pending or self._current
            return job.id if job else None

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and stop the thread; True when it stopped within ``timeout_ms``."""
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._current.token.cancel()
            self._pending = None
            self._cond.notify_all()
        stopped = self._thread.wait(timeout_ms)
        if self.engine is not None:
            self.engine.shutdown()
        return stopped

    # ----- internals -----
    def _enqueue(self, job: _Job) -> None:
        dropped = None
        with self._cond:
            if self._stopping:
                raise RuntimeError("the render worker has been shut down")
            if self._current is not None:
                self._current.token.cancel()
            dropped, self._pending = self._pending, job
            self._cond.notify_all()
        if dropped is not None:
            self.event.emit(dropped.id, Cancelled(dropped.request))
        self._update_busy()

    def _update_busy(self) -> None:
        with self._cond:
            busy = self._current is not None or self._pending is not None
            changed = busy != self._busy
            self._busy = busy
        if changed:
            self.busyChanged.emit(busy)

    def _loop(self) -> None:
        if self.engine is not None:
            try:
                self.engine.start()  # now, so that the first render does not wait for it
            except EngineCrashError as exc:
                log.error("%s", exc)  # the first job tries again and reports it
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job, self._pending = self._pending, None
                self._current = job
            try:
                self._execute(job)
            finally:
                with self._cond:
                    self._current = None
                self._update_busy()

    def _execute(self, job: _Job) -> None:
        def emit(ev) -> None:
            self.event.emit(job.id, ev)

        started = time.monotonic()
        what = _describe(job)
        log.info("%s started after %.2f s in the queue", what, started - job.submitted)
        try:
            job.token.check()
            if job.task is not None:
                if isinstance(job.task, TaskSpec):
                    if self.engine is not None:
                        result = self.engine.task(job.task, emit, job.token)
                    else:
                        result = run_task(self._state, job.task, emit, job.token)
                else:
                    result = job.task(emit, job.token)
                job.token.check()
                log.info("%s finished in %.2f s", what, time.monotonic() - started)
                emit(TaskDone(job.name, result))
                return
            request = job.request
            if self.engine is not None:
                final = self.engine.render(job.scene, request, job.caches, emit, job.token)
            else:
                final = execute_render(self.renderer_factory, job.scene, request, job.caches, emit, job.token)
            if isinstance(final, Finished):
                job.token.check()
                log.info("%s finished in %.2f s by %s", what, time.monotonic() - started, final.info.get("renderer"))
            elif isinstance(final, Error):
                log.error("%s failed in the engine after %.2f s: %s", what, time.monotonic() - started, final.message)
            else:
                log.info("%s cancelled after %.2f s", what, time.monotonic() - started)
            emit(final)
        except RenderCancelled:
            log.info("%s cancelled after %.2f s", what, time.monotonic() - started)
            emit(Cancelled(job.request))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an Error event, never a crash
            log.error("%s failed after %.2f s: %s", what, time.monotonic() - started, one_line(exc), exc_info=True)
            emit(Error(one_line(exc), traceback.format_exc()))
