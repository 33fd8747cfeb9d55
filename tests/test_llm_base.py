"""LlamaBackend and FakeBackend are both llm.base.Backend, signature by signature: a parameter added,
renamed or given another default in one of them (or in the protocol) fails here, not in a daemon
that passes it to the other. No model is loaded: the real backend's class is compared as written."""

import inspect

import pytest

from vault_agent.llm.backend import LlamaBackend
from vault_agent.llm.base import Backend, ModelStamp
from vault_agent.llm.fake import FakeBackend


def protocol_methods() -> dict[str, object]:
    return {name: value for name, value in vars(Backend).items()
            if callable(value) and (not name.startswith("_") or name in ("__enter__", "__exit__"))}


def protocol_attributes() -> set[str]:
    return set(Backend.__annotations__)


def test_the_protocol_lists_what_the_code_uses():
    assert set(protocol_methods()) == {"count_tokens", "stream_chat", "chat", "set_adapter", "switch_model",
                                       "close", "__enter__", "__exit__"}
    assert protocol_attributes() == {"model_id", "model_path", "adapter_version", "adapter_path",
                                      "cpu_share"}
    assert isinstance(vars(Backend)["n_ctx"], property)


@pytest.mark.parametrize("cls", [LlamaBackend, FakeBackend])
def test_each_method_has_the_protocols_signature(cls):
    for name, method in protocol_methods().items():
        assert inspect.signature(getattr(cls, name)) == inspect.signature(method), f"{cls.__name__}.{name}"
    assert isinstance(inspect.getattr_static(cls, "n_ctx"), property), f"{cls.__name__}.n_ctx"


def test_the_fake_is_a_backend_at_run_time():
    fake = FakeBackend()
    assert isinstance(fake, Backend)
    for name in protocol_attributes():
        assert hasattr(fake, name), name


def test_the_real_backend_sets_every_protocol_attribute():
    """Without loading a model: the attributes LlamaBackend.__init__ assigns, read from its source."""
    source = inspect.getsource(LlamaBackend.__init__)
    for name in protocol_attributes():
        assert f"self.{name}" in source, name


def test_a_stamp_takes_the_model_and_adapter_of_the_generation():
    fake = FakeBackend()
    stamp = ModelStamp()
    fake.chat([{"role": "user", "content": "hi"}], stamp=stamp, adapter=(None, "v0002"))
    assert (stamp.model_id, stamp.adapter_version) == ("fake-model.gguf", "v0002")
