"""The eval gate: score an adapter with the serving engine itself (llama.cpp, GGUF base + GGUF LoRA)
on the stable held-out pairs, and promote it only if it beats the adapter now active.

Preference accuracy compares *mean per-token* log-probs of chosen and rejected: by summed
log-prob a short chosen answer beats a long rejected one before any training. Perplexity on
held-out vault chunks guards against an adapter that wins the pairs by wrecking the language model.
KL to the base measures how far the adapter moved the whole next-token distribution on the
held-out answers (teacher-forced), not just the probability of the tokens written there: both
distributions come from the same llama.cpp context, the adapter switched on and off between passes,
or, where the daemon serves adapters merged (llm/merged_copy.py), from the base's Q8_0 copy and the
adapter's merged copy, each in its own context: the gate scores what users would get.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..llm.merged_copy import base_copy_or_model, merged_or_none, served_copies
from . import evidence
from .answer_check import AnswerCheck
from .llama_scorer import LlamaScorer, kl_rows, picked
from .registry import write_json
from .score_cache import ScoreCache, pair_key, texts_key


@dataclass
class Scores:
    """One adapter's figures on the held-out set (adapter None = the plain base)."""

    adapter: str | None
    pairs: int = 0
    accuracy: float | None = None  # share of pairs whose chosen has the higher mean token log-prob
    margin: float | None = None  # mean of (chosen - rejected) mean token log-probs, nats
    perplexity: float | None = None  # on held-out vault chunks
    kl_to_base: float | None = None  # mean per-token KL(adapter || base) over the held-out answers, nats
    skipped: int = 0  # pairs too long for the context window
    served_as: str | None = None  # "merged" (its merged copy scored) or "runtime" (the LoRA); None for the base
    reused: int = 0  # pairs whose figures an earlier gate computed (train/score_cache.py)
    margins: list[float] = field(default_factory=list, repr=False)  # per held-out pair, in the pairs' order

    @classmethod
    def from_margins(cls, adapter: str | None, margins: list[float], **figures: Any) -> Scores:
        """Accuracy and mean margin from the per-pair margins (what the gate's evidence test pairs up)."""
        margins = [float(m) for m in margins]
        out = cls(adapter, pairs=len(margins), margins=margins, **figures)
        if margins:
            out.accuracy = sum(m > 0 for m in margins) / len(margins)
            out.margin = sum(margins) / len(margins)
        return out

    def figures(self) -> dict:
        """Everything but the per-pair margins (gate.json keeps the summary and the interval)."""
        return {k: v for k, v in asdict(self).items() if k != "margins"}


@dataclass
class Verdict:
    promote: bool
    reasons: list[str]
    candidate: Scores
    active: Scores
    max_perplexity_rise_pct: float
    extra: dict[str, Any] = field(default_factory=dict)
    max_kl_to_base: float = 0.0  # 0: KL is reported, never a reason to refuse

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": self.reasons, "candidate": self.candidate.figures(),
                "active": self.active.figures(), "max_perplexity_rise_pct": self.max_perplexity_rise_pct,
                "max_kl_to_base": self.max_kl_to_base, **self.extra}


def completion_text(part: Any) -> str:
    """TRL conversational ([{'role': 'assistant', 'content': ...}]) or a plain string."""
    if isinstance(part, str):
        return part
    if isinstance(part, list) and part and isinstance(part[-1], dict):
        return str(part[-1].get("content", ""))
    raise ValueError(f"not a completion: {part!r:.80}")


def score(gguf_path: Path, adapter_path: Path | None, pairs: list[dict], texts: list[str],
          n_ctx: int = 2048, label: str | None = None) -> Scores:
    """Held-out figures for one adapter. `pairs`: TRL conversational rows (prompt, chosen, rejected)."""
    return score_all(gguf_path, [(label, adapter_path)], pairs, texts, n_ctx)[0]


KL_PAIRS = 48  # pairs per gate that get a base pass for KL alone (see score_all)


