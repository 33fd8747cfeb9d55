"""The eval gate: score an adapter with the serving engine itself (llama.cpp, GGUF base + GGUF LoRA)
on the stable held-out pairs, and promote it only if it beats the adapter now active.

Preference accuracy compares *mean per-token* log-probs of chosen and rejected: by summed
log-prob a short chosen answer beats a long rejected one before any training. Perplexity on
held-out vault chunks guards against an adapter that wins the pairs by wrecking the language model.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError


@dataclass
class Scores:
    """One adapter's figures on the held-out set (adapter None = the plain base)."""

    adapter: str | None
    pairs: int = 0
    accuracy: float | None = None  # share of pairs whose chosen has the higher mean token log-prob
    margin: float | None = None  # mean of (chosen - rejected) mean token log-probs, nats
    perplexity: float | None = None  # on held-out vault chunks
    skipped: int = 0  # pairs too long for the context window


@dataclass
class Verdict:
    promote: bool
    reasons: list[str]
    candidate: Scores
    active: Scores
    max_perplexity_rise_pct: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": self.reasons, "candidate": asdict(self.candidate),
                "active": asdict(self.active), "max_perplexity_rise_pct": self.max_perplexity_rise_pct, **self.extra}


def _text(part: Any) -> str:
    """TRL conversational ([{'role': 'assistant', 'content': ...}]) or a plain string."""
    if isinstance(part, str):
        return part
    if isinstance(part, list) and part and isinstance(part[-1], dict):
        return str(part[-1].get("content", ""))
    raise ValueError(f"not a completion: {part!r:.80}")


class LlamaScorer:
    """A llama.cpp model that keeps every position's logits, with an optional LoRA adapter applied
    through the same low-level calls the serving backend uses for hot-swaps."""

    def __init__(self, gguf_path: Path, adapter_path: Path | None, n_ctx: int = 2048, n_threads: int | None = None):
        from ..llm.backend import _llama_cpp

        llama_cpp = _llama_cpp()
        self._lib = llama_cpp
        self.n_ctx = n_ctx
        self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=True,
                                   n_threads=n_threads or os.cpu_count() or 1, verbose=False)
        self._adapter = None
        if adapter_path is not None:
            self._adapter = llama_cpp.llama_adapter_lora_init(self.llm._model.model, str(adapter_path).encode())
            if not self._adapter:
                self.llm.close()
                raise UserError(f"llama.cpp cannot load the adapter {adapter_path}")
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self.llm._model
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(f"{gguf_path.name} has no chat template; the gate scores chat prompts")
        self._format = Jinja2ChatFormatter(template, eos_token=model.token_get_text(self.llm.token_eos()),
                                           bos_token=model.token_get_text(self.llm.token_bos()))
        self._end = self._format(messages=[{"role": "user", "content": ""}]).stop

    def close(self) -> None:
        if self._adapter:
            self._lib.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
            self._lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self.llm.close()

    def __enter__(self) -> LlamaScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _token_logprobs(self, tokens: list[int], start: int) -> list[float]:
        """log p(tokens[i] | tokens[:i]) for i >= start."""
        import numpy as np

        self.llm.reset()
        self.llm.eval(tokens)
        logits = np.asarray(self.llm.scores[start - 1: len(tokens) - 1], dtype=np.float64)
        logits -= logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits).sum(-1))
        targets = np.asarray(tokens[start:])
        return list(logits[np.arange(len(targets)), targets] - logz)

    def completion_logprob(self, prompt: list[dict], completion: str) -> float | None:
        """Mean log-prob per token of `completion` answered to the chat `prompt`, in the serving
        prompt format; None when it does not fit the context window."""
        head = self._format(messages=prompt).prompt
        end = self._end[0] if isinstance(self._end, list) and self._end else ""
        head_ids = self.llm.tokenize(head.encode(), add_bos=False, special=True)
        ids = head_ids + self.llm.tokenize((completion + end).encode(), add_bos=False, special=True)
        if len(ids) > self.n_ctx or len(ids) == len(head_ids):
            return None
        lps = self._token_logprobs(ids, len(head_ids))
        return sum(lps) / len(lps)

    def perplexity(self, texts: list[str], max_tokens: int = 512) -> float | None:
        total, count = 0.0, 0
        for text in texts:
            ids = self.llm.tokenize(text.encode(), add_bos=True, special=False)[:min(max_tokens, self.n_ctx)]
            if len(ids) < 2:
                continue
            lps = self._token_logprobs(ids, 1)
            total -= sum(lps)
            count += len(lps)
        return math.exp(total / count) if count else None


def score(gguf_path: Path, adapter_path: Path | None, pairs: list[dict], texts: list[str],
          n_ctx: int = 2048, label: str | None = None) -> Scores:
    """Held-out figures for one adapter. `pairs`: TRL conversational rows (prompt, chosen, rejected)."""
    out = Scores(adapter=label)
    margins = []
    with LlamaScorer(gguf_path, adapter_path, n_ctx) as scorer:
        for pair in pairs:
            chosen = scorer.completion_logprob(pair["prompt"], _text(pair["chosen"]))
            rejected = scorer.completion_logprob(pair["prompt"], _text(pair["rejected"]))
            if chosen is None or rejected is None:
                out.skipped += 1
                continue
            margins.append(chosen - rejected)
        out.perplexity = scorer.perplexity(texts) if texts else None
    out.pairs = len(margins)
    if margins:
        out.accuracy = sum(m > 0 for m in margins) / len(margins)
        out.margin = sum(margins) / len(margins)
    return out


