"""Device and precision choice; the model cache."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

from core.errors import HandlesError, InputError
from core.ml import device as dev
from core.ml.device import DeviceInfo, ModelCache, pick_device


def test_cpu_is_float32_by_default():
    info = pick_device("cpu")
    assert info == DeviceInfo("cpu", "float32", info.reason)
    assert info.torch_device == "cpu" and info.kind == "cpu"
    assert info.torch_dtype() is torch.float32
    assert "float32" in info.reason


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is present")
def test_auto_falls_back_to_the_cpu_and_says_why():
    info = pick_device("auto")
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert "no GPU" in info.reason
    assert pick_device(None).device == "cpu"


def test_cpu_bf16_is_opt_in_and_follows_the_cpu(monkeypatch):
    assert pick_device("cpu", "auto").dtype == "float32"
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: True)
    info = pick_device("cpu", "bf16")
    assert info.dtype == "bfloat16" and info.torch_dtype() is torch.bfloat16
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    info = pick_device("cpu", "bf16")
    assert info.dtype == "float32" and "no native bfloat16" in info.reason
    assert pick_device("cpu", "fp16").dtype == "float32"  # never half precision on a CPU


def test_cpu_bf16_detection_agrees_with_cpuinfo_flags():
    flags = dev._cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        assert dev.cpu_supports_bf16()
    assert isinstance(dev.cpu_supports_bf16(), bool)


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x", "cpu:0", "mps:1", ""])
def test_unknown_device_is_a_one_line_error(bad):
    if bad == "":
        assert pick_device(bad).device in ("cpu", "cuda", "mps")  # empty = auto
        return
    with pytest.raises(InputError) as err:
        pick_device(bad)
    msg = str(err.value)
    assert repr(bad) in msg and "auto, cpu, cuda, cuda:N or mps" in msg and "\n" not in msg


def test_unknown_precision_is_an_error():
    with pytest.raises(InputError, match="fp8"):
        pick_device("cpu", "fp8")
    assert dev.normalise_precision("BF16") == "bfloat16"
    assert dev.normalise_precision(None) == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_says_what_to_do():
    with pytest.raises(HandlesError, match="--device cpu"):
        pick_device("cuda")
    with pytest.raises(HandlesError):
        pick_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_to_half_precision():  # pragma: no cover - GPU machines only
    info = pick_device("cuda")
    assert info.dtype == "float16"
    bf = pick_device("cuda", "bf16")
    assert bf.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert pick_device("auto").kind == "cuda"


# --- the cache --------------------------------------------------------------------------------


class _Blob:
    def __init__(self, n: int) -> None:
        self.data = bytearray(n)


def test_cache_loads_once_per_key_and_unload_frees():
    cache = ModelCache()
    loads: list[str] = []

    def loader(name):
        def load():
            loads.append(name)
            return _Blob(1 << 20)

        return load

    a1 = cache.get(("m", "/a", "cpu", "float32"), loader("a"))
    a2 = cache.get(("m", "/a", "cpu", "float32"), loader("a"))
    b = cache.get(("m", "/a", "cpu", "bfloat16"), loader("b"))
    assert a1 is a2 and a1 is not b and loads == ["a", "b"] and len(cache) == 2
    ref = weakref.ref(a1)
    del a1, a2
    assert cache.unload(("m", "/a", "cpu", "float32")) == 1
    gc.collect()
    assert ref() is None, "unload must drop the cache's reference"
    assert ("m", "/a", "cpu", "float32") not in cache and len(cache) == 1
    assert cache.unload(where=lambda k: k[3] == "bfloat16") == 1 and len(cache) == 0
    assert cache.unload() == 0


def test_cache_evicts_least_recently_used():
    cache = ModelCache(max_items=2)
    for k in ("a", "b"):
        cache.get(k, lambda: _Blob(8))
    cache.get("a", lambda: _Blob(8))  # a is now the most recent
    cache.get("c", lambda: _Blob(8))
    assert set(cache.keys()) == {"a", "c"}


def test_cache_is_shared_between_threads_without_double_loading():
    cache = ModelCache()
    count = []
    started = threading.Barrier(4)

    def load():
        count.append(1)
        return object()

    results = []

    def worker():
        started.wait()
        results.append(cache.get("k", load))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(count) == 1 and all(r is results[0] for r in results)