@dataclass(frozen=True)
class GatePass:
    """How one adapter's passes run: a runtime LoRA (`lora`) in the base's context, or a context of
    its own (`scorer`: the adapter's merged copy); neither for the plain base."""

    scorer: LlamaScorer | None = None
    lora: Any = None
    served_as: str = "runtime"

    @property
    def is_base(self) -> bool:
        return self.scorer is None and self.lora is None

    @property
    def key(self) -> int:
        """Adapters with the same weights share a perplexity pass."""
        return id(self.scorer) if self.scorer is not None else id(self.lora)

    def on(self, base_scorer: LlamaScorer) -> LlamaScorer:
        """The scorer to run this pass on, with the right adapter switched on."""
        if self.scorer is not None:
            return self.scorer
        base_scorer.use(self.lora)
        return base_scorer


BASE = GatePass()


def open_base(stack: contextlib.ExitStack, gguf_path: Path, n_ctx: int, serving: str,
              n_gpu_layers: int) -> tuple[LlamaScorer, bool]:
    """(the scorer for the base as the daemon serves it, whether adapters are served merged): the
    model file, or its Q8_0 copy (llm/merged_copy.py) where adapters are merged into Q8_0 copies too."""
    served = base_copy_or_model(gguf_path) if served_copies(serving, gguf_path, n_gpu_layers) else gguf_path
    # as LlamaBackend.copies: adapters are merged only when the model itself is served from a copy
    return stack.enter_context(LlamaScorer(served, None, n_ctx)), served != gguf_path


def gate_passes(stack: contextlib.ExitStack, scorer: LlamaScorer, gguf_path: Path, adapter: Path | None,
                merge: bool) -> GatePass:
    """The adapter as the daemon would serve it: its merged copy (built beside it now, as activation
    would; seconds on the bundled model) when `merge`, else a runtime LoRA. A copy that cannot be
    built is logged and the LoRA scored, as the daemon then serves it."""
    if adapter is None:
        return BASE
    copy = merged_or_none(gguf_path, adapter) if merge else None
    if copy is not None:
        return GatePass(scorer=stack.enter_context(LlamaScorer(copy, None, scorer.n_ctx)), served_as="merged")
    return GatePass(lora=scorer.load_adapter(adapter))