@dataclass
class ExampleScores:
    """A KTO candidate judged on held-out single answers against the active adapter: an example is
    right when the candidate raises the mean token log-prob of a desirable answer, or lowers that
    of an undesirable one, relative to the active adapter (or the base)."""

    examples: int = 0
    right: int = 0
    accuracy: float | None = None
    desirable_logp_change: float | None = None  # mean candidate - active, nats per token
    undesirable_logp_change: float | None = None
    skipped: int = 0  # examples too long for the context window

    @property
    def better(self) -> bool:
        """More than half right, and desirable answers gained on undesirable ones."""
        gap = (self.desirable_logp_change or 0.0) - (self.undesirable_logp_change or 0.0)
        return bool(self.examples) and self.accuracy > 0.5 and gap > 0


def score_examples(gguf_path: Path, adapter_path: Path | None, examples: list[dict], n_ctx: int = 2048) -> list[float | None]:
    """Mean token log-prob of each held-out example's completion under one adapter (None: too long).
    `examples`: TRL unpaired rows (prompt, completion, label)."""
    with LlamaScorer(gguf_path, adapter_path, n_ctx) as scorer:
        return [scorer.completion_logprob(e["prompt"], _text(e["completion"])) for e in examples]


def judge_examples(examples: list[dict], candidate: list[float | None], active: list[float | None]) -> ExampleScores:
    out = ExampleScores()
    changes: dict[bool, list[float]] = {True: [], False: []}
    for e, c, a in zip(examples, candidate, active):
        if c is None or a is None:
            out.skipped += 1
            continue
        label, change = bool(e["label"]), float(c) - float(a)  # llama.cpp's figures are numpy floats
        changes[label].append(change)
        out.right += int(change > 0 if label else change < 0)
    out.examples = len(changes[True]) + len(changes[False])
    if out.examples:
        out.accuracy = out.right / out.examples
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    out.desirable_logp_change, out.undesirable_logp_change = mean(changes[True]), mean(changes[False])
    return out


def _decide_on_examples(candidate: Scores, active: Scores, examples: ExampleScores,
                        max_perplexity_rise_pct: float) -> Verdict:
    extra = {"examples": asdict(examples)}
    if not examples.examples:
        return Verdict(False, ["no held-out example fits the context window: nothing to judge by"], candidate, active,
                       max_perplexity_rise_pct, extra)
    fmt = lambda x: "n/a" if x is None else f"{x:+.3f}"  # noqa: E731
    figures = (f"{examples.right}/{examples.examples} held-out answers moved the right way; mean log-prob change "
               f"desirable {fmt(examples.desirable_logp_change)}, undesirable {fmt(examples.undesirable_logp_change)}")
    reasons = [figures if examples.better else f"does not beat the active adapter on held-out answers ({figures})"]
    ppl_ok, ppl_reason = _perplexity_check(candidate, active, max_perplexity_rise_pct)
    reasons += ppl_reason
    return Verdict(examples.better and ppl_ok, reasons, candidate, active, max_perplexity_rise_pct, extra)


def _perplexity_check(candidate: Scores, active: Scores, max_rise_pct: float) -> tuple[bool, list[str]]:
    """Whether the candidate keeps perplexity on held-out notes within the limit, and the line saying so."""
    if candidate.perplexity is None or not active.perplexity:
        return True, []
    rise = 100.0 * (candidate.perplexity / active.perplexity - 1.0)
    line = (f"perplexity on held-out notes {active.perplexity:.2f} -> {candidate.perplexity:.2f} "
            f"({rise:+.1f}%, limit +{max_rise_pct:g}%)")
    return rise <= max_rise_pct, [line]


def decide(candidate: Scores, active: Scores, max_perplexity_rise_pct: float = 10.0,
           examples: ExampleScores | None = None) -> Verdict:
    """Promote only a candidate that beats the active adapter on the held-out pairs (accuracy, then
    margin on a tie) without raising perplexity by more than the configured share. A KTO version
    is judged on held-out single answers instead (`examples`, from judge_examples)."""
    if examples is not None:
        return _decide_on_examples(candidate, active, examples, max_perplexity_rise_pct)
    reasons: list[str] = []
    if not candidate.pairs:
        return Verdict(False, ["no held-out pair fits the context window: nothing to judge by"], candidate, active,
                       max_perplexity_rise_pct)
    better = (candidate.accuracy, candidate.margin) > (active.accuracy or 0.0, active.margin or -math.inf)
    if better:
        reasons.append(f"held-out accuracy {candidate.accuracy:.2f} vs {active.accuracy or 0:.2f}, "
                       f"margin {candidate.margin:+.3f} vs {active.margin if active.margin is not None else 0:+.3f}")
    else:
        reasons.append(f"does not beat the active adapter on held-out pairs (accuracy {candidate.accuracy:.2f} vs "
                       f"{active.accuracy or 0:.2f}, margin {candidate.margin:+.3f} vs {active.margin or 0:+.3f})")
    ppl_ok, ppl_reason = _perplexity_check(candidate, active, max_perplexity_rise_pct)
    reasons += ppl_reason
    return Verdict(better and ppl_ok, reasons, candidate, active, max_perplexity_rise_pct)


def write_verdict(version_dir: Path, verdict: Verdict) -> Path:
    """gate.json in the version directory, written to a temp name and renamed."""
    path = Path(version_dir) / "gate.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(verdict.to_dict(), indent=2))
    os.replace(tmp, path)
    return path
