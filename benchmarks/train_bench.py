"""Training throughput: TRL DPOTrainer vs a plain PEFT forward+backward of the same batches,
peak RSS, and synthetic pairs per minute; `--cuda` measures QLoRA DPO on a GPU.

CPU (default): the bundled model (materialised from its GGUF), short pairs.
    python benchmarks/train_bench.py                 # ~5 min on 2 cores
    python benchmarks/train_bench.py --smoke         # tiny random llama, seconds (run by the tests)
Real size on CPU (benchmarks/_rag_retrain.py): a default retrain on pairs with ~1,000-token RAG
prompts, against the layout used before the memory plan, optionally beside a daemon answering:
    python benchmarks/train_bench.py --rag --pairs 64                  # ~40 min on 2 cores
    python benchmarks/train_bench.py --rag --pairs 24 --epochs 1 --beside-daemon --old-steps 0
CUDA: a randomly initialised model of a real architecture size, saved once in bf16 and loaded
4-bit (nf4) through the same plan/config code as `vault-agent retrain` (vault_agent/train/dpo.py):
    python benchmarks/train_bench.py --cuda --arch llama-7b --pairs 32 --seq 512
Needs only torch, transformers, peft, accelerate, trl, bitsandbytes, datasets there (no chromadb,
llama_cpp or sentence-transformers), and no network.

Writes benchmarks/results/train_bench[_smoke|_cuda|_rag].json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mb, write_result  # noqa: E402

ARCHS = {  # LlamaConfig dims of real models
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000),
    "llama-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                      num_key_value_heads=40, vocab_size=32000),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32000),
}


def train_settings(**over):
    """TrainSettings when the package's config is importable, else the same fields by hand
    (the GPU machine has no pydantic-settings); make_plan only reads attributes."""
    try:
        from vault_agent.config import TrainSettings

        return TrainSettings(**over)
    except ImportError:
        base = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", beta=0.1,
                    loss_type="sigmoid", learning_rate=5e-5, epochs=1.0, batch_size=4, max_length=1024, seed=0,
                    sft_weight=0.0, dynamic_beta=False, source_margins={})
        return SimpleNamespace(**{**base, **over})


def batch_tokens(batch) -> int:
    """Real (unpadded) tokens in a collated DPO batch: chosen and rejected sequences."""
    total = 0
    for key, value in batch.items():
        if key.endswith("attention_mask") and hasattr(value, "sum"):
            total += int(value.sum())
    if total == 0 and "input_ids" in batch:
        total = int(batch["input_ids"].numel())
    return total


def measure_trainer(plan, model, tokenizer, records, steps: int, workdir: str) -> dict:
    """DPOTrainer for `steps` steps: wall time and tokens/s, plus the batches it saw."""
    from vault_agent.train.dpo import make_trainer

    trainer = make_trainer(plan, model, tokenizer, records, workdir, max_steps=steps)
    batches = []
    loader = trainer.get_train_dataloader()
    for batch in loader:
        batches.append(batch)
        if len(batches) >= steps * plan.dpo["gradient_accumulation_steps"]:
            break
    tokens = sum(batch_tokens(b) for b in batches)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    return {"trainer": trainer, "batches": batches, "tokens": tokens, "seconds": seconds,
            "steps": result.global_step, "loss": result.training_loss}


def measure_plain(plan, model, batches, device) -> dict:
    """A plain PEFT forward+backward (+ AdamW step) over the same collated sequences: the floor."""
    import torch
    from peft import get_peft_model

    from vault_agent.train.dpo import lora_config

    peft_model = get_peft_model(model, lora_config(plan))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5)
    tokens = 0
    t0 = time.perf_counter()
    for batch in batches:
        ids, mask = _sequences(batch)
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=plan.bf16):
            logits = peft_model(input_ids=ids, attention_mask=mask).logits
        loss = torch.log_softmax(logits.float(), -1)[..., 0].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += int(mask.sum())
    if device == "cuda":
        torch.cuda.synchronize()
    return {"tokens": tokens, "seconds": time.perf_counter() - t0}


def _sequences(batch):
    """(input_ids, attention_mask) of every sequence in a DPO batch, whatever TRL's key names."""
    import torch

    if "input_ids" in batch:
        return batch["input_ids"], batch["attention_mask"]
    ids, masks = [], []
    for side in ("chosen", "rejected"):
        p, c = batch["prompt_input_ids"], batch[f"{side}_input_ids"]
        pm, cm = batch["prompt_attention_mask"], batch[f"{side}_attention_mask"]
        ids.append(torch.cat([p, c], 1))
        masks.append(torch.cat([pm, cm], 1))
    width = max(x.shape[1] for x in ids)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    return torch.cat([pad(x) for x in ids]), torch.cat([pad(m) for m in masks])


