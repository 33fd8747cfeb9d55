"""`vault-agent pairs generate` and `vault-agent retrain`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..errors import UserError
from .common import VaultOpt, local_or_daemon
from .pairs import pairs_app

if TYPE_CHECKING:
    from .train.retrain import RetrainResult

STAGES = {"plan": "planning for the free memory", "materialise": "preparing the training base",
          "train": "training", "export": "exporting the adapter to GGUF", "gate": "gating against the active adapter",
          "activate": "activating the new version"}


def register(app: typer.Typer) -> None:
    pairs_app.command("generate")(pairs_generate)
    app.command("retrain")(retrain_command)


def _bar(label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), transient=True)


def pairs_generate(
    vault: Optional[Path] = VaultOpt,
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Chunks to try (default train.synthetic_chunks)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Refuse, instead of waiting, while the daemon's "
                                                          "first index is still being built."),
):
    """Synthetic pairs: the model's answer with vault context (chosen) vs without (rejected)."""
    settings, _, client = local_or_daemon(vault)
    limit = limit or settings.train.synthetic_chunks
    with _bar("pairs") as bar:
        task = bar.add_task("pairs", total=None, info="")

        def show(summary: dict, total: int) -> None:
            bar.update(task, completed=summary["chunks_seen"], total=total or None,
                       info=f"kept {summary['kept']} / dropped {summary['dropped_total']}")

        if client:
            wait_for_first_index(client, no_wait)
            summary = _generate_remote(client, limit, show)
        else:
            summary = _generate_local(settings, vault, limit, show)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console

    console = Console()
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items() if v) or "none"
    console.print(f"kept {summary['kept']} pairs from {summary['chunks_seen']} chunks in {summary['seconds']}s "
                  f"({summary['already_done']} chunks already had a pair)", highlight=False)
    console.print(f"dropped: {dropped}", highlight=False)
    console.print(f"questions from headings (model's question unusable): {summary['questions_from_heading']}",
                  highlight=False)
    for err in summary["errors"]:
        console.print(f"[yellow]error[/] {err}", highlight=False)


def wait_for_first_index(client, no_wait: bool) -> None:
    """Pairs come from indexed chunks: before the daemon's first index pass ends there are none (or
    only some), and a run then looks like "nothing to do". Wait for it, saying so, or refuse."""
    said = None
    while (index := client.get("/status")["index"])["last_sync"] is None:
        progress = f"{index['notes_indexed']}/{index['notes_total']} notes"
        if no_wait:
            client.close()
            raise UserError(f"the daemon is still building its first index ({progress}); run again when "
                            "`vault-agent status` shows a last sync, or leave out --no-wait to wait")
        if progress != said:
            print(f"waiting for the daemon's first index: {progress}", file=sys.stderr, flush=True)
            said = progress
        time.sleep(0.5)


def _generate_remote(client, limit: int, show) -> dict:
    """Through the running daemon, which owns the model: start the job, poll its progress."""
    try:
        state = client.post("/pairs/generate", {"limit": limit})
        while True:
            if state.get("summary"):
                show(state["summary"], state.get("total", 0))
            if not state.get("running"):
                break
            time.sleep(0.5)
            state = client.get("/pairs/generate")
    finally:
        client.close()
    if state.get("error"):
        raise UserError(f"pair generation failed in the daemon: {state['error']}")
    return state["summary"]


def _generate_local(settings, vault: Optional[Path], limit: int, show) -> dict:
    from ..feedback.store import PreferenceLog
    from ..index.indexer import Indexer
    from ..llm.backend import LlamaBackend
    from ..paths import app_dirs
    from ..train import synthetic
    from ..train.keep_rules import KeepRules
    from ..vault.files import resolve_vault

    dirs = app_dirs().ensure()
    indexer = Indexer(settings, resolve_vault(settings.vault), dirs)
    try:
        indexer.reconcile()
        with LlamaBackend(settings.llm) as backend, PreferenceLog(dirs.preference_db) as log:
            llm = settings.llm

            def generate(messages: list[dict], max_tokens: int) -> str:
                return backend.chat(messages, max_tokens=max_tokens, temperature=llm.temperature, seed=llm.seed)

            summary = synthetic.generate_pairs(
                synthetic.catalog_chunks(indexer.catalog), log, generate,
                synthetic.indexer_retriever(indexer, llm.context_chunks), limit=limit, seed=settings.train.seed,
                context_chunks=llm.context_chunks, fit=synthetic.context_fitter(backend, synthetic.ANSWER_TOKENS),
                progress=lambda s, total: show(s.to_dict(), total), rules=KeepRules.from_settings(settings.train))
    finally:
        indexer.close()
    return summary.to_dict()


