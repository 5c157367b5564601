"""The render worker: latest wins, errors as events, the GUI thread stays free."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import FakeRenderer

from core.jobs import Cancelled, Error, Finished, Progress, Queued, RenderRequest
from core.render import GeometricRenderer
from editor.worker import ModelRendererFactory, RenderWorker, TaskDone


def _req(seed: int) -> RenderRequest:
    return RenderRequest(scene_id="s", transforms={}, seed=seed, steps=10)


class Recorder:
    def __init__(self, worker):
        self.events: dict[int, list] = {}
        self.threads = set()
        worker.event.connect(self.on)

    def on(self, job, ev):
        self.threads.add(threading.get_ident())
        self.events.setdefault(job, []).append(ev)

    def last(self, job):
        return self.events.get(job, [None])[-1]


@pytest.fixture
def worker(qtbot):
    made = []

    def make(factory):
        w = RenderWorker(factory)
        made.append(w)
        return w

    yield make
    for w in made:
        assert w.shutdown(5000)


def test_latest_wins(qtbot, worker, sample_scene):
    w = worker(lambda r: FakeRenderer(delay_per_step=0.03, steps=10))
    rec = Recorder(w)
    first = w.submit(sample_scene, _req(1))
    qtbot.waitUntil(lambda: any(isinstance(e, Progress) and e.stage == "render" for e in rec.events.get(first, [])), timeout=5000)
    second = w.submit(sample_scene, _req(2))
    qtbot.waitUntil(lambda: isinstance(rec.last(second), Finished), timeout=10000)
    qtbot.waitUntil(lambda: isinstance(rec.last(first), Cancelled), timeout=5000)
    assert not any(isinstance(e, Finished) for e in rec.events[first])
    fin = rec.last(second)
    assert fin.request.seed == 2
    assert np.array_equal(fin.image, FakeRenderer.expected_image(sample_scene, _req(2)))
    assert fin.info["renderer"] == "fake" and fin.info["geometric"] is False
    assert isinstance(rec.events[second][0], Queued)
    assert rec.threads == {threading.get_ident()}  # slots ran in the GUI thread
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=2000)


def test_waiting_job_is_dropped_when_a_newer_one_arrives(qtbot, worker, sample_scene):
    w = worker(lambda r: FakeRenderer(delay_per_step=0.03, steps=8))
    rec = Recorder(w)
    jobs = [w.submit(sample_scene, _req(i)) for i in range(4)]  # quickly, one after another
    qtbot.waitUntil(lambda: isinstance(rec.last(jobs[-1]), Finished), timeout=10000)
    for j in jobs[:-1]:
        qtbot.waitUntil(lambda j=j: isinstance(rec.last(j), Cancelled), timeout=5000)


def test_cancel_stops_the_render(qtbot, worker, sample_scene):
    w = worker(lambda r: FakeRenderer(delay_per_step=0.05, steps=200))
    rec = Recorder(w)
    job = w.submit(sample_scene, _req(1))
    qtbot.waitUntil(lambda: any(isinstance(e, Progress) and e.stage == "render" for e in rec.events.get(job, [])), timeout=5000)
    w.cancel()
    qtbot.waitUntil(lambda: isinstance(rec.last(job), Cancelled), timeout=2000)
    steps = [e.step for e in rec.events[job] if isinstance(e, Progress) and e.stage == "render"]
    assert max(steps) < 20


def test_errors_become_events(qtbot, worker, sample_scene):
    w = worker(lambda r: FakeRenderer(fail_at_step=2, fail_error=RuntimeError("kaboom\nsecond line")))
    rec = Recorder(w)
    job = w.submit(sample_scene, _req(1))
    qtbot.waitUntil(lambda: isinstance(rec.last(job), Error), timeout=5000)
    err = rec.last(job)
    assert err.message == "RuntimeError: kaboom" and "Traceback" in err.details
    # the worker survives and renders the next request
    job2 = w.submit(sample_scene, _req(2))
    qtbot.waitUntil(lambda: isinstance(rec.last(job2), Error), timeout=5000)


def test_factory_errors_become_events(qtbot, worker, sample_scene):
    from core.errors import ModelError

    def factory(r):
        raise ModelError("model 'x' is not on disk; fetch it with: hf download x")

    w = worker(factory)
    rec = Recorder(w)
    job = w.submit(sample_scene, _req(1))
    qtbot.waitUntil(lambda: isinstance(rec.last(job), Error), timeout=5000)
    assert rec.last(job).message.startswith("model 'x' is not on disk")


def test_tasks_return_results(qtbot, worker):
    w = worker(lambda r: FakeRenderer())
    rec = Recorder(w)
    job = w.submit_task("sum", lambda emit, token: sum(range(10)))
    qtbot.waitUntil(lambda: isinstance(rec.last(job), TaskDone), timeout=5000)
    assert rec.last(job).result == 45 and rec.last(job).name == "sum"


def test_a_missing_model_renders_the_geometric_preview_and_says_how_to_fetch_it(tmp_path, monkeypatch, sample_scene):
    from core.jobs import CancelToken
    from core.request import resolve_request
    from core.settings import Settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HANDLES_MODEL_DIRS", str(tmp_path / "none"))
    req = resolve_request(sample_scene, {"model": "sd2-depth"}, Settings())
    assert req.geometric and req.model == "sd2-depth" and not req.model_path
    assert req.fetch_command.startswith("hf download sd2-community/stable-diffusion-2-depth")
    r = ModelRendererFactory()(req)
    assert isinstance(r, GeometricRenderer)
    result = r.render(sample_scene, req, lambda e: None, CancelToken())
    assert result.info["geometric"] is True and "hf download" in result.info["model_missing"]