def short_pairs(n: int, seed: int = 0) -> list[dict]:
    """Short conversational pairs in the product's RAG prompt format (DESIGN.md: prompt length
    dominates the cost; these match the 'short pairs' figure)."""
    from vault_agent.llm.prompts import build_rag_messages

    rng = random.Random(seed)
    facts = ["Tomatoes need water twice a week.", "Gerald is the sourdough starter.",
             "The Heron cutover is on 14 March.", "Compost turns every two weeks.",
             "The weather station logs every 5 minutes.", "Resting heart rate fell to 52."]
    out = []
    for i in range(n):
        fact = facts[i % len(facts)]
        q = f"What do my notes say about item {i}?"
        prompt = build_rag_messages(q, [{"n": 1, "note": f"Note {i}.md", "heading": "", "text": fact}])
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": f"{fact} [1]"}],
                    "rejected": [{"role": "assistant", "content": rng.choice(["I don't know.", "It depends."])}]})
    return out


def synthetic_rate(limit: int) -> dict:
    """Synthetic pairs per minute on the sample vault with the bundled chat and embedding models."""
    from vault_agent.config import load_settings
    from vault_agent.feedback.store import PreferenceLog
    from vault_agent.index.indexer import Indexer
    from vault_agent.llm.backend import LlamaBackend
    from vault_agent.paths import app_dirs
    from vault_agent.train import synthetic

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as home:
        os.environ["VAULT_AGENT_HOME"] = home
        settings = load_settings(vault=repo / "sample_vault", llm={"max_tokens": 160, "context_chunks": 3})
        dirs = app_dirs().ensure()
        indexer = Indexer(settings, (repo / "sample_vault").resolve(), dirs)
        indexer.reconcile()
        with LlamaBackend(settings.llm) as backend, PreferenceLog(dirs.preference_db) as log:
            gen = lambda m, n: backend.chat(m, max_tokens=n, temperature=0.2, seed=0)  # noqa: E731
            t0 = time.perf_counter()
            s = synthetic.generate_pairs(synthetic.catalog_chunks(indexer.catalog), log, gen,
                                         synthetic.indexer_retriever(indexer, 3), limit=limit, context_chunks=3,
                                         fit=synthetic.context_fitter(backend, synthetic.ANSWER_TOKENS))
            seconds = time.perf_counter() - t0
        indexer.close()
    return {"chunks_tried": s.chunks_seen, "kept": s.kept, "dropped": s.dropped, "seconds": round(seconds, 1),
            "pairs_per_minute": round(s.kept / seconds * 60, 2) if seconds else None,
            "chunks_per_minute": round(s.chunks_seen / seconds * 60, 2) if seconds else None}


