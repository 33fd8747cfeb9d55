"""The training side on each architecture the loop trains, checked against llama.cpp's own converters.

Per family, a tiny random model (2 layers, 64 wide, but the family's real head size and
grouped-query ratio: where config bugs hide; a vocabulary of the family's kind) is converted to GGUF
by convert_hf_to_gguf.py. Then: our materialise reads it back (bf16), a LoRA with random non-zero B is
exported by train/export.py and must equal convert_lora_to_gguf.py's file tensor for tensor, and
llama.cpp with our GGUF LoRA must move the log-probs the way transformers + PEFT moves the
materialised model. The training prompt's tokens must equal the served prompt's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import strong_adapter
from llama_converter import run_converters
from test_export_gguf import PROMPTS, hf_logprobs, llama_logprobs, shift_correlation

# family -> (transformers config class, the family's shape: head size and query/kv heads as in a real
# model of it (Llama 3.2 1B, Qwen2.5 0.5B, Qwen3 0.6B, Gemma 2 2B, Gemma 3 1B, Phi-3 mini)
FAMILIES = {
    "llama": ("LlamaConfig", dict(hidden_size=64, head_dim=64, num_attention_heads=4, num_key_value_heads=1,
                                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 8192})),
    "qwen2": ("Qwen2Config", dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1)),  # 64 wide heads
    "qwen3": ("Qwen3Config", dict(hidden_size=64, head_dim=128, num_attention_heads=4, num_key_value_heads=2)),
    "gemma2": ("Gemma2Config", dict(hidden_size=64, head_dim=256, num_attention_heads=2, num_key_value_heads=1)),
    "gemma3": ("Gemma3TextConfig", dict(hidden_size=64, head_dim=256, num_attention_heads=4, num_key_value_heads=1)),
    "phi3": ("Phi3Config", dict(hidden_size=192, num_attention_heads=2, num_key_value_heads=2)),  # 96 wide heads
}
TARGETS = "all-linear"
# each family's own chat-template shape (simplified), so the check below covers a BOS inside the
# template (llama 3, gemma) and an EOS after the last turn (phi3); qwen keeps the bundled ChatML one
TEMPLATES = {
    "llama": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
              "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "gemma2": ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
               "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
               "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "phi3": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"),
}
TEMPLATES["gemma3"] = TEMPLATES["gemma2"]
# families whose real GGUFs carry sentencepiece vocabularies: a small one of their own, with the
# template's turn markers as control tokens, as in the real ones
SENTENCEPIECE = {"gemma2": ["<start_of_turn>", "<end_of_turn>"], "gemma3": ["<start_of_turn>", "<end_of_turn>"],
                 "phi3": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]}
# the pre-tokenizer the family's GGUFs name (llama.cpp's converter cannot hash a tokenizer rebuilt
# from a GGUF; gemma and phi3 ship sentencepiece vocabularies, so they keep the test vocabulary's own)
PRE_TOKENIZERS = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2"}


def tiny_model(family: str, tokenizer, out_dir):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    cls, shape = FAMILIES[family]
    if family in SENTENCEPIECE:
        ids = sentencepiece_vocabulary(out_dir, TEMPLATES[family], SENTENCEPIECE[family])
    else:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = TEMPLATES.get(family, tokenizer.chat_template)
        tokenizer.save_pretrained(out_dir)
        ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    config = getattr(transformers, cls)(intermediate_size=128, num_hidden_layers=2, max_position_embeddings=512,
                                        **ids, **shape)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random init is near-uniform over the vocabulary: sharpen it so top-1 means something
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(out_dir)
    return model


def sentencepiece_vocabulary(out_dir, template: str, markers: list[str]) -> dict:
    """A small sentencepiece vocabulary trained on the test prompts; gemma's special token ids."""
    import json

    import sentencepiece as spm

    from vault_agent.llm.prompts import RAG_SYSTEM

    out_dir.mkdir(parents=True, exist_ok=True)
    text = [RAG_SYSTEM, *PROMPTS, "Notes:", "Question: How often are the tomatoes watered?", "[1] Garden.md > Tomatoes"]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 20), model_prefix=str(out_dir / "tokenizer"),
                                   vocab_size=700, model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1,
                                   bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
                                   control_symbols=markers,
                                   hard_vocab_limit=False, minloglevel=2)
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": template, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "tokenizer_class": "LlamaTokenizer"}))
    size = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model")).get_piece_size()
    return dict(vocab_size=size, bos_token_id=2, eos_token_id=1, pad_token_id=0)


