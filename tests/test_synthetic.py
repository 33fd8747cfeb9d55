"""Synthetic context-vs-no-context pairs: chunk rules, balanced sampling, keep rules, resume and
edits. A scripted `generate` stands in for the model here (it adds nothing to these rules); the
real model and the real daemon route are in test_train_real.py."""

from __future__ import annotations

import re

import pytest

from vault_agent.feedback.store import PreferenceLog
from vault_agent.train import keep_rules, synthetic
from vault_agent.train.keep_rules import KeepRules
from vault_agent.train.synthetic import SourceChunk, skip_reason

PROSE = ("The tomato bed gets water twice a week, two and a half centimetres each time, and the basil "
         "planted beside it keeps whiteflies away from the leaves during the warm summer months.")


def test_chunk_rules_skip_tiny_link_only_code_only_and_boilerplate():
    assert skip_reason("Short note.") == "tiny"
    assert skip_reason("See [[Garden]] and [[Composting]] and [[Vegetable Garden#Tomatoes]] and [[Home]] "
                       "and [[Inbox]] and [[Reading List 2026]] for more.") == "link_only"
    assert skip_reason("```python\nimport os\nfor name in sorted(os.listdir('.')):\n    print(name)\n"
                       "    print(name.upper(), len(name))\n    print(os.path.getsize(name))\n```") == "code_only"
    assert skip_reason("---\ntags: daily\ncreated: 2026-03-14\n---\n- [ ] \n- [ ] \n- [ ] \n- [ ] \n- [ ] \n"
                       "- [ ] \n- [ ] \n- [ ] \n- [ ] \n- [ ] \n- [ ] \n- [ ] \n") == "boilerplate"
    assert skip_reason(PROSE) is None
    assert skip_reason(PROSE + "\n\n```sh\nls\n```\nSee [[Garden]].") is None  # prose with some code/links


def test_balanced_sample_spreads_over_folders_and_notes():
    chunks = [SourceChunk(f"big{i}", "Big/Huge.md", "h", PROSE) for i in range(50)]
    chunks += [SourceChunk(f"a{i}", f"A/Note{i}.md", "h", PROSE) for i in range(3)]
    chunks += [SourceChunk("r1", "Root.md", "h", PROSE)]
    sample = synthetic.balanced_sample(chunks, 6, seed=1)
    folders = [c.folder for c in sample]
    assert folders.count("Big") <= 3 and "A" in folders and "" in folders
    assert len({c.path for c in sample if c.folder == "A"}) == min(3, folders.count("A"))
    assert synthetic.balanced_sample(chunks, 6, seed=1) == sample  # deterministic


def test_model_question_is_checked_and_falls_back_to_the_heading_path():
    chunk = SourceChunk("c", "Garden/Vegetable Garden.md", "Vegetable Garden > Tomatoes > Watering", PROSE)
    assert synthetic.clean_question("Question: How often are the tomatoes watered?\nExtra", chunk) == \
        "How often are the tomatoes watered?"
    assert synthetic.clean_question("", chunk) is None
    assert synthetic.clean_question("Tomatoes get water.", chunk) is None  # not a question
    assert synthetic.clean_question(PROSE[:60] + "?", chunk) is None  # a copy of the chunk
    # a model's chatter is not a question about the note (seen on a real vault)
    assert synthetic.clean_question("I'm ready to assist you. What's your next question?", chunk) is None
    assert synthetic.heading_question(chunk) == "What do my notes say about Watering in Vegetable Garden?"


class ScriptedModel:
    """Answers like a model that uses its notes when it has them, and doesn't when it hasn't."""

    def __init__(self, question="How often do the tomatoes get water?", plain="I am not sure, it depends."):
        self.question, self.plain, self.calls = question, plain, []

    def __call__(self, messages, max_tokens):
        self.calls.append(messages)
        system = messages[0]["content"]
        if system == synthetic.QUESTION_SYSTEM:
            return self.question
        if system.startswith("You answer questions using only the numbered notes"):
            first = re.search(r"\[1\][^\n]*\n(.*?)(\n|$)", messages[1]["content"]).group(1)
            return f"{first[:120].rsplit(' ', 1)[0]} [1]."
        return self.plain