def score_all(gguf_path: Path, adapters: list[tuple[str | None, Path | None]], pairs: list[dict],
              texts: list[str], n_ctx: int = 2048, answers: list[dict] | None = None,
              cache_dir: Path | None = None, serving: str = "runtime", n_gpu_layers: int = 0) -> list[Scores]:
    """Held-out figures for several adapters ((label, GGUF LoRA path or None for the plain base)):
    each answer is scored by the base and by each adapter, and an adapter's KL to the base is taken
    position by position from the two passes. `answers` (TRL unpaired rows: prompt, completion) add
    positions to the KL only: a KTO version's held-out answers.

    `serving` and `n_gpu_layers` (llm.adapter_serving, llm.n_gpu_layers) say how the daemon would
    serve an adapter, and the gate scores it that way (gate_passes below): as a runtime LoRA in the
    base's context, or through its merged copy (llm/merged_copy.py) in a context of its own, which
    on the bundled model also evaluates prompts 1.8x faster than the Q4_1 base with the LoRA.

    KL is measured on the pairs that get a base pass anyway (the base is scored, or not cached) and
    on up to KL_PAIRS more: by then it is a mean over thousands of positions, and each further pair
    would cost a whole pass that nothing else needs. With `cache_dir`, a (base, adapter, pair)
    scored by an earlier gate is not scored again (train/score_cache.py): the nightly gate then
    scores the new candidate and little else."""
    n = len(adapters)
    out = [Scores(adapter=label) for label, _ in adapters]
    entries: list[list[dict]] = [[] for _ in range(n)]
    answer_kl = [[0.0, 0] for _ in range(n)]  # summed KL and positions from `answers`
    with contextlib.ExitStack() as stack:
        scorer, merge = open_base(stack, gguf_path, n_ctx, serving, n_gpu_layers)
        passes = [gate_passes(stack, scorer, gguf_path, path, merge) for _, path in adapters]
        # figures are kept per file scored: the base's copy, or the model file with the merged tag
        caches = [None if not cache_dir else ScoreCache(cache_dir, gguf_path, path, served_as="merged")
                  if p.served_as == "merged" else ScoreCache(cache_dir, scorer.path, path)
                  for (_, path), p in zip(adapters, passes)]

        def score_answers(found: list[tuple[list[int], int]], fresh: list[int], kl: bool) -> dict[int, dict]:
            """Per adapter index in `fresh`: {"means": mean token log-prob per answer (all to one
            prompt), "kl": summed KL to the base (None without a base pass), "n": positions}. The
            base pass runs when the base is among them or `kl`, and comes first."""
            base = None
            if kl or any(passes[i].is_base for i in fresh):
                base = BASE.on(scorer).answers_log_probs(found)
            positions = sum(len(ids) - at for ids, at in found)
            res = {}
            for i in fresh:
                if passes[i].is_base:
                    lps, kl_sum = base, 0.0  # the base itself: KL 0 by definition, no second pass
                else:
                    lps = passes[i].on(scorer).answers_log_probs(found)
                    kl_sum = None if base is None else sum(kl_rows(lp, b) for lp, b in zip(lps, base))
                res[i] = {"means": [float(picked(lp, ids, at).mean()) for lp, (ids, at) in zip(lps, found)],
                          "kl": kl_sum, "n": positions}
            return res

        kl_only_passes = 0
        for pair in pairs:
            chosen, rejected = (completion_text(pair[side]) for side in ("chosen", "rejected"))
            found = [scorer.answer_tokens(pair["prompt"], text) for text in (chosen, rejected)]
            if None in found:
                for s in out:
                    s.skipped += 1
                continue
            key = pair_key(pair["prompt"], chosen, rejected)
            got = {i: c.get(key) for i, c in enumerate(caches) if c is not None}
            fresh = [i for i in range(n) if got.get(i) is None]
            if fresh:
                base_needed = any(passes[i].is_base for i in fresh)
                kl = base_needed or kl_only_passes < KL_PAIRS
                kl_only_passes += kl and not base_needed
                for i, r in score_answers(found, fresh, kl).items():
                    got[i] = {"c": r["means"][0], "r": r["means"][1], "kl": r["kl"], "n": r["n"]}
                    if caches[i] is not None:
                        caches[i].put(key, got[i])
            for i in range(n):
                entries[i].append(got[i])
        for row in answers or []:
            found = scorer.answer_tokens(row["prompt"], completion_text(row["completion"]))
            if found is not None:
                for i, r in score_answers([found], list(range(n)), True).items():
                    answer_kl[i][0] += r["kl"]
                    answer_kl[i][1] += r["n"]
        tkey = texts_key(texts)
        perplexities: dict[Any, float | None] = {}
        for i, p in enumerate(passes):
            cache = caches[i] if texts else None
            hit, value = cache.get_perplexity(tkey) if cache is not None else (False, None)
            if not hit:
                if p.key not in perplexities:
                    perplexities[p.key] = p.on(scorer).perplexity(texts) if texts else None
                value = perplexities[p.key]
                if cache is not None:
                    cache.put_perplexity(tkey, value)
            out[i].perplexity = value
    for i, s in enumerate(out):
        s.served_as = None if passes[i].is_base else passes[i].served_as
        summary = Scores.from_margins(s.adapter, [e["c"] - e["r"] for e in entries[i]])
        s.pairs, s.margins, s.accuracy, s.margin = summary.pairs, summary.margins, summary.accuracy, summary.margin
        with_kl = [e for e in entries[i] if e["kl"] is not None]
        positions = sum(e["n"] for e in with_kl) + answer_kl[i][1]
        if positions:
            s.kl_to_base = (sum(e["kl"] for e in with_kl) + answer_kl[i][0]) / positions
        if caches[i] is not None:
            s.reused = caches[i].reused
            caches[i].save()
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
    toward_label: list[float] = field(default_factory=list, repr=False)  # per example: the change, signed by its label

    def figures(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "toward_label"}

    @property
    def better(self) -> bool:
        """More than half right, and desirable answers gained on undesirable ones."""
        gap = (self.desirable_logp_change or 0.0) - (self.undesirable_logp_change or 0.0)
        return bool(self.examples) and self.accuracy > 0.5 and gap > 0


