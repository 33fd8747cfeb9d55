"""Two process-wide settings that make CPU training lean; applied by the training process only.

Measured on the bundled model, one pair of 1,024-token sequences, forward + backward with
gradient checkpointing (benchmarks/train_bench.py --rag repeats it at full size):
- TRL's fused LM head scores only the answer positions on GPUs with Triton; elsewhere it scores
  every position "to keep tile shapes fixed for compilers", which eager CPU torch does not need.
  Scoring the answers only: 5.4 -> 3.5 GB peak and 21 -> 14 s. The log-probs are the same
  (tests/test_train_memory.py compares them).
- glibc's mmap threshold climbs to 32 MB after the first large free, after which every activation
  of a small model (a few MB each: 4.7 MB for one 1,024-token pair's hidden states) comes from the
  heap and fragments it. A fixed threshold just below that size sends them to mmap, returned on
  free: 3.6 -> 1.8 GB peak at 1,024 tokens (2.4 -> 1.5 GB at 512) for +36-41% step time (page
  faults). 8 MB saved only 0.6 GB and left a default retrain at 3.95 GiB. Memory wins here: the
  nightly run shares the machine with the user's apps, and a step is still faster than with the
  layout before the memory plan (benchmarks/train_bench.py --rag).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MIN_THRESHOLD, MAX_THRESHOLD = 2**20, 32 * 2**20  # glibc's own ceiling is 32 MB


def score_answers_only() -> bool:
    """Make TRL's fused LM head compact (answer positions only) on every device. False when this
    TRL has no such switch: training still works, with the larger (estimated) head."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        return False
    if getattr(original, "_vault_agent_compact", False):
        return True

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    compact._vault_agent_compact = True
    trl_utils._use_triton = compact
    return True


def mmap_threshold(plan) -> int:
    """Just below one micro-batch's hidden states (chosen + rejected at max_length, fp32)."""
    hidden = (plan.dims or {}).get("hidden")
    if not hidden:
        return 4 * 2**20
    tokens = 2 * plan.dpo["per_device_train_batch_size"] * plan.dpo["max_length"]
    return max(MIN_THRESHOLD, min(MAX_THRESHOLD, int(tokens * hidden * 4 * 0.8)))


def tune_allocator(threshold: int) -> bool:
    """Fix glibc's mmap threshold (see the module note); False off glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def apply(plan) -> dict[str, object]:
    threshold = mmap_threshold(plan)
    applied = {"answer_positions_only": score_answers_only(),
               "mmap_threshold": threshold if tune_allocator(threshold) else None}
    log.debug("lean CPU training: %s", applied)
    return applied