class EchoModel(ScriptedModel):
    """Gives the same answer without notes as it gave with them."""

    def __call__(self, messages, max_tokens):
        out = super().__call__(messages, max_tokens)
        if messages[0]["content"].startswith("You answer questions using only the numbered notes"):
            self.last = out
        elif messages[0]["content"] != synthetic.QUESTION_SYSTEM:
            return self.last
        return out


class OffSourceModel(ScriptedModel):
    """Cites the notes but talks about something else."""

    def __call__(self, messages, max_tokens):
        out = super().__call__(messages, max_tokens)
        if messages[0]["content"].startswith("You answer questions using only the numbered notes"):
            return "Generally speaking, healthy gardening requires patience, attention, sunshine and planning [1]."
        return out


@pytest.fixture
def indexed(make_vault, open_index):
    vault = make_vault({
        "Garden/Tomatoes.md": f"# Tomatoes\n\n## Watering\n\n{PROSE}\n",
        "Garden/Compost.md": "# Compost\n\nThe compost heap is turned every two weeks with a fork, and "
                             "kitchen scraps go in the green bin, never meat or dairy, to keep rats away from it.\n",
        "Links.md": "# Links\n\n[[Garden]] [[Compost]] [[Tomatoes]] [[Home]] [[Inbox]] [[Reading List 2026]] "
                    "[[Project Heron]] [[Running Log]] [[Sleep and Recovery]] [[The Overstory]]\n",
    })
    ix = open_index(vault)
    ix.reconcile()
    return vault, ix


def run(ix, log, model, limit=10):
    return synthetic.generate_pairs(synthetic.catalog_chunks(ix.catalog), log, model,
                                    synthetic.indexer_retriever(ix, 2), limit=limit, context_chunks=2)


def test_pairs_are_stored_with_their_chunk_and_a_rerun_skips_them(indexed, tmp_path):
    vault, ix = indexed
    with PreferenceLog(tmp_path / "p.sqlite") as log:
        first = run(ix, log, ScriptedModel())
        assert first.kept == 2 and first.dropped["link_only"] == 1
        pairs = log.pairs()
        assert {p["source"] for p in pairs} == {"synthetic"}
        chunk_ids = {c.id for c in synthetic.catalog_chunks(ix.catalog)}
        for p in pairs:
            chunk_id, digest = p["origin_id"].split(":")
            assert chunk_id in chunk_ids and len(digest) == 16
            assert p["prompt"][0]["content"].startswith("You answer questions using only the numbered notes")
            assert "[1]" in p["prompt"][1]["content"] and p["chosen"].endswith("[1].")
            assert p["rejected"] == "I am not sure, it depends."
        model = ScriptedModel()
        again = run(ix, log, model)
        assert again.kept == 0 and again.already_done == 2 and model.calls == []  # nothing re-generated

        # an edited chunk gets a fresh pair; the untouched one is still skipped
        (vault / "Garden/Compost.md").write_text("# Compost\n\nThe compost heap is now turned every week with a "
                                                 "fork, and kitchen scraps go in the green bin, never meat, "
                                                 "dairy or bread, so the rats stay away from the garden.\n")
        ix.reconcile()
        edited = run(ix, log, ScriptedModel())
        assert edited.kept == 1 and edited.already_done == 1
        assert len(log.pairs()) == 3


def test_keep_rules_drop_and_count_each_reason(indexed, tmp_path):
    _, ix = indexed
    cases = {
        "rejected_empty": ScriptedModel(plain="   "),
        "identical": EchoModel(),
        "truncated": ScriptedModel(plain="Well. " + "word " * 200),
        "chosen_off_source": OffSourceModel(),
    }
    with PreferenceLog(tmp_path / "p.sqlite") as log:
        for rule, model in cases.items():
            summary = run(ix, log, model)
            assert summary.kept == 0 and summary.dropped[rule] == 2, (rule, summary.dropped)
        ignoring = run(ix, log, lambda m, n: "Why?" if m[0]["content"] == synthetic.QUESTION_SYSTEM else "Nope.")
        assert ignoring.dropped["chosen_ignores_context"] == 2
        assert ignoring.questions_from_heading == 2  # "Why?" is too short a question: heading fallback
        assert log.pairs() == []


