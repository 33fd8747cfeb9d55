"""Two process-wide settings that make CPU training lean; applied by the training process only.

Measured on the bundled model, one pair of 1,024-token sequences, forward + backward with
gradient checkpointing (benchmarks/train_bench.py --rag repeats it at full size):
- TRL's fused LM head scores only the answer positions on GPUs with Triton; elsewhere it scores
  every position "to keep tile shapes fixed for compilers", which eager CPU torch does not need.
  Scoring the answers only: 5.4 -> 3.5 GB peak and 21 -> 14 s. The log-probs are the same
  (tests/test_train_memory.py compares them).
- glibc's mmap threshold climbs to 32 MB after the first large free, after which every activation
  of a small model (a few MB each) comes from the heap and fragments it. A fixed 8 MB threshold:
  3.7 -> 3.0 GB peak at the same speed (lower thresholds save more but cost ~30% in page faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 8 * 2**20


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


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module note); False off glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def apply() -> dict[str, bool]:
    applied = {"answer_positions_only": score_answers_only(), "mmap_threshold_8mb": tune_allocator()}
    log.debug("lean CPU training: %s", applied)
    return applied
