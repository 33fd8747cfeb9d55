"""Keeps real models out of the fast tier: the classes that load the real embedding model
(sentence-transformers) and a llama.cpp chat model are wrapped as their modules are imported, and
constructing one while a test not marked `slow` runs raises and is noted for conftest to fail it.

Only this process is watched: a CLI or benchmark subprocess a test starts is not (mark such tests
slow by hand when what they run loads a model)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import pytest

# module -> the class whose construction loads a real model
REAL_MODELS = {"sentence_transformers": "SentenceTransformer", "llama_cpp.llama": "Llama",
               "vault_agent.index.onnx_int8": "OnnxInt8Model"}  # the default embedder on the CPU
CURRENT_TEST: dict[str, pytest.Item | None] = {"item": None}  # set by conftest around each test
LOADS: dict[str, list[str]] = {}  # test node id -> the models it loaded though not marked slow


def _refuse_outside_slow_tests(cls, label: str) -> None:
    original = cls.__init__

    def init(self, *args, **kwargs):
        item = CURRENT_TEST["item"]
        if item is not None and item.get_closest_marker("slow") is None:
            LOADS.setdefault(item.nodeid, []).append(label)
            raise RuntimeError(f"{item.nodeid} loads the real {label} but is not marked slow "
                               "(use the `embedder` fixture or FakeBackend, or mark the test slow)")
        original(self, *args, **kwargs)

    cls.__init__ = init


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps each model class once its module is imported (importing them up front would cost seconds)."""

    def find_spec(self, name, path, target=None):
        if name not in REAL_MODELS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _refuse_outside_slow_tests(getattr(module, REAL_MODELS[name]), f"model ({name}.{REAL_MODELS[name]})")

        spec.loader.exec_module = exec_and_wrap
        return spec


def install() -> None:
    if not any(isinstance(f, _WrapOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _WrapOnImport())
