"""PEFT adapter -> GGUF LoRA, checked the only way that catches a wrong layout: llama.cpp with the
exported adapter must move the bundled model's log-probs the way transformers + PEFT moves the same
base (dequantized from the same GGUF). The bases differ by quantization noise, so we compare each
engine's *shift* (adapted minus base) over many positions, with an adapter strong enough to dominate
that noise, and show the check fails when the llama q/k row permutation is left out."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import strong_adapter

from vault_agent.errors import UserError

PROMPT = ("The starter is fed flour and water in equal weights every morning, then left on the counter "
          "until it doubles. Bake the loaf at 250 C in a dutch oven for twenty minutes with the lid on.")
TOP = 20  # compare shifts on each position's top-20 base tokens: where the probability mass is


def hf_logprobs(model, ids):
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), -1).numpy()


def llama_logprobs(gguf_path, ids, lora=None):
    import llama_cpp

    from vault_agent.llm.lora import LoraSlot, adapter_safe_loading

    with adapter_safe_loading():
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    slot = LoraSlot(llm)
    try:
        if lora is not None:  # the same slot LlamaBackend.set_adapter swaps with
            slot.use(slot.load(lora))
        llm.eval(ids)
        scores = np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        slot.close()
        llm.close()
    scores -= scores.max(-1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(-1, keepdims=True))


def shift_correlation(hf_b, hf_a, cpp_b, cpp_a):
    top = np.argsort(-hf_b, axis=-1)[:, :TOP]
    take = lambda x: np.take_along_axis(x, top, -1).ravel()  # noqa: E731
    return float(np.corrcoef(take(hf_a) - take(hf_b), take(cpp_a) - take(cpp_b))[0, 1])


@pytest.mark.slow
def test_exported_adapter_moves_llama_cpp_like_peft_and_the_qk_permutation_matters(
        hf_base, bundled_gguf, tmp_path):
    from vault_agent.train.export import export_gguf_lora

    import llama_cpp

    vocab_llm = llama_cpp.Llama(model_path=str(bundled_gguf), n_ctx=256, vocab_only=True, verbose=False)
    ids = vocab_llm.tokenize(PROMPT.encode(), add_bos=False)
    vocab_llm.close()
    assert len(ids) > 30

    # q/k only: exactly the weights whose layout differs between the engines
    peft_model = strong_adapter(hf_base, tmp_path / "adapter", ["q_proj", "k_proj"], scale=0.15)
    hf_a = hf_logprobs(peft_model, ids)
    with peft_model.disable_adapter():
        hf_b = hf_logprobs(peft_model, ids)
    peft_model.unload()  # give the fixture its plain base back

    right = export_gguf_lora(tmp_path / "adapter", bundled_gguf, tmp_path / "right.gguf")
    export_gguf_lora(tmp_path / "adapter", bundled_gguf, tmp_path / "wrong.gguf", permute_qk=False)
    assert right["tensors"] == 2 * 30 and right["alpha"] == 16.0

    cpp_b = llama_logprobs(bundled_gguf, ids)
    corr_right = shift_correlation(hf_b, hf_a, cpp_b, llama_logprobs(bundled_gguf, ids, tmp_path / "right.gguf"))
    corr_wrong = shift_correlation(hf_b, hf_a, cpp_b, llama_logprobs(bundled_gguf, ids, tmp_path / "wrong.gguf"))
    top = np.argsort(-hf_b, axis=-1)[:, :TOP]
    shift = np.abs(np.take_along_axis(hf_a - hf_b, top, -1)).mean()
    print(f"mean |shift| {shift:.2f} nats; shift correlation {corr_right:.3f} permuted, {corr_wrong:.3f} not")
    assert shift > 0.5, "the test adapter is too weak to tell the layouts apart"
    assert corr_right > 0.85
    assert corr_wrong < corr_right - 0.3


PROMPTS = [PROMPT,
           "Project Heron migrates the billing database from Postgres 12 to 16; the cutover is planned for April.",
           "Water the tomato plants deeply twice a week. Peppers like heat, so start their seeds indoors in February."]


def shift_slope(hf_b, hf_a, cpp_b, cpp_a):
    """Least-squares slope of the llama.cpp shift on the PEFT shift: 1 when the alpha / r scale matches."""
    top = np.argsort(-hf_b, axis=-1)[:, :TOP]
    x = np.take_along_axis(hf_a - hf_b, top, -1).ravel()
    y = np.take_along_axis(cpp_a - cpp_b, top, -1).ravel()
    return float((x * y).sum() / (x * x).sum())


@pytest.mark.slow
def test_adapter_on_every_linear_layer_changes_llama_cpp_the_way_it_changes_peft(hf_base, bundled_gguf, tmp_path):
    """Over several prompts: the same top-1 token at >= 85% of positions, shifts correlated above 0.85
    with a slope within 20% of 1 (a wrong alpha scale moves the slope), and both engines far from
    their own base (so agreement is not just the base agreeing with itself)."""
    import json
    import shutil

    import llama_cpp

    from vault_agent.train.export import export_gguf_lora

    vocab_llm = llama_cpp.Llama(model_path=str(bundled_gguf), n_ctx=256, vocab_only=True, verbose=False)
    prompts = [vocab_llm.tokenize(p.encode(), add_bos=False) for p in PROMPTS]
    vocab_llm.close()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = strong_adapter(hf_base, tmp_path / "adapter", targets, seed=1, scale=0.05)
    hf = []
    for ids in prompts:
        adapted = hf_logprobs(peft_model, ids)
        with peft_model.disable_adapter():
            hf.append((hf_logprobs(peft_model, ids), adapted))
    peft_model.unload()
    info = export_gguf_lora(tmp_path / "adapter", bundled_gguf, tmp_path / "all.gguf")
    assert info["tensors"] == 7 * 30
    # the same adapter with a doubled alpha in its config: llama.cpp would scale it twice as hard
    shutil.copytree(tmp_path / "adapter", tmp_path / "alpha2")
    cfg = json.loads((tmp_path / "alpha2" / "adapter_config.json").read_text())
    cfg["lora_alpha"] *= 2
    (tmp_path / "alpha2" / "adapter_config.json").write_text(json.dumps(cfg))
    export_gguf_lora(tmp_path / "alpha2", bundled_gguf, tmp_path / "alpha2.gguf")

    cat = lambda xs: np.concatenate(xs, 0)  # noqa: E731
    hf_b, hf_a = cat([b for b, _ in hf]), cat([a for _, a in hf])
    cpp_b = cat([llama_logprobs(bundled_gguf, ids) for ids in prompts])
    cpp_a = cat([llama_logprobs(bundled_gguf, ids, tmp_path / "all.gguf") for ids in prompts])
    cpp_a2 = cat([llama_logprobs(bundled_gguf, ids, tmp_path / "alpha2.gguf") for ids in prompts])

    top1_agree = float((cpp_a.argmax(-1) == hf_a.argmax(-1)).mean())
    top1_moved = float((hf_a.argmax(-1) != hf_b.argmax(-1)).mean())
    corr = shift_correlation(hf_b, hf_a, cpp_b, cpp_a)
    slope, slope2 = shift_slope(hf_b, hf_a, cpp_b, cpp_a), shift_slope(hf_b, hf_a, cpp_b, cpp_a2)
    print(f"{len(hf_b)} positions: top-1 agreement {top1_agree:.2f}, top-1 moved by the adapter {top1_moved:.2f}, "
          f"shift correlation {corr:.3f}, slope {slope:.2f} (doubled alpha: {slope2:.2f})")
    assert top1_moved > 0.3  # the adapter changes the model's choices, not just its confidence
    assert top1_agree >= 0.85
    assert corr > 0.85
    assert 0.8 < slope < 1.2
    assert slope2 > 1.5  # the slope check sees a wrong scale


def test_adapter_that_trains_the_output_head_is_refused(tiny_llama, tmp_path, bundled_gguf):
    from peft import LoraConfig, get_peft_model

    from vault_agent.train.export import export_gguf_lora

    model, _ = tiny_llama
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "lm_head"])).save_pretrained(str(tmp_path / "a"))
    with pytest.raises(UserError, match="output head"):
        export_gguf_lora(tmp_path / "a", bundled_gguf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_adapter_trained_on_another_model_is_refused(tiny_llama, tmp_path, bundled_gguf):
    from peft import LoraConfig, get_peft_model

    from vault_agent.train.export import export_gguf_lora

    model, _ = tiny_llama  # 64 wide: the bundled model is 576 wide
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(str(tmp_path / "a"))
    with pytest.raises(UserError, match="trained on another model"):
        export_gguf_lora(tmp_path / "a", bundled_gguf, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))


def test_folder_without_an_adapter_gets_a_clear_error(tmp_path, bundled_gguf):
    from vault_agent.train.export import export_gguf_lora

    with pytest.raises(UserError, match="not a PEFT adapter"):
        export_gguf_lora(tmp_path, bundled_gguf, tmp_path / "out.gguf")
