"""Parsing: frontmatter, heading paths, bounded chunks, wikilinks, tags and embeds."""

from vault_agent.vault.notes import parse_note, split_bounded

NOTE = """---
tags: [garden, "veg/tomato"]
aliases: Tomato plan
created: 2026-03-14
---
# Garden

Intro with a link to [[Compost]] and #seasonal tag.

## Tomatoes

See [[Projects/Garden Plan#Beds|the beds]] and ![[tomato.png]].

### Watering

Water deeply twice a week. #garden/watering

```python
# this is #notatag and [[notalink]]
```

Inline `#alsonotatag` code.

## Peppers

![[Seeds#Peppers]]
"""


def test_frontmatter_tags_and_aliases():
    note = parse_note("Garden/Garden.md", NOTE)
    assert note.title == "Garden"
    assert note.frontmatter["created"].isoformat() == "2026-03-14"
    assert note.aliases == ["Tomato plan"]
    assert note.tags[:2] == ["garden", "veg/tomato"]
    assert "seasonal" in note.tags and "garden/watering" in note.tags


def test_code_is_not_parsed_for_links_or_tags():
    note = parse_note("Garden.md", NOTE)
    assert "notatag" not in note.tags and "alsonotatag" not in note.tags
    assert "notalink" not in {l.target for l in note.links}


def test_wikilinks_with_heading_alias_and_embeds():
    note = parse_note("Garden.md", NOTE)
    by_target = {l.target: l for l in note.links}
    assert by_target["Compost"].heading is None and not by_target["Compost"].embed
    plan = by_target["Projects/Garden Plan"]
    assert (plan.heading, plan.alias, plan.embed) == ("Beds", "the beds", False)
    assert by_target["tomato.png"].embed
    seeds = by_target["Seeds"]
    assert seeds.embed and seeds.heading == "Peppers"


def test_chunks_follow_heading_hierarchy():
    note = parse_note("Garden.md", NOTE)
    paths = [c.heading_path for c in note.chunks]
    assert paths == ["Garden", "Garden > Tomatoes", "Garden > Tomatoes > Watering", "Garden > Peppers"]
    watering = note.chunks[2]
    assert watering.anchor == "Watering"
    assert "twice a week" in watering.text
    assert "Peppers" not in watering.text  # sections don't bleed into each other


def test_frontmatter_never_lands_in_a_chunk():
    note = parse_note("Garden.md", NOTE)
    assert all("aliases:" not in c.text for c in note.chunks)


def test_long_sections_split_with_bounded_size():
    para = "Sentence about soil and compost. " * 20
    text = "# Big\n\n" + "\n\n".join(para for _ in range(30))
    note = parse_note("Big.md", text, max_chunk_chars=500)
    assert len(note.chunks) > 10
    assert all(len(c.text) <= 500 for c in note.chunks)
    assert all(c.heading_path == "Big" for c in note.chunks)
    joined = " ".join(c.text for c in note.chunks)
    assert joined.count("Sentence about soil") == 600  # nothing lost or duplicated


def test_split_handles_text_without_any_break():
    pieces = split_bounded("x" * 2500, 1000)
    assert [len(p) for p in pieces] == [1000, 1000, 500]


def test_empty_and_frontmatter_only_notes_have_no_chunks():
    assert parse_note("Empty.md", "").chunks == []
    only_fm = parse_note("Meta.md", "---\ntags: [a]\n---\n")
    assert only_fm.chunks == [] and only_fm.tags == ["a"]


def test_bad_frontmatter_is_reported_not_fatal():
    note = parse_note("Bad.md", "---\ntags: [unclosed\n---\n# Title\n\nBody text here.\n")
    assert note.frontmatter_error and "YAML" in note.frontmatter_error
    assert note.chunks and "Body text" in note.chunks[0].text


def test_text_before_first_heading_is_its_own_chunk():
    note = parse_note("N.md", "Loose intro line.\n\n# Heading\n\nBody.\n")
    assert [c.heading_path for c in note.chunks] == ["", "Heading"]
