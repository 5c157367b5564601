"""The engine protocol's wire format: typed messages of JSON plus raw arrays, no pickle.

A message is ``(kind, header, arrays)``: ``kind`` a short string, ``header`` a JSON object,
``arrays`` named numpy arrays (bytes blobs travel as uint8 arrays). On a
:class:`multiprocessing.connection.Connection` (a local socket or pipe, or TCP to another
machine: the same calls) it is one frame of JSON, naming each array's dtype and shape, followed
by one frame per array. Between processes of one machine (``local=True``) an array larger than
:data:`SHM_MIN_BYTES` goes through shared memory instead: the frame carries the block's name, the
receiver copies it out and unlinks it. Nothing in a message can run code on the receiver (JSON and
plain buffers only), so the same protocol is safe to a remote worker.

Scenes, requests and the events of :mod:`core.jobs` have codecs here so that both sides of the
engine protocol (:mod:`core.engine`) speak them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from core.jobs import Cancelled, Error, Event, Finished, Preview, Progress, Queued, RenderRequest

#: arrays at least this large go through shared memory between local processes
SHM_MIN_BYTES = 1 << 20
#: the largest JSON frame accepted (a header is small; a hostile peer cannot make us allocate)
MAX_HEADER_BYTES = 16 << 20
#: the dtypes that may cross (anything else is refused)
DTYPES = {"uint8", "bool", "int32", "int64", "float16", "float32", "float64"}


class WireError(ValueError):
    """A malformed message (its first line says what was wrong)."""


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray) and o.size <= 64:
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _finite(o: Any):
    """JSON has no NaN/Infinity: they cross as strings."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def send(conn, kind: str, header: dict | None = None, arrays: dict[str, np.ndarray] | None = None, local: bool = True) -> list[str]:
    """Send one message; returns the shared-memory blocks it created (for cleanup on a crash)."""
    specs, payloads, blocks = {}, [], []
    for name, a in (arrays or {}).items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in DTYPES:
            raise WireError(f"array {name!r} has dtype {a.dtype}, which the engine protocol does not carry")
        spec: dict[str, Any] = {"dtype": a.dtype.name, "shape": list(a.shape)}
        if local and a.nbytes >= SHM_MIN_BYTES:
            spec["shm"] = _to_shm(a)
            blocks.append(spec["shm"])
        else:
            payloads.append(a)
        specs[name] = spec
    head = json.dumps({"kind": kind, "header": _finite(header or {}), "arrays": specs}, default=_json_default).encode()
    conn.send_bytes(head)
    for a in payloads:
        conn.send_bytes(memoryview(a.reshape(-1).view(np.uint8)))
    return blocks


