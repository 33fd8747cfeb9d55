"""After training: export the new version to GGUF and gate it against the active adapter with llama.cpp
(both in the version's staging directory, before it is published), and if it wins, make it active
(hot-swapped into the running daemon, or saved for the next start).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..llm.merged_copy import remove_copies
from ..paths import AppDirs
from . import active, answer_check, gate
from .export import export_gguf_lora

log = logging.getLogger(__name__)
GATE_CHUNKS = 8  # held-out vault chunks for the perplexity guard
MIN_CHUNK_CHARS = 200
GATE_SCORES = "gate-scores"  # the figures earlier gates computed (train/score_cache.py)


def heldout_chunks(settings, vault: Path | None, n: int = GATE_CHUNKS) -> list[str]:
    """A stable sample of the vault's chunks (by hash of path and heading, so every version is
    judged on the same text), read straight from the notes: no index needed."""
    from ..vault.files import VaultFiles
    from ..vault.notes import parse_note

    if vault is None:
        return []
    files = VaultFiles(vault, settings.index.ignore, int(settings.index.max_note_mb * 2**20))
    found, _ = files.scan()
    scored = []
    for rel in found:
        try:
            text, _warning = files.read(rel)
        except Exception:  # noqa: BLE001 - an unreadable note is just not sampled
            continue
        for chunk in parse_note(rel, text, settings.index.chunk_chars).chunks:
            if len(chunk.text) >= MIN_CHUNK_CHARS:
                key = hashlib.sha256(f"{rel}#{chunk.heading_path}".encode()).hexdigest()
                scored.append((key, chunk.text))
    return [text for _, text in sorted(scored)[:n]]


def gate_version(settings, dirs: AppDirs, vdir: Path, version: str, heldout: list, vault: Path | None,
                 method: str = "dpo", on_stage=None) -> dict[str, Any]:
    """Export `vdir`'s adapter to GGUF and gate it against the active adapter, writing gate.json
    there. `vdir` is the version's staging directory: a run killed during export or gate leaves no
    version at all. Never raises for a refused or unservable candidate: the verdict says why, and
    the version stays listed (activatable by hand once fixed).
    `heldout`: Pairs for a DPO version, examples.Example for a KTO one (judged answer by answer)."""
    from ..llm.backend import resolve_model_path

    stage = on_stage or (lambda name: None)
    base_gguf = resolve_model_path(settings.llm.model_path)
    stage("export")
    try:
        export = export_gguf_lora(vdir / "adapter", base_gguf, vdir / active.GGUF_NAME)
    except UserError as e:
        return {"promoted": False, "exported": False, "reasons": [f"not servable by llama.cpp: {e}"]}

    stage("gate")
    state, _ = active.read_state(dirs)
    current = state.active if state.active and active.gguf_path(dirs, state.active).is_file() else None
    kto = method == "kto"
    pairs = [] if kto else [p.record() for p in heldout]
    texts = heldout_chunks(settings, vault)
    n_ctx = settings.llm.n_ctx
    current_gguf = active.gguf_path(dirs, current) if current else None
    rows = [e.record() for e in heldout] if kto else []
    # one llama.cpp context: the base is scored once, for the base itself (no adapter active) and as
    # the reference of both adapters' KL (on the held-out pairs' answers, or a KTO version's answers)
    # each adapter as the daemon would serve it: a merged copy (built here in the staging dir, so an
    # activation finds it) or a runtime LoRA (llm.adapter_serving)
    served = {"serving": settings.llm.adapter_serving, "n_gpu_layers": settings.llm.n_gpu_layers}
    candidate, incumbent = gate.score_all(base_gguf, [(version, vdir / active.GGUF_NAME), (current, current_gguf)],
                                          pairs, texts, n_ctx, answers=rows, cache_dir=dirs.data / GATE_SCORES, **served)
    judged = None
    if kto:
        judged = gate.judge_examples(rows, gate.score_examples(base_gguf, vdir / active.GGUF_NAME, rows, n_ctx, **served),
                                     gate.score_examples(base_gguf, current_gguf, rows, n_ctx, **served))
    answers = check_answers(settings, dirs, vault, heldout, (version, vdir / active.GGUF_NAME), (current, current_gguf))
    verdict = gate.decide(candidate, incumbent, gate.Rules.from_settings(settings.train), examples=judged,
                          answers=answers)
    verdict.extra["export"] = export
    if not verdict.promote:  # a whole model's copy, for a version that will not be served (rebuilt if activated by hand)
        remove_copies(vdir)
    gate.write_verdict(vdir, verdict)
    result = {"promoted": verdict.promote, "exported": True, "reasons": verdict.reasons,
              "candidate": verdict.to_dict()["candidate"], "active_before": verdict.to_dict()["active"]}
    if "evidence" in verdict.extra:
        result["evidence"] = verdict.extra["evidence"]
    if judged is not None:
        result["examples"] = verdict.extra["examples"]
    if answers is not None:
        result["answers"] = verdict.extra["answers"]
    return result


def check_answers(settings, dirs: AppDirs, vault: Path | None, heldout: list, candidate: tuple, current: tuple):
    """The answer-level check (train/answer_check.py) on up to train.gate_answer_questions held-out
    synthetic pairs (or a KTO version's examples from them) whose source chunk is still indexed;
    None when there are none (or it is off)."""
    limit = settings.train.gate_answer_questions
    if not limit or vault is None:
        return None
    ids = [p.chunk_id for p in heldout if p.chunk_id]
    chunks = answer_check.catalog_chunks(dirs.index_for(Path(vault).expanduser().resolve()), ids)  # as Indexer keys it
    probes = answer_check.probes_from_pairs(heldout, chunks, limit)
    if not probes:
        return None
    cand, act = answer_check.answer_probes(settings.llm, [candidate, current], probes)
    return answer_check.compare(cand, act) if cand.coverage else None


def activate(dirs: AppDirs, version: str) -> str:
    """Make a promoted version active: swapped into the running daemon now, or with none running,
    saved for its next start. Never raises: the version stays activatable by hand."""
    from .adapter_control import DaemonAdapters, open_adapters

    with open_adapters(dirs) as adapters:
        try:
            switched = adapters.activate(version)
        except UserError as e:  # the daemon keeps its adapter
            log.warning("%s was not activated: %s", version, e)
            if isinstance(adapters, DaemonAdapters):
                return f"the running daemon refused it: {e}"
            return f"not activated: {e}"
    if switched.swap_ms is None:
        return "active from the daemon's next start"
    return f"swapped into the running daemon in {switched.swap_ms} ms"