def test_answers_cut_off_mid_sentence_are_trimmed_to_the_last_whole_sentence():
    cut = "Water twice a week. Use 2.5 cm each time [1]. In July water more often because the " + "soil " * 8
    assert synthetic.finish_sentence(cut, 40) == "Water twice a week. Use 2.5 cm each time [1]."
    assert synthetic.finish_sentence("Short and whole.", 40) == "Short and whole."


def test_one_chunk_failing_is_reported_and_the_run_goes_on(indexed, tmp_path):
    _, ix = indexed
    scripted = ScriptedModel()

    def flaky(messages, max_tokens):
        if "compost" in messages[-1]["content"].lower() and messages[0]["content"] == synthetic.QUESTION_SYSTEM:
            raise RuntimeError("model hiccup")
        return scripted(messages, max_tokens)

    with PreferenceLog(tmp_path / "p.sqlite") as log:
        summary = run(ix, log, flaky)
    assert summary.kept == 1 and summary.dropped["error"] == 1
    assert "Compost.md" in summary.errors[0] and "model hiccup" in summary.errors[0]


def test_chosen_answers_lose_the_markup_they_copied_from_the_prompt(indexed, tmp_path):
    """A model that echoes the note block's header line and callout marks: the stored chosen answer
    keeps the prose and the [n] citation, not the copied format."""
    _, ix = indexed

    class Copier(ScriptedModel):
        def __call__(self, messages, max_tokens):
            out = super().__call__(messages, max_tokens)
            if messages[0]["content"].startswith("You answer questions using only the numbered notes"):
                header = re.search(r"^\[1\][^\n]*$", messages[1]["content"], re.M).group(0)
                return f"{header}\n> [!tip] {out}"
            return out

    with PreferenceLog(tmp_path / "p.sqlite") as log:
        assert run(ix, log, Copier()).kept == 2
        for pair in log.pairs():
            assert "[!tip]" not in pair["chosen"] and not pair["chosen"].startswith(("[1]", ">"))
            assert pair["chosen"].endswith("[1].")


def test_grounded_chosen_answers_quote_the_source_chunk_and_cite_it(indexed, tmp_path):
    _, ix = indexed
    with PreferenceLog(tmp_path / "p.sqlite") as log:
        summary = synthetic.generate_pairs(synthetic.catalog_chunks(ix.catalog), log, ScriptedModel(),
                                           synthetic.indexer_retriever(ix, 2), limit=10, context_chunks=2,
                                           rules=KeepRules(chosen="grounded"))
        assert summary.kept == 2
        by_chunk = {p["chosen"].split(" [")[0][:30]: p for p in log.pairs()}
        tomato = next(p for k, p in by_chunk.items() if k.startswith("The tomato bed gets water"))
        n = re.search(r"\[(\d)\] Tomatoes", tomato["prompt"][1]["content"]).group(1)
        assert tomato["chosen"].startswith(PROSE[:60]) and tomato["chosen"].endswith(f"[{n}].")


def test_keep_rule_helpers():
    assert keep_rules.clean_markup("[5] File recovery\n> [!tip] Files go to .trash [5].") == "Files go to .trash [5]."
    assert keep_rules.clean_markup("## Steps\nOpen settings [1].") == "Steps\nOpen settings [1]."
    assert keep_rules.source_overlap("tomato water twice", PROSE) == 1.0
    assert keep_rules.source_overlap("quantum physics lecture", PROSE) == 0.0
    grounded = keep_rules.grounded_answer("- First item here\n- [[Other note|Second]] item.\n\nA third sentence.", 2)
    assert grounded == "First item here. Second item. A third sentence [2]."
    # documentation is hard-wrapped: a paragraph over several lines is one sentence, not one per line;
    # a heading or a table row is its own; an underscore inside a word is not emphasis
    wrapped = ("## Options\nThe workspaces field lists the folders\nthat are linked into node_modules.\n\n"
               "| name | default |\n|---|---|\n| _force_ | `false` |\n")
    assert keep_rules.plain_prose(wrapped) == ("Options. The workspaces field lists the folders that are linked into "
                                               "node_modules. name, default. force, false.")