def retrain_command(
    vault: Optional[Path] = VaultOpt,
    if_due: bool = typer.Option(False, "--if-due", help="Only when train.min_new_pairs new pairs exist (timers)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the dataset, model, quantization and memory estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    method: Optional[str] = typer.Option(None, "--method", help="auto, dpo or kto (overrides train.method)."),
    limit_memory: bool = typer.Option(False, "--limit-memory",
                                      help="Stop with an error if the run outgrows its memory budget (the nightly "
                                           "run does this)."),
    nice: int = typer.Option(0, "--nice", min=0, max=19, help="Lower this run's CPU priority by N (the nightly "
                                                              "run uses 10)."),
):
    """Train a new LoRA adapter version on the preference log (DPO on pairs, or KTO on single thumbs)."""
    from ..config import load_settings
    from ..paths import app_dirs
    from ..train.method import with_method
    from ..train.retrain import retrain

    settings = with_method(load_settings(vault=vault), method)  # refused here, before any model loads
    if nice:
        os.nice(nice)
    if as_json or dry_run:
        # one line per stage on stderr: stdout is the JSON
        result = retrain(settings, app_dirs(), if_due=if_due, dry_run=dry_run, limit_memory=limit_memory,
                         on_stage=lambda name: print(f"retrain: {STAGES.get(name, name)}", file=sys.stderr,
                                                     flush=True) if as_json else None)
    else:
        with _bar("training") as bar:
            task = bar.add_task("train", total=None, info="")

            def show(step: int, total: int, logs: dict) -> None:
                loss = logs.get("loss")
                bar.update(task, completed=step, total=total or None,
                           info=f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "")

            def stage(name: str) -> None:
                bar.update(task, info=STAGES.get(name, name))

            result = retrain(settings, app_dirs(), if_due=if_due, progress=show, on_stage=stage,
                             limit_memory=limit_memory)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    _print_summary(result)


def _print_summary(r: RetrainResult) -> None:
    from rich.console import Console

    c = Console(highlight=False)
    p = r.pairs
    src = ", ".join(f"{k} {v}" for k, v in p["by_source"].items())
    c.print(f"pairs: {p['train']} train ({src}), {p['heldout']} held out, {p['duplicates_dropped']} duplicates "
            f"dropped, {p['corrupt_skipped']} corrupt skipped")
    e = r.examples
    if e:
        c.print(f"single answers (for KTO): {e['train']} train ({e['desirable']} desirable, {e['undesirable']} "
                f"undesirable), {e['heldout']} held out, {e['duplicates_dropped']} duplicates dropped")
    for line in r.corrupt_pairs:
        c.print(f"[yellow]skipped[/] {'row' if r.method == 'kto' else 'pair'} {line}")
    if r.method:
        c.print(f"method: {r.method.upper()} ({r.method_reason})")
    if r.kto:
        k = r.kto
        c.print(f"KTO: {k['desirable']} desirable / {k['undesirable']} undesirable rows, weights "
                f"{k['desirable_weight']} / {k['undesirable_weight']} (KTO's balance for skewed thumbs)")
    if r.due is False:
        c.print(f"not due: {r.reason}")
        return
    plan = r.plan
    if plan:
        q = plan["quantization"]
        c.print(f"base: {plan['base'].get('location')} ({plan['base'].get('source')}); device {plan['device']}, "
                f"{'4-bit ' + q['bnb_4bit_quant_type'] if q else plan['dtype']} weights, bf16 {plan['bf16']}, "
                f"gradient checkpointing {plan['gradient_checkpointing']}, optimizer {plan['optim']}")
        c.print(f"LoRA r={plan['lora']['r']} alpha={plan['lora']['lora_alpha']} on {plan['lora']['target_modules']}; "
                f"DPO beta={plan['dpo']['beta']} ({plan['dpo']['loss_type']}), lr {plan['dpo']['learning_rate']}, "
                f"{plan['dpo']['num_train_epochs']} epochs, max length {plan['dpo']['max_length']}")
        d = plan["dpo"]
        c.print(f"batch: {d['per_device_train_batch_size']} pair(s) at a time x {d['gradient_accumulation_steps']} "
                f"accumulated; reference log-probs {'once, before training' if plan['precompute_ref_log_probs'] else 'each step'}")
        if plan.get("memory"):
            m = plan["memory"]
            c.print(f"memory estimate (at train.max_length): {m['total_gib']} GiB (process {m['process_gib']}, weights "
                    f"{m['weights_gib']}, activations {m['activations_gib']}, LM-head tiles {m['logits_gib']})"
                    + (f"; materialising the GGUF first: {m['materialise_gib']} GiB" if m.get("materialise_gib") else "")
                    + (f"; budget {m['budget_gib']} GiB ({m['budget_source']})" if m.get("budget_gib") else ""))
    if r.variants:
        c.print("loss: " + " + ".join(r.variants["ran"]))
        for note in r.variants["notes"]:
            c.print(note)
    if r.dry_run:
        c.print("dry run: nothing was trained")
        return
    h = r.heldout
    c.print(f"[bold]{r.version}[/] written to {r.path} in {r.seconds}s ({r.steps} steps, "
            f"mean loss {r.train_loss:.4f})")
    if r.prompts_cut or r.too_long_left_out:
        c.print(f"{r.prompts_cut} prompts cut from the left to fit train.max_length; "
                f"{r.too_long_left_out} left out (no room even then)")
    if r.memory:
        m = r.memory
        c.print(f"memory: peak {m['peak_rss_gib']} GiB resident (estimated {m['estimate_gib']} GiB)"
                + (f", {m['peak_vram_gib']} GiB VRAM" if m.get("peak_vram_gib") is not None else ""))
    if r.method == "kto":
        c.print(f"held-out ({h['examples']} answers): mean token log-prob change desirable "
                f"{h['desirable_logp_change']}, undesirable {h['undesirable_logp_change']}")
    else:
        c.print(f"held-out ({h['pairs']} pairs): accuracy {h['accuracy_before']} -> {h['accuracy_after']}, "
                f"margin {h['margin_before']} -> {h['margin_after']} (mean per-token log-prob, chosen minus rejected)")
    gate = r.gate
    if gate is None:
        c.print("the active adapter is unchanged (train.promote is off)")
        return
    verdict = "promoted: " + gate.get("activation", "") if gate["promoted"] else "not promoted; the active adapter is unchanged"
    c.print(f"gate (llama.cpp, held-out {'answers' if r.method == 'kto' else 'pairs'}): {verdict}")
    for reason in gate["reasons"]:
        c.print(f"  {reason}")
