"""How an answer's index state reads to a user; one wording for the CLI and the TUI."""

from __future__ import annotations


def syncing_note(state: dict | None) -> str | None:
    """A warning when the answer was made before the index held the whole vault, else None."""
    if not state or state.get("state") != "syncing":
        return None
    return (f"answered while the index was still syncing ({state.get('notes_indexed', '?')}/"
            f"{state.get('notes_total', '?')} notes): it may have missed notes")