def head_size(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def gguf_tensors(path):
    import gguf

    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_materialise_and_export_match_llama_cpp(family, bundled_tokenizer, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from vault_agent.train.architectures import why_not_trainable
    from vault_agent.train.export import export_gguf_lora
    from vault_agent.train.gguf_to_hf import read_header, write_bf16_checkpoint

    hf_dir, gguf_path = tmp_path / "hf", tmp_path / "model.gguf"
    original = tiny_model(family, bundled_tokenizer, hf_dir)
    strong_adapter(original, tmp_path / "adapter", TARGETS, scale=0.1)  # saved; same names on the materialised model
    run_converters(("convert_hf_to_gguf.py", str(hf_dir), "--outfile", str(gguf_path), "--outtype", "f32"),
                   ("convert_lora_to_gguf.py", str(tmp_path / "adapter"), "--base", str(hf_dir),
                    "--outfile", str(tmp_path / "reference.gguf"), "--outtype", "f32"),
                   base_pre=PRE_TOKENIZERS.get(family, "smollm"))
    assert why_not_trainable(read_header(gguf_path)) is None

    write_bf16_checkpoint(gguf_path, tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32).eval()
    assert head_size(base.config) == head_size(original.config)
    if family == "llama":  # Llama 3.2's rope scaling, which the GGUF keeps as a rope_freqs tensor
        assert base.config.rope_parameters == original.config.rope_parameters

    assert_training_prompt_is_the_served_prompt(gguf_path, tmp_path / "base")

    # (a) our export equals llama.cpp's converter, tensor for tensor
    export_gguf_lora(tmp_path / "adapter", gguf_path, tmp_path / "ours.gguf", dtype="f32")
    ours, reference = gguf_tensors(tmp_path / "ours.gguf"), gguf_tensors(tmp_path / "reference.gguf")
    modules = 4 if family == "phi3" else 7  # phi3 fuses q/k/v and gate/up
    assert set(ours) == set(reference) and len(ours) == 2 * 2 * modules
    for name in ours:
        np.testing.assert_allclose(ours[name].reshape(reference[name].shape), reference[name], atol=1e-6,
                                   err_msg=name)

    # (b) llama.cpp + our LoRA moves the log-probs the way transformers + PEFT moves our materialised base
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, vocab_only=True, verbose=False)
    prompts = [vocab.tokenize(p.encode(), add_bos=False) for p in PROMPTS]
    vocab.close()
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    hf_b, hf_a, cpp_b, cpp_a = [], [], [], []
    for ids in prompts:
        hf_a.append(hf_logprobs(adapted, ids))
        with adapted.disable_adapter():
            hf_b.append(hf_logprobs(adapted, ids))
        cpp_b.append(llama_logprobs(gguf_path, ids))
        cpp_a.append(llama_logprobs(gguf_path, ids, tmp_path / "ours.gguf"))
    hf_b, hf_a, cpp_b, cpp_a = (np.concatenate(x, 0) for x in (hf_b, hf_a, cpp_b, cpp_a))
    base_corr = float(np.corrcoef(hf_b.ravel(), cpp_b.ravel())[0, 1])
    top1 = float((hf_a.argmax(-1) == cpp_a.argmax(-1)).mean())
    moved = float((hf_a.argmax(-1) != hf_b.argmax(-1)).mean())
    corr = shift_correlation(hf_b, hf_a, cpp_b, cpp_a)
    print(f"{family}: base log-prob correlation {base_corr:.4f}, top-1 agreement {top1:.2f} "
          f"(adapter moved top-1 at {moved:.2f}), shift correlation {corr:.3f}")
    assert base_corr > 0.99  # same model in both engines: config read right (head size, scales, caps)
    assert moved > 0.3
    assert top1 >= 0.9
    assert corr > 0.9


def assert_training_prompt_is_the_served_prompt(gguf_path, base_dir):
    """The tokens training sees for a chat prompt (the materialised tokenizer's template, tokenized
    without added specials, as TRL and dpo.py do) are the tokens llama-cpp-python serves for it
    (the GGUF's template through its Jinja2ChatFormatter, tokenized as its chat handler does)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    from vault_agent.llm.lora import token_text
    from vault_agent.llm.prompts import build_rag_messages

    messages = build_rag_messages("How often are the tomatoes watered?", [
        {"n": 1, "note": "Garden.md", "heading": "Tomatoes", "text": "Water the tomato plants deeply twice a week."}])
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    trained = tokenizer(text, add_special_tokens=False)["input_ids"]

    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=64, vocab_only=True, verbose=False)
    try:
        served_format = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"],
                                            eos_token=token_text(llm, llm.token_eos()),
                                            bos_token=token_text(llm, llm.token_bos()))(messages=messages)
        served = llm.tokenize(served_format.prompt.encode(), add_bos=not served_format.added_special, special=True)
    finally:
        llm.close()
    assert trained == served, (text, served_format.prompt)


@pytest.mark.slow
def test_a_qwen2_model_served_by_the_daemon_learns_from_corrections_through_the_api(
        bundled_tokenizer, embedder, make_vault, agent_home, tmp_path, monkeypatch):
    """The whole loop on a non-llama family, as a user runs it: a tiny qwen2 GGUF served by the
    daemon, corrections through the HTTP API, `retrain`, the version activated in the running daemon
    (its base check passes: same GGUF), and the daemon's answer to the same question changes."""
    from conftest import start_daemon

    from vault_agent.config import load_settings
    from vault_agent.paths import app_dirs
    from vault_agent.train.retrain import retrain

    tiny_model("qwen2", bundled_tokenizer, tmp_path / "hf")
    gguf_path = tmp_path / "qwen2.gguf"
    run_converters(("convert_hf_to_gguf.py", str(tmp_path / "hf"), "--outfile", str(gguf_path), "--outtype", "f16"),
                   base_pre="qwen2")
    monkeypatch.setenv("VAULT_AGENT_LLM__MODEL_PATH", str(gguf_path))
    for key, value in {"MIN_PAIRS": "4", "BATCH_SIZE": "2", "MAX_LENGTH": "160", "LEARNING_RATE": "0.005",
                       "EPOCHS": "2", "HELDOUT_FRACTION": "0.2"}.items():
        monkeypatch.setenv(f"VAULT_AGENT_TRAIN__{key}", value)
    vault = make_vault({"Beds.md": "# Beds\n\nBed 3 is watered twice a week, bed 4 on Sundays.\n"}, name="qwen-vault")
    running = start_daemon(vault.resolve(), agent_home, embedder, llm={"max_tokens": 12, "temperature": 0.0,
                                                                       "n_ctx": 512, "context_chunks": 1},
                           server={"port": 0})
    try:
        assert running.http.get("/v1/models").json()["data"][0]["served_model"] == gguf_path.name
        question = "How often is bed 3 watered?"
        before = running.http.post("/ask", json={"question": question})
        assert before.status_code == 200, before.text
        for i in range(10):
            asked = running.http.post("/ask", json={"question": f"How often is bed {i} watered?"}).json()
            fixed = running.http.post("/feedback", json={"response_id": asked["response_id"],
                                                         "correction": f"Bed {i} is watered twice a week [1]."})
            assert fixed.status_code == 200, fixed.text
        result = retrain(load_settings(), app_dirs())  # export + gate; a refused version is activated by hand
        assert result.version == "v0001" and result.gate["exported"], result
        if not result.gate["promoted"]:
            activated = running.http.post(f"/adapters/{result.version}/activate")
            assert activated.status_code == 200, activated.text
        after = running.http.post("/ask", json={"question": question}).json()
        assert after["adapter_version"] == "v0001"
        assert after["answer"] != before.json()["answer"], after["answer"]
    finally:
        running.stop()
