"""Loading a llama.cpp model so that LoRA adapters can be applied to it safely.

On CPUs with AMX (Intel Sapphire Rapids and later), ggml moves the base weights into its AMX
"extra" buffer type; a LoRA adapter cannot live there ("lora for 'blk.0.attn_q.weight' cannot use
buft 'AMX', fallback to CPU") and the first evaluation with the adapter active then segfaulted
(llama-cpp-python 0.3.36: the gate, the hot-swap and the export tests all died on such a machine).
Every model that may get an adapter (the daemon's, the gate's) is therefore loaded with
`use_extra_bufts = False` there. Llama() builds its model params inside its constructor from
`llama_model_default_params()`, so that one function is wrapped while the model loads.
Other CPUs keep ggml's extra buffers (weight repacking), with which adapters were seen to work.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path

_loading = threading.Lock()  # the wrap is process-wide: one model load at a time


@functools.cache
def cpu_has_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_tile" in line.split() for line in text.splitlines())


@contextlib.contextmanager
def adapter_safe_loading():
    """While a llama_cpp.Llama is constructed inside: no extra buffer types on AMX CPUs."""
    import llama_cpp.llama_cpp as lib

    with _loading:
        if not cpu_has_amx():
            yield
            return
        original = lib.llama_model_default_params

        def without_extra_buffers():
            params = original()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            lib.llama_model_default_params = original
