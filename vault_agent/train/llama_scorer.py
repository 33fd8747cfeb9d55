"""llama.cpp scoring of text for the gate: log-probs of answers to chat prompts (in the serving
prompt format), perplexity, with LoRA adapters switched on and off inside one context. Logits are
asked for the positions scored only (llm/lora.py BatchDecoder).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import UserError
from ..llm.lora import BatchDecoder, LoadedLora, LoraSlot, adapter_safe_loading, import_llama_cpp, token_text


class LlamaScorer:
    """A llama.cpp model scored through `decoder` (llm/lora.py BatchDecoder), which asks for the
    logits of the positions scored and no others. LoRA adapters are loaded through the
    same slot the serving backend hot-swaps with (llm/lora.py), and switched on and off between
    passes (`use`), so an adapter and the plain base are compared inside one context."""

    def __init__(self, gguf_path: Path, adapter_path: Path | None, n_ctx: int = 2048, n_threads: int | None = None):
        llama_cpp = import_llama_cpp()
        self.n_ctx = n_ctx
        self.path = Path(gguf_path)
        with adapter_safe_loading():
            self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx,
                                       n_threads=n_threads or os.cpu_count() or 1, verbose=False)
        self._loras = LoraSlot(self.llm)
        self.decoder = BatchDecoder(self.llm)
        self._cached: list[int] = []  # the tokens in the KV cache, position by position (see answers_log_probs)
        try:
            if adapter_path is not None:
                self.use(self.load_adapter(adapter_path))
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise UserError(f"{gguf_path.name} has no chat template; the gate scores chat prompts")
        except BaseException:
            self.close()
            raise
        # the BOS and EOS texts as Llama gives them to its own chat formatter: the serving prompt format
        self._format = Jinja2ChatFormatter(template, eos_token=token_text(self.llm, self.llm.token_eos()),
                                           bos_token=token_text(self.llm, self.llm.token_bos()))
        self._end = self._format(messages=[{"role": "user", "content": ""}]).stop

    def load_adapter(self, path: Path) -> LoadedLora:
        """Load a GGUF LoRA for this model (not applied yet: see `use`)."""
        return self._loras.load(path)

    def use(self, lora: LoadedLora | None) -> None:
        """Apply a loaded adapter (None: the plain base) to the following passes. The KV cache is
        forgotten, so nothing computed under the other weights is reused."""
        if lora is not self._loras.current:
            self._loras.use(lora)
            self._cached = []  # computed under the other weights

    def close(self) -> None:
        self._loras.close()  # before Llama.close(), which frees the adapters it still knows about
        self.decoder.close()
        self.llm.close()

    def __enter__(self) -> LlamaScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_probs(self, tokens: list[int], start: int):
        """log p(. | tokens[:i]) over the whole vocabulary for i >= start: (len - start, vocab) array.
        Logits are computed for those positions only (the output head over a whole prompt would
        cost about a fifth of the pass on the bundled model, and its copy into Python more)."""
        self.decoder.clear()
        self._cached = []
        return log_softmax(self.decoder.decode(tokens[:-1], 0, outputs_from=start - 1))

    def answers_log_probs(self, found: list[tuple[list[int], int]]) -> list:
        """`log_probs` for several answers to one prompt (`answer_tokens` results with the same head):
        the prompt is evaluated once, each answer then continues from the prompt's KV cache. The
        start the prompt shares with the one before (the chat template's system turn, the notes'
        preamble: RAG prompts share tens of tokens) stays in the cache from that pass, under the same
        weights (`use` forgets it), so only the rest is evaluated."""
        import numpy as np

        ids0, start = found[0]
        keep = 0
        for a, b in zip(self._cached, ids0[:start - 1]):  # the last prompt token is always evaluated: its row is needed
            if a != b:
                break
            keep += 1
        self.decoder.drop_from(keep)
        self._cached = []  # until the decode below has succeeded
        # predicts every answer's first token
        last = self.decoder.decode(ids0[keep:start], keep, outputs_from=start - 1 - keep)
        self._cached = list(ids0[:start])
        out = []
        for ids, at in found:
            if at != start or ids[:start] != ids0[:start]:
                raise ValueError("answers_log_probs needs answers to the same prompt")
            self.decoder.drop_from(start)  # the previous answer's cache entries
            self._cached = []
            rest = self.decoder.decode(ids[start:-1], start, outputs_from=0)
            self._cached = list(ids[:-1])
            out.append(log_softmax(np.concatenate([last, rest]) if len(rest) else last))
        return out

    def _token_logprobs(self, tokens: list[int], start: int) -> list[float]:
        """log p(tokens[i] | tokens[:i]) for i >= start."""
        return list(picked(self.log_probs(tokens, start), tokens, start))

    def answer_tokens(self, prompt: list[dict], completion: str) -> tuple[list[int], int] | None:
        """(token ids of prompt + completion in the serving chat format, index of the first answer
        token); None when it does not fit the context window or the answer is empty."""
        head = self._format(messages=prompt).prompt
        end = self._end[0] if isinstance(self._end, list) and self._end else ""
        head_ids = self.llm.tokenize(head.encode(), add_bos=False, special=True)
        ids = head_ids + self.llm.tokenize((completion + end).encode(), add_bos=False, special=True)
        if len(ids) > self.n_ctx or len(ids) == len(head_ids):
            return None
        return ids, len(head_ids)

    def completion_logprob(self, prompt: list[dict], completion: str) -> float | None:
        """Mean log-prob per token of `completion` answered to the chat `prompt`, in the serving
        prompt format; None when it does not fit the context window."""
        found = self.answer_tokens(prompt, completion)
        if found is None:
            return None
        lps = self._token_logprobs(*found)
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


def log_softmax(logits):
    """Row-wise log-softmax, float32, through torch: about 6x faster than numpy in float64 over a
    152k vocabulary (60 rows: 0.15 s against 0.9 s on the loaded 2-core machine), with figures equal
    to 1e-5 relative. A numpy array comes back (a view, no copy)."""
    import numpy as np
    import torch

    rows = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    return torch.log_softmax(rows, dim=-1).numpy()


def picked(log_probs, tokens: list[int], start: int):
    """Each row's log-prob of the token that actually came next."""
    import numpy as np

    return log_probs[np.arange(len(tokens) - start), np.asarray(tokens[start:])]


def kl_rows(p_log, q_log) -> float:
    """Sum over positions of KL(p || q) between full next-token distributions (log-probs in)."""
    import torch

    return float(torch.nn.functional.kl_div(torch.from_numpy(q_log), torch.from_numpy(p_log),
                                            reduction="sum", log_target=True))
