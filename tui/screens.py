"""Widgets and modal screens of the rating app: the item panel, help, and the correction editor."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static, TextArea

from vault_agent.index.state import syncing_note

from .model import Item

EMPTY_TEXT = ("Nothing to rate. Ask something with `vault-agent ask` or in Obsidian.\n"
              "Press r to look again (the queue also refreshes on its own).")

KEYS = [
    ("a / b", "choose answer A or B of a comparison"),
    ("t", "a comparison is a tie"),
    ("+ / -", "thumbs up / thumbs down on an answer"),
    ("e", "write a correction (your better answer): ctrl+s saves, esc cancels"),
    ("s", "skip: move this item to the end of the queue"),
    ("u", "undo the last thumbs rating and bring its answer back"),
    ("r", "reload the queue from the daemon"),
    ("?", "this help"),
    ("q", "quit"),
]


def citations_text(response: dict | None) -> Text:
    """The notes an answer cites, as Obsidian links."""
    if response is None:
        return Text("cited notes: (not available)", style="dim")
    cites = response.get("citations") or []
    out = Text()
    if note := syncing_note((response.get("timings") or {}).get("index_state")):
        out.append(note + "\n", style="yellow")
    if not cites:
        return out.append("cited notes: none", style="dim")
    out.append("cited notes:\n", style="bold")
    for c in cites:
        link = c.get("link") or f"[[{c.get('path', '?')}]]"
        out.append(f"  [{c.get('n', '?')}] ", style="dim")
        out.append(link, style="cyan")
        if c.get("heading"):
            out.append(f"  {c['heading']}", style="dim")
        out.append("\n")
    return out


class Pane(VerticalScroll):
    """One answer with its title and cited notes."""

    def __init__(self, title: str, **kwargs):
        super().__init__(classes="pane", **kwargs)
        self.border_title = title

    def compose(self) -> ComposeResult:
        yield Markdown("", classes="answer")
        yield Static("", classes="cites")

    def show(self, answer: str, response: dict | None) -> None:
        self.query_one(".answer", Markdown).update(answer or "*(empty answer)*")
        self.query_one(".cites", Static).update(citations_text(response))
        self.scroll_home(animate=False)


class ItemView(Vertical):
    """The current item: its question, then one answer or A and B side by side."""

    def compose(self) -> ComposeResult:
        yield Static("", id="kind")
        yield Static("", id="question")
        yield Pane("answer", id="single")
        with Horizontal(id="pair"):
            yield Pane("A", id="pane-a")
            yield Pane("B", id="pane-b")
        yield Static("Connecting to the daemon…", id="empty")

    def _mode(self, mode: str) -> None:
        for wid, on in (("single", mode == "response"), ("pair", mode == "comparison"),
                        ("kind", mode != "empty"), ("question", mode != "empty"),
                        ("empty", mode == "empty")):
            self.query_one(f"#{wid}").display = on

    def show_message(self, message: str) -> None:
        self.query_one("#empty", Static).update(Text(message))
        self._mode("empty")

    def show(self, item: Item | None, lookup: dict[str, dict], position: str = "") -> None:
        if item is None:
            self.show_message(EMPTY_TEXT)
            return
        d = item.data
        self.query_one("#question", Static).update(Text(item.question, style="bold"))
        if item.kind == "comparison":
            kind = "comparison: which answer is better?  a / b / t"
            self.query_one("#pane-a", Pane).show(d.get("answer_a", ""), lookup.get(d.get("response_a")))
            self.query_one("#pane-b", Pane).show(d.get("answer_b", ""), lookup.get(d.get("response_b")))
        else:
            kind = "answer: good or bad?  + / -   (e to correct it)"
            self.query_one("#single", Pane).show(d.get("answer", ""), d)
        when = (d.get("created") or "")[:16].replace("T", " ")
        self.query_one("#kind", Static).update(Text(f"{position}{kind}   {when}", style="dim"))
        self._mode(item.kind)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        text = Text("Keys\n\n", style="bold")
        for key, what in KEYS:
            text.append(f"  {key:<7}", style="bold cyan")
            text.append(f"{what}\n")
        text.append("\nActions taken while the daemon is down are kept and sent when it is back.\n"
                    "Press esc or ? to close.", style="dim")
        with Vertical(id="help-box"):
            yield Static(text, id="help-text")


class CorrectionScreen(ModalScreen[str | None]):
    """Edit the answer into the one you wanted; ctrl+s returns the text, esc returns None."""

    BINDINGS = [Binding("ctrl+s", "save", "save", priority=True),
                Binding("escape", "cancel", "cancel", priority=True)]

    def __init__(self, question: str, answer: str):
        super().__init__()
        self.question, self.answer = question, answer

    def compose(self) -> ComposeResult:
        with Vertical(id="correct-box"):
            yield Static(Text(f"Correct the answer to: {self.question}", style="bold"))
            yield TextArea(self.answer, id="correction", soft_wrap=True)
            yield Static(Text("ctrl+s save · esc cancel", style="dim"))

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)