def recv(conn) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Receive one message (raises EOFError when the peer is gone, WireError when it is malformed)."""
    raw = conn.recv_bytes(MAX_HEADER_BYTES)
    try:
        msg = json.loads(raw)
        kind, header, specs = str(msg["kind"]), dict(msg["header"]), dict(msg["arrays"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(f"malformed engine message ({exc})") from exc
    arrays = {}
    for name, spec in specs.items():
        try:
            dtype, shape = np.dtype(spec["dtype"]), tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed array spec for {name!r}") from exc
        if dtype.name not in DTYPES or any(s < 0 for s in shape):
            raise WireError(f"array {name!r}: dtype {dtype} / shape {shape} not allowed")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if "shm" in spec:
            arrays[name] = _from_shm(str(spec["shm"]), dtype, shape, nbytes)
        else:
            buf = conn.recv_bytes(max(1, nbytes) + 1)
            if len(buf) != nbytes:
                raise WireError(f"array {name!r}: {len(buf)} bytes for a {shape} {dtype} array")
            arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    return kind, header, arrays


def _to_shm(a: np.ndarray) -> str:
    from multiprocessing import resource_tracker, shared_memory

    block = shared_memory.SharedMemory(create=True, size=max(1, a.nbytes))
    try:
        np.ndarray(a.shape, a.dtype, buffer=block.buf)[...] = a
        name = block.name
    finally:
        block.close()
    # the receiver unlinks it; this process's tracker must not (nor warn at exit)
    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
    return name


def _from_shm(name: str, dtype, shape, nbytes: int) -> np.ndarray:
    from multiprocessing import shared_memory

    try:
        block = shared_memory.SharedMemory(name=name)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise WireError(f"shared memory block {name!r} is gone ({exc})") from exc
    try:
        if block.size < nbytes:
            raise WireError(f"shared memory block {name!r} holds {block.size} bytes, not {nbytes}")
        out = np.ndarray(shape, dtype, buffer=block.buf).copy()
    finally:
        block.close()
        block.unlink()
    return out


def discard_shm(names: list[str]) -> None:
    """Unlink blocks a dead peer never received."""
    from multiprocessing import shared_memory

    for name in names:
        try:
            block = shared_memory.SharedMemory(name=name)
        except (FileNotFoundError, ValueError, OSError):
            continue  # received (and unlinked) after all
        block.close()
        block.unlink()


# ----------------------------------------------------------------------------- codecs
def blobs_to_arrays(blobs: dict[str, bytes], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{i}": np.frombuffer(bytes(v), np.uint8) for i, v in enumerate(blobs.values())}


def blobs_from_arrays(names: list[str], arrays: dict[str, np.ndarray], prefix: str) -> dict[str, bytes]:
    return {n: arrays[f"{prefix}{i}"].tobytes() for i, n in enumerate(names) if f"{prefix}{i}" in arrays}


def scene_to_wire(scene) -> tuple[dict, dict[str, np.ndarray]]:
    """A scene as a header and arrays (the working-size data a renderer reads)."""
    arrays = {"photo": scene.photo, "depth": scene.depth}
    for name in ("alpha", "background_depth"):
        if getattr(scene, name) is not None:
            arrays[name] = np.asarray(getattr(scene, name), np.float32)
    objects = []
    for i, o in enumerate(scene.objects):
        arrays[f"mask{i}"] = np.asarray(o.mask, bool)
        objects.append({"name": o.name, "id": o.id, "visible": bool(o.visible), "transform": o.transform.to_dict()})
    header = {
        "camera": scene.camera.to_dict(),
        "prompt": scene.prompt,
        "name": scene.name,
        "depth_unit": scene.depth_unit,
        "depth_source": scene.depth_source,
        "objects": objects,
        "variants": {v: {n: t.to_dict() for n, t in ts.items()} for v, ts in scene.variants.items()},
    }
    return header, arrays


def scene_from_wire(header: dict, arrays: dict[str, np.ndarray]):
    from core.camera import Camera
    from core.scene import Scene, SceneObject
    from core.transform import Transform3D

    try:
        objects = [
            SceneObject(
                name=str(o["name"]), mask=arrays[f"mask{i}"], transform=Transform3D.from_dict(o["transform"]), visible=bool(o["visible"]), id=str(o["id"])
            )
            for i, o in enumerate(header["objects"])
        ]
        variants = {str(v): {str(n): Transform3D.from_dict(t) for n, t in ts.items()} for v, ts in dict(header.get("variants") or {}).items()}
        return Scene(
            photo=arrays["photo"],
            depth=arrays["depth"],
            camera=Camera.from_dict(header["camera"]),
            prompt=str(header.get("prompt", "")),
            objects=objects,
            variants=variants,
            name=str(header.get("name", "Untitled")),
            depth_unit=str(header.get("depth_unit", "m")),
            depth_source=str(header.get("depth_source", "file")),
            alpha=arrays.get("alpha"),
            background_depth=arrays.get("background_depth"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed scene in an engine message ({exc})") from exc


def event_to_wire(ev: Event) -> tuple[str, dict, dict[str, np.ndarray]]:
    """An event of :mod:`core.jobs` as a message (the request is not repeated: the client has it)."""
    if isinstance(ev, Progress):
        return "progress", {"stage": ev.stage, "step": ev.step, "total": ev.total, "eta_s": ev.eta_s, "message": ev.message}, {}
    if isinstance(ev, Preview):
        return "preview", {"step": ev.step, "total": ev.total}, {"image": ev.image}
    if isinstance(ev, Finished):
        return "finished", {"info": ev.info, "blobs": list(ev.blobs)}, {"image": ev.image, **blobs_to_arrays(ev.blobs, "blob")}
    if isinstance(ev, Cancelled):
        return "cancelled", {}, {}
    if isinstance(ev, Error):
        return "error", {"message": ev.message, "details": ev.details}, {}
    if isinstance(ev, Queued):
        return "queued", {}, {}
    raise WireError(f"no wire form for {type(ev).__name__}")


def event_from_wire(kind: str, header: dict, arrays: dict[str, np.ndarray], request: RenderRequest | None) -> Event:
    try:
        if kind == "progress":
            eta = header.get("eta_s")
            return Progress(
                str(header["stage"]), int(header["step"]), int(header["total"]), None if eta is None else float(eta), str(header.get("message", ""))
            )
        if kind == "preview":
            return Preview(arrays["image"], int(header["step"]), int(header["total"]))
        if kind == "finished":
            blobs = blobs_from_arrays(list(header.get("blobs") or []), arrays, "blob")
            req = request if request is not None else RenderRequest(scene_id="", transforms={})
            return Finished(req, arrays["image"], dict(header.get("info") or {}), blobs)
        if kind == "cancelled":
            return Cancelled(request)
        if kind == "error":
            return Error(str(header.get("message", "the engine failed")), str(header.get("details", "")))
        if kind == "queued" and request is not None:
            return Queued(request)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed {kind!r} event ({exc})") from exc
    raise WireError(f"unknown event kind {kind!r}")


def request_to_wire(request: RenderRequest) -> dict:
    return request.to_dict()


def request_from_wire(d: dict) -> RenderRequest:
    try:
        return RenderRequest.from_dict(d)
    except (TypeError, ValueError, KeyError) as exc:
        raise WireError(f"malformed render request ({exc})") from exc
