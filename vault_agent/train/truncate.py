"""Long prompts are cut to fit `train.max_length`, never silently dropped.

TRL truncates a too-long sequence from its end (cutting the answers, which carry the preference)
and drops an example whose prompt alone fills max_length. So before TRL sees a pair, its prompt is
cut from the left: earlier conversation turns go first, then the start of the last user message
(the notes block, whose end holds the question). The system rules are kept. An answer longer than
half of max_length keeps its first half of the room (TRL cuts its end), so the prompt keeps the rest.
Only a pair whose system message alone leaves no room is left out; the caller counts both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

CUT_MARK = "…"


@dataclass
class Fitted:
    prompt: list[dict[str, str]] | None  # None: cannot fit at all
    cut: bool


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_length(tokenizer, prompt: list[dict[str, str]]) -> int:
    """Tokens of the chat-templated prompt, with the assistant header that follows it."""
    return len(_ids(tokenizer, tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)))


def answer_length(tokenizer, prompt: list[dict[str, str]], answer: str) -> int:
    """Tokens the answer adds after the templated prompt (its end-of-turn marks included)."""
    p_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    tail = full[len(p_text):] if full.startswith(p_text) else answer + (tokenizer.eos_token or "")
    return len(_ids(tokenizer, tail))


def fit_prompt(tokenizer, prompt: list[dict[str, str]], answers: list[str], max_length: int) -> Fitted:
    """The prompt, cut from the left so that it plus its longest answer fits max_length tokens."""
    longest = max((answer_length(tokenizer, prompt, a) for a in answers), default=0)
    room = max_length - min(longest, max_length // 2)
    length = prompt_length(tokenizer, prompt)
    if length <= room:
        return Fitted(prompt, False)
    messages = [dict(m) for m in prompt]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        return Fitted(None, False)
    # whole earlier turns first (oldest first), keeping the system rules
    while length > room:
        earlier = [i for i, m in enumerate(messages[:last_user]) if m["role"] != "system"]
        if not earlier:
            break
        del messages[earlier[0]]
        last_user -= 1
        length = prompt_length(tokenizer, messages)
    # then the start of the last user message; the template's own tokens make the count
    # approximate, so cut again by what is still over (a few tokens more each time)
    for attempt in range(6):
        if length <= room:
            return Fitted(messages, True)
        ids = _ids(tokenizer, messages[last_user]["content"].removeprefix(CUT_MARK))
        drop = length - room + 2 + 4 * attempt
        if drop >= len(ids):
            return Fitted(None, False)
        messages[last_user]["content"] = CUT_MARK + tokenizer.decode(ids[drop:]).lstrip()
        length = prompt_length(tokenizer, messages)
    return Fitted(messages, True) if length <= room else Fitted(None, False)


def fit_all(tokenizer, items: list, answers, max_length: int) -> tuple[list, int, int]:
    """(items with prompts that fit, how many were cut, how many could not fit and were left out).
    `answers(item)` gives the item's answer texts; items are dataclasses with a `prompt`."""
    import dataclasses

    kept, cut, left_out = [], 0, 0
    for item in items:
        fitted = fit_prompt(tokenizer, item.prompt, answers(item), max_length)
        if fitted.prompt is None:
            left_out += 1
            continue
        cut += fitted.cut
        kept.append(dataclasses.replace(item, prompt=fitted.prompt) if fitted.cut else item)
    return kept, cut, left_out