def score_examples(gguf_path: Path, adapter_path: Path | None, examples: list[dict], n_ctx: int = 2048,
                   serving: str = "runtime", n_gpu_layers: int = 0) -> list[float | None]:
    """Mean token log-prob of each held-out example's completion under one adapter, served as
    score_all would (None: too long). `examples`: TRL unpaired rows (prompt, completion, label)."""
    with contextlib.ExitStack() as stack:
        scorer, merge = open_base(stack, gguf_path, n_ctx, serving, n_gpu_layers)
        served = gate_passes(stack, scorer, gguf_path, adapter_path, merge).on(scorer)
        return [served.completion_logprob(e["prompt"], completion_text(e["completion"])) for e in examples]


def judge_examples(examples: list[dict], candidate: list[float | None], active: list[float | None]) -> ExampleScores:
    out = ExampleScores()
    changes: dict[bool, list[float]] = {True: [], False: []}
    for e, c, a in zip(examples, candidate, active):
        if c is None or a is None:
            out.skipped += 1
            continue
        label, change = bool(e["label"]), float(c) - float(a)  # llama.cpp's figures are numpy floats
        changes[label].append(change)
        out.toward_label.append(change if label else -change)
        out.right += int(change > 0 if label else change < 0)
    out.examples = len(changes[True]) + len(changes[False])
    if out.examples:
        out.accuracy = out.right / out.examples
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    out.desirable_logp_change, out.undesirable_logp_change = mean(changes[True]), mean(changes[False])
    return out


def _decide_on_examples(candidate: Scores, active: Scores, examples: ExampleScores, rules: Rules) -> Verdict:
    extra = {"examples": examples.figures()}
    if not examples.examples:
        return Verdict(False, ["no held-out example fits the context window: nothing to judge by"], candidate, active,
                       rules.max_perplexity_rise_pct, extra, rules.max_kl_to_base)
    fmt = lambda x: "n/a" if x is None else f"{x:+.3f}"  # noqa: E731
    figures = (f"{examples.right}/{examples.examples} held-out answers moved the right way; mean log-prob change "
               f"desirable {fmt(examples.desirable_logp_change)}, undesirable {fmt(examples.undesirable_logp_change)}")
    shortfalls = []
    if examples.examples < rules.min_heldout:
        shortfalls.append(f"only {examples.examples} held-out answers, {rules.min_heldout} needed to judge "
                          "(train.gate_min_heldout); rate more answers")
    if examples.accuracy < rules.min_accuracy:
        shortfalls.append(f"{examples.accuracy:.2f} of held-out answers moved the right way, below "
                          f"{rules.min_accuracy:.2f} (train.gate_min_accuracy)")
    if not examples.better:
        shortfalls.append("does not beat the active adapter on held-out answers")
    gain = evidence.paired_interval(examples.toward_label, [0.0] * examples.examples)
    extra["evidence"] = {"answers": examples.examples, "change_toward_labels": gain.to_dict()}
    if gain.low <= 0:
        shortfalls.append(f"log-prob change toward the labels {gain} is not clearly above 0")
    return _verdict(candidate, active, [figures], shortfalls, rules, extra)


def _verdict(candidate: Scores, active: Scores, figures: list[str], shortfalls: list[str], rules: Rules,
             extra: dict) -> Verdict:
    """The verdict from the evidence test's shortfalls and the perplexity and KL guards."""
    ppl_ok, ppl_reason = _perplexity_check(candidate, active, rules.max_perplexity_rise_pct)
    kl_ok, kl_reason = _kl_check(candidate, active, rules.max_kl_to_base)
    reasons = figures + shortfalls + ppl_reason + kl_reason
    return Verdict(not shortfalls and ppl_ok and kl_ok, reasons, candidate, active, rules.max_perplexity_rise_pct,
                   extra, rules.max_kl_to_base)


