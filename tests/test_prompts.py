"""Prompt building, context fitting and citation parsing (no model: a word counter stands in
for the tokenizer)."""

from vault_agent.llm.prompts import (
    build_plain_messages,
    build_rag_messages,
    context_budget,
    fit_contexts,
    format_context,
    note_title,
    parse_citations,
)


def words(text: str) -> int:
    return len(text.split())


def ctx(n: int, text: str, note: str = "Projects/Alpha plan.md", heading: str = "Goals") -> dict:
    return {"n": n, "note": note, "heading": heading, "text": text}


def test_rag_messages_number_the_notes_then_ask():
    msgs = build_rag_messages(
        "  When is the launch? ",
        [ctx(1, "Launch is in May."), ctx(2, "Budget is small.", note="Money.md", heading="")],
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    system = msgs[0]["content"]
    assert "[1]" in system and "don't know" in system and "concise" in system.lower()
    user = msgs[1]["content"]
    assert "[1] Alpha plan > Goals\nLaunch is in May." in user
    assert "[2] Money\nBudget is small." in user  # no heading: no " > "
    assert user.index("[1] Alpha") < user.index("[2] Money") < user.index("Question: When is the launch?")
    assert user.endswith("Question: When is the launch?")


def test_plain_messages_have_no_notes():
    msgs = build_plain_messages("What is DPO?")
    assert msgs[-1] == {"role": "user", "content": "What is DPO?"}
    assert "notes" not in msgs[0]["content"].lower()


def test_note_title_strips_folders_and_extension():
    assert note_title("a/b/My Note.md") == "My Note"
    assert note_title("a\\b\\Win.md") == "Win"
    assert note_title("plain") == "plain"


def test_fit_keeps_everything_that_fits():
    contexts = [ctx(i, "one two three") for i in (1, 2, 3)]
    assert fit_contexts(contexts, 1000, words) == contexts


def test_fit_drops_lowest_ranked_and_truncates_the_last_kept():
    long = " ".join(f"w{i}" for i in range(200))
    contexts = [ctx(1, "short text here"), ctx(2, long), ctx(3, "never reached")]
    budget = 80
    kept = fit_contexts(contexts, budget, words)
    assert [c["n"] for c in kept] == [1, 2]
    assert kept[0] is contexts[0]
    assert kept[1]["text"].startswith("w0 w1 w2") and kept[1]["text"].endswith("…")
    assert contexts[1]["text"] == long  # input untouched
    total = sum(words(format_context(c)) + 2 for c in kept)
    assert total <= budget


def test_fit_drops_a_context_that_would_be_a_useless_stub():
    contexts = [ctx(1, " ".join(["x"] * 40)), ctx(2, " ".join(["y"] * 100))]
    kept = fit_contexts(contexts, 50, words)  # ~5 words left after [1]: too little for [2]
    assert [c["n"] for c in kept] == [1]


def test_fit_truncates_even_the_top_context_and_handles_no_room():
    big = [ctx(1, " ".join(["z"] * 500))]
    kept = fit_contexts(big, 100, words)
    assert len(kept) == 1 and words(format_context(kept[0])) <= 100
    assert fit_contexts(big, 5, words) == []
    assert fit_contexts([], 100, words) == []


def test_context_budget_leaves_room_for_answer_and_question():
    assert context_budget(2048, 256, "a question", words) < 2048 - 256
    assert context_budget(2048, 512, "q", words) == context_budget(2048, 256, "q", words) - 256


def test_parse_citations_distinct_valid_in_order():
    answer = "Launch is May [2]. Budget [1][2] and [7] and [0]. Also [1, 3] and [ 4 ]."
    assert parse_citations(answer, 3) == [2, 1, 3]
    assert parse_citations("no citations", 3) == []
    assert parse_citations("[1]", 0) == []


def test_context_header_does_not_repeat_the_title():
    from vault_agent.llm.prompts import context_header

    ctx = {"n": 1, "note": "Recipes/Sourdough.md", "heading": "Sourdough > Gerald > Storage", "text": "x"}
    assert context_header(ctx) == "[1] Sourdough > Gerald > Storage"
    assert context_header({**ctx, "heading": "Sourdough"}) == "[1] Sourdough"
    assert context_header({**ctx, "heading": "Baking"}) == "[1] Sourdough > Baking"
