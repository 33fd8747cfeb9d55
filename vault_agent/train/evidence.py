"""How sure the gate may be that a candidate adapter is better: enough held-out pairs, a high
enough accuracy, and a margin gain whose 95% interval lies above zero.

The interval is a paired bootstrap over the held-out pairs: each pair's margin under the candidate
minus its margin under the active adapter, resampled with replacement. Paired, because both
adapters score the same pairs, and pair-to-pair differences (long vs short answers) dwarf the
change an adapter makes; comparing two unpaired means would call most real gains noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0  # a fixed seed: the same scores give the same verdict on every run


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.mean:+.3f} (95% interval {self.low:+.3f} to {self.high:+.3f})"


def paired_interval(candidate: list[float], active: list[float], resamples: int = RESAMPLES,
                    level: float = 0.95) -> Interval:
    """Mean of (candidate - active) over the pairs, with its percentile bootstrap interval."""
    if len(candidate) != len(active) or not candidate:
        raise ValueError("the two adapters must be scored on the same, non-empty set of pairs")
    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(active, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(diffs.mean()), float(low), float(high))


@dataclass(frozen=True)
class Evidence:
    """The gate's evidence test on held-out pairs: what was measured, and every reason it falls short."""

    pairs: int
    accuracy: float
    active_accuracy: float
    margin_gain: Interval | None
    shortfalls: tuple[str, ...]

    @property
    def enough(self) -> bool:
        return not self.shortfalls

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "accuracy": round(self.accuracy, 4), "active_accuracy": round(self.active_accuracy, 4),
                "margin_gain": self.margin_gain.to_dict() if self.margin_gain else None,
                "enough": self.enough, "shortfalls": list(self.shortfalls)}


def weigh(candidate_margins: list[float], active_margins: list[float], min_pairs: int,
          min_accuracy: float) -> Evidence:
    """Per-pair margins (mean token log-prob of chosen minus rejected) of the candidate and the
    active adapter (or the base) on the same held-out pairs."""
    n = len(candidate_margins)
    accuracy = sum(m > 0 for m in candidate_margins) / n if n else 0.0
    active_accuracy = sum(m > 0 for m in active_margins) / n if n else 0.0
    gain = paired_interval(candidate_margins, active_margins) if n else None
    short: list[str] = []
    if n < min_pairs:
        short.append(f"only {n} held-out pairs, {min_pairs} needed to judge (train.gate_min_heldout); "
                     "rate or generate more pairs")
    if accuracy < min_accuracy:
        short.append(f"held-out accuracy {accuracy:.2f} is below {min_accuracy:.2f} (train.gate_min_accuracy)")
    if accuracy < active_accuracy:
        short.append(f"held-out accuracy {accuracy:.2f} is below the active adapter's {active_accuracy:.2f}")
    if gain is not None and gain.low <= 0:
        short.append(f"margin gain {gain} is not clearly above 0")
    return Evidence(n, accuracy, active_accuracy, gain, tuple(short))