def _perplexity_check(candidate: Scores, active: Scores, max_rise_pct: float) -> tuple[bool, list[str]]:
    """Whether the candidate keeps perplexity on held-out notes within the limit, and the line saying so."""
    if candidate.perplexity is None or not active.perplexity:
        return True, []
    rise = 100.0 * (candidate.perplexity / active.perplexity - 1.0)
    line = (f"perplexity on held-out notes {active.perplexity:.2f} -> {candidate.perplexity:.2f} "
            f"({rise:+.1f}%, limit +{max_rise_pct:g}%)")
    return rise <= max_rise_pct, [line]


def _kl_check(candidate: Scores, active: Scores, max_kl: float) -> tuple[bool, list[str]]:
    """Whether the candidate stays within train.max_kl_to_base of the base (0: no limit), and the line saying so."""
    if candidate.kl_to_base is None:
        return True, []
    limit = f"limit {max_kl:g}" if max_kl else "no limit set"
    was = f", active {active.kl_to_base:.4f}" if active.kl_to_base is not None else ""
    line = f"KL to the base on held-out answers {candidate.kl_to_base:.4f} nats/token{was} ({limit})"
    return not max_kl or candidate.kl_to_base <= max_kl, [line]


@dataclass(frozen=True)
class Rules:
    """What a candidate must show to be promoted (train.* settings of the same names)."""

    max_perplexity_rise_pct: float = 10.0
    max_kl_to_base: float = 0.0  # 0: KL is reported, never a reason to refuse
    min_heldout: int = 8
    min_accuracy: float = 0.7

    @classmethod
    def from_settings(cls, train) -> Rules:
        return cls(train.max_perplexity_rise_pct, train.max_kl_to_base, train.gate_min_heldout,
                   train.gate_min_accuracy)


def decide(candidate: Scores, active: Scores, rules: Rules = Rules(), examples: ExampleScores | None = None,
           answers: AnswerCheck | None = None) -> Verdict:
    """Promote only on evidence: enough held-out pairs, accuracy at the bar and not below the active
    adapter's, and a margin gain over the active adapter (or the base) whose 95% paired-bootstrap
    interval lies above 0 (train/evidence.py); and without raising perplexity on held-out notes by
    more than the configured share, nor (when max_kl_to_base > 0) drifting further than that from the
    base. A KTO version is judged on held-out single answers instead (`examples`, from judge_examples).
    `answers` (train/answer_check.py): the candidate's answers to unseen questions may not carry
    fewer key facts, nor cite the source note less often, beyond noise."""
    if examples is not None:
        verdict = _decide_on_examples(candidate, active, examples, rules)
    elif not candidate.pairs:
        return Verdict(False, ["no held-out pair fits the context window: nothing to judge by"], candidate, active,
                       rules.max_perplexity_rise_pct, max_kl_to_base=rules.max_kl_to_base)
    else:
        found = evidence.weigh(candidate.margins, active.margins, rules.min_heldout, rules.min_accuracy)
        figures = (f"held-out accuracy {found.accuracy:.2f} vs {found.active_accuracy:.2f} on {found.pairs} pairs, "
                   f"margin gain {found.margin_gain}")
        verdict = _verdict(candidate, active, [figures], list(found.shortfalls), rules, {"evidence": found.to_dict()})
    if answers is not None:
        verdict.reasons += [answers.line(), *answers.shortfalls]
        verdict.promote = verdict.promote and not answers.shortfalls
        verdict.extra["answers"] = answers.to_dict()
    return verdict


def write_verdict(version_dir: Path, verdict: Verdict) -> Path:
    """gate.json in the version directory, written to a temp name and renamed."""
    path = Path(version_dir) / "gate.json"
    write_json(path, verdict.to_dict())
    return path