def cpu_run(args) -> dict:
    import copy

    import torch

    from vault_agent.train.dpo import make_plan

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.smoke:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from vault_agent.llm.backend import resolve_model_path

        gguf = resolve_model_path("bundled")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        cfg = LlamaConfig(**{**ARCHS["tiny"], "vocab_size": len(tokenizer)}, tie_word_embeddings=True,
                          max_position_embeddings=512)
        model, model_name = LlamaForCausalLM(cfg), "tiny random llama (bundled vocabulary)"
    else:
        from vault_agent.config import load_settings
        from vault_agent.paths import app_dirs
        from vault_agent.train.base import materialise, resolve_base

        settings = load_settings()
        location = materialise(resolve_base(settings.train, settings.llm, app_dirs().ensure()))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(location)
        model_name = f"bundled SmolLM2-135M (materialised at {location})"
    from vault_agent.train.dpo import prepare_tokenizer

    prepare_tokenizer(tokenizer)
    plan = make_plan(train_settings(batch_size=args.batch, max_length=256, epochs=1.0), device="cpu")
    records = short_pairs(args.batch * args.steps)
    plain_model = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as work:
        t = measure_trainer(plan, model, tokenizer, records, args.steps, work)
    p = measure_plain(plan, plain_model, t["batches"], "cpu")
    trainer_tps, plain_tps = t["tokens"] / t["seconds"], p["tokens"] / p["seconds"]
    out = {"model": model_name, "device": "cpu", "threads": torch.get_num_threads(), "steps": t["steps"],
           "pairs_per_step": args.batch, "tokens_per_step": round(t["tokens"] / max(t["steps"], 1)),
           "trainer_seconds_per_step": round(t["seconds"] / max(t["steps"], 1), 3),
           "trainer_tokens_per_s": round(trainer_tps, 1), "plain_peft_tokens_per_s": round(plain_tps, 1),
           "trainer_vs_plain": round(trainer_tps / plain_tps, 3), "target_ratio": 0.5,
           "note": "the trainer also runs the reference pass (adapter disabled) each step; plain does not",
           "plan": {k: getattr(plan, k) for k in ("bf16", "gradient_checkpointing", "optim", "dtype")}}
    if not args.no_synthetic:
        out["synthetic"] = synthetic_rate(1 if args.smoke else args.synthetic)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def cuda_run(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from vault_agent.train.dpo import ModelDims, load_model, make_plan

    if not torch.cuda.is_available():
        raise SystemExit("--cuda needs a CUDA GPU")
    arch = dict(ARCHS[args.arch])
    config = LlamaConfig(**arch, max_position_embeddings=4096, tie_word_embeddings=False)
    dims = ModelDims.from_config(config)
    settings = train_settings(batch_size=args.batch, max_length=args.seq, epochs=1.0)
    plan = make_plan(settings, device="cuda", dims=dims, seq_len=args.seq)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with torch.device("cuda"):  # random init on the GPU, directly in bf16; saved once
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        torch.cuda.empty_cache()
        _word_tokenizer(config.vocab_size).save_pretrained(tmp)
        init_s = time.perf_counter() - t0
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model, tokenizer = load_model(plan, tmp)  # nf4 through BitsAndBytesConfig, as retrain does
        load_s = time.perf_counter() - t0
        load_peak = torch.cuda.max_memory_allocated()
        records = _token_pairs(args.pairs, args.seq, config.vocab_size)
        torch.cuda.reset_peak_memory_stats()
        t = measure_trainer(plan, model, tokenizer, records, args.steps, os.path.join(tmp, "run"))
        train_peak = torch.cuda.max_memory_allocated()
    gib = 2**30
    sps = t["seconds"] / max(t["steps"], 1)
    steps_1000 = 1000 / args.batch
    return {
        "arch": args.arch, "params_b": round(dims.params / 1e9, 2), "device": torch.cuda.get_device_name(0),
        "quantization": plan.quantization, "optim": plan.optim, "bf16": plan.bf16,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "precompute_ref_log_probs": plan.precompute_ref_log_probs,
        "pairs": args.pairs, "seq_tokens": args.seq, "pairs_per_step": args.batch,
        "micro_batch": plan.dpo["per_device_train_batch_size"], "steps": t["steps"],
        "seconds_total_incl_ref_precompute": round(t["seconds"], 1), "seconds_per_step": round(sps, 2),
        "tokens_per_s": round(t["tokens"] / t["seconds"], 1), "loss": t["loss"],
        "peak_gpu_gib_load": round(load_peak / gib, 2), "peak_gpu_gib_train": round(train_peak / gib, 2),
        "estimate_gib": plan.memory.get("total_gib"), "fits_24gb": train_peak < 24 * gib,
        "est_hours_1000_pairs_1_epoch": round(steps_1000 * sps / 3600, 2),
        "init_and_save_s": round(init_s, 1), "load_4bit_s": round(load_s, 1), "peak_rss_mb": peak_rss_mb(),
    }


def _word_tokenizer(vocab_size: int):
    """A word-level tokenizer with ids t0..tN: one word = one token, so pair lengths are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - 3)}
    vocab.update({"<unk>": vocab_size - 3, "<s>": vocab_size - 2, "</s>": vocab_size - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def _token_pairs(n: int, seq: int, vocab: int) -> list[dict]:
    """Plain-text pairs of exactly `seq` tokens each side: 7/8 prompt, 1/8 answer."""
    rng = random.Random(0)
    words = lambda k: " ".join(f"t{rng.randrange(vocab - 3)}" for _ in range(k))  # noqa: E731
    answer = max(8, seq // 8)
    return [{"prompt": words(seq - answer - 1), "chosen": words(answer), "rejected": words(answer)}
            for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny random llama, 2 steps (seconds)")
    ap.add_argument("--cuda", action="store_true", help="QLoRA DPO on a GPU with --arch")
    ap.add_argument("--arch", default="llama-7b", choices=sorted(ARCHS))
    ap.add_argument("--pairs", type=int, default=32, help="--cuda: synthetic pairs")
    ap.add_argument("--seq", type=int, default=512, help="--cuda: tokens per sequence")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps to time")
    ap.add_argument("--batch", type=int, default=4, help="pairs per optimizer step")
    ap.add_argument("--synthetic", type=int, default=6, help="chunks to try for the synthetic pairs rate")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic pairs rate")
    ap.add_argument("--tmp", default=None, help="--cuda: where to save the random model (needs ~2 bytes/param)")
    ap.add_argument("--rag", action="store_true", help="a default retrain at real size (see above)")
    ap.add_argument("--prompt-tokens", type=int, default=1000, help="--rag: prompt length")
    ap.add_argument("--epochs", type=float, default=None, help="--rag: train.epochs (default: the product's)")
    ap.add_argument("--old-steps", type=int, default=1, help="--rag: optimizer steps of the pre-plan layout (0: skip)")
    ap.add_argument("--beside-daemon", action="store_true", help="--rag: answer a question every --every s meanwhile")
    ap.add_argument("--every", type=float, default=10.0, help="--rag --beside-daemon: seconds between questions")
    ap.add_argument("--idle-questions", type=int, default=6, help="--rag --beside-daemon: idle baseline answers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.steps is None:
        args.steps = 2 if args.smoke else (args.pairs // args.batch if args.cuda else 4)
    if args.rag:
        from _rag_retrain import run as rag_run

        if args.smoke:  # the suite's check that the real-size path runs: short prompts, a few steps
            args.pairs, args.prompt_tokens, args.epochs, args.old_steps = 8, 200, 0.5, 1
        elif args.pairs == ap.get_default("pairs"):
            args.pairs = 64
        write_result("train_bench_rag_smoke" if args.smoke else "train_bench_rag", rag_run(args), args.out)
    elif args.cuda:
        write_result("train_bench_cuda", cuda_run(args), args.out)
    else:
        write_result("train_bench_smoke" if args.smoke else "train_bench", cpu_run(args), args.out)


if __name__ == "__main__":
    main()
