"""The rating app: a queue of unrated answers and pending comparisons, rated with single keys.

Every API call runs in a worker thread, so the screen never waits on the daemon. User actions go
into an outbox that one worker sends in order, each with its own idempotency key; when the daemon
is down (or restarting) the action stays in the outbox, a banner says so, and the app retries
until the daemon answers, then re-sends with the same key (recorded once).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from vault_agent.client import ApiClient, ApiError, DaemonDown

from . import model
from .model import Action, Item, default_client_factory, default_target
from .screens import CorrectionScreen, HelpScreen, ItemView

ClientFactory = Callable[[], "ApiClient | None"]


class RatingApp(App[None]):
    TITLE = "vault-agent ratings"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    BINDINGS = [
        Binding("a", "choose('A')", "A"),
        Binding("b", "choose('B')", "B"),
        Binding("t", "choose('tie')", "tie"),
        Binding("plus,equals_sign", "rate(1)", "👍", key_display="+"),
        Binding("minus,underscore", "rate(-1)", "👎", key_display="-"),
        Binding("e", "correct", "correct"),
        Binding("s", "skip", "skip"),
        Binding("u", "undo", "undo"),
        Binding("r", "reload", "reload"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, client_factory: ClientFactory | None = None, retry_seconds: float = 2.0,
                 idle_refresh_seconds: float = 15.0):
        super().__init__()
        self.client_factory = client_factory or default_client_factory
        self.retry_seconds = retry_seconds
        self.idle_refresh_seconds = idle_refresh_seconds
        self.client: ApiClient | None = None
        self.online = False
        self.loaded = False  # a queue has been loaded at least once
        self.queue: list[Item] = []
        self.lookup: dict[str, dict] = {}  # response id -> response, for comparisons' citations
        self.stats: dict[str, Any] = {}
        self.handled: set[str] = set()  # ids acted on in this session
        self.undo_stack: list[Action] = []
        self.outbox: deque[Action] = deque()
        self.actions: list[Action] = []  # every action submitted this session, in order
        self.banner_text = ""
        self._lock = threading.Lock()
        self._loading = self._reload_wanted = self._draining = False
        self._clients: list[ApiClient] = []

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="counts")
        yield Static("", id="banner")
        yield ItemView(id="item")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#banner").display = False
        self._retry_timer = self.set_interval(self.retry_seconds, self._retry, pause=True)
        self.set_interval(self.idle_refresh_seconds, self._idle_refresh)
        self._update_counts()
        self.load()

    def on_unmount(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    @property
    def current(self) -> Item | None:
        return self.queue[0] if self.queue else None

    def _render_item(self) -> None:
        view = self.query_one(ItemView)
        if not self.loaded:
            view.show_message("Waiting for the daemon…" if self.banner_text else "Connecting to the daemon…")
        else:
            view.show(self.current, self.lookup, f"1 of {len(self.queue)} · " if self.queue else "")
        self._update_counts()

    def _update_counts(self) -> None:
        st = self.stats
        parts = [f"rated today: {st.get('rated_today', '?')}", f"pairs ready: {st.get('pairs_untrained', '?')}",
                 f"queue: {len(self.queue)}"]
        if self.outbox:
            parts.append(f"unsent: {len(self.outbox)}")
        state = (f"● {self.client.base_url}" if self.online and self.client else "○ offline")
        self.query_one("#counts", Static).update(Text(" · ".join(parts) + f"    {state}"))

    def _set_banner(self, text: str) -> None:
        self.banner_text = text
        banner = self.query_one("#banner", Static)
        banner.update(Text(text))
        banner.display = bool(text)

    def _post(self, fn: Callable, *args: Any) -> None:
        """Run fn on the UI thread; quietly nothing when the app has already gone."""
        try:
            self.call_from_thread(fn, *args)
        except RuntimeError:
            pass

    # -- loading and reconnecting -----------------------------------------------------------

    def load(self) -> None:
        if self._loading:
            self._reload_wanted = True
            return
        self._loading = True
        self.run_worker(self._load_thread, thread=True, group="load", exit_on_error=False)

    def _load_thread(self) -> None:
        client = self.client
        try:
            if client is None:
                client = self.client_factory()
                if client is None:
                    reason = (default_target() if self.client_factory is default_client_factory
                              else "no daemon found")
                    self._post(self._load_failed, None, reason)
                    return
            stats = client.stats()
            comps = client.pending_comparisons(model.COMPARISONS_LIMIT)
            resps = client.responses(unrated=True, limit=model.RESPONSES_LIMIT)
        except (DaemonDown, ApiError) as e:
            self._post(self._load_failed, client, str(e))
        except Exception as e:  # noqa: BLE001 - a bad factory or reply must not kill the app
            self._post(self._load_failed, client, f"could not load the queue ({type(e).__name__}: {e})")
        else:
            self._post(self._loaded, client, stats, comps, resps)

    def _loaded(self, client: ApiClient, stats: dict, comps: list, resps: list) -> None:
        self._loading = False
        self._use_client(client)
        self.online, self.loaded, self.stats = True, True, stats
        self._retry_timer.pause()
        self._set_banner("")
        items, self.lookup = model.build_items(comps, resps)
        complete = (len(comps) < model.COMPARISONS_LIMIT and len(resps) < model.RESPONSES_LIMIT
                    and not self.outbox)
        self.queue = model.merge(self.queue, items, self.handled, complete)
        self._render_item()
        self._pump()
        if self._reload_wanted:
            self._reload_wanted = False
            self.load()

    def _load_failed(self, client: ApiClient | None, reason: str) -> None:
        self._loading = self._reload_wanted = False
        if client is not None and client is not self.client and client not in self._clients:
            try:  # made by the factory for this try only; no other worker has it
                client.close()
            except Exception:  # noqa: BLE001
                pass
        self._went_down(reason)

    def _use_client(self, client: ApiClient) -> None:
        if client not in self._clients:
            self._clients.append(client)  # closed on exit; never while a worker may use it
        self.client = client

    def _went_down(self, reason: str) -> None:
        self.online = False
        self.client = None  # the next try asks the factory again: a restarted daemon may move
        self._set_banner(f"⚠ {reason}. Retrying every {self.retry_seconds:g}s (last try "
                         f"{time.strftime('%H:%M:%S')}). Start the daemon with `vault-agent serve`. "
                         "What you rate meanwhile is kept and sent when it is back.")
        self._retry_timer.resume()
        self._render_item()

    def _retry(self) -> None:
        if not self.online:
            self.load()

    def _idle_refresh(self) -> None:
        """Look for new items when the queue is empty; otherwise keep the counts current (and
        notice a daemon that went away while nobody pressed a key)."""
        if self.online and not self.queue:
            self.load()
        elif self.online:
            self._refresh_stats()

    def _refresh_stats(self) -> None:
        def fetch() -> None:
            client = self.client
            try:
                if client is not None:
                    self._post(self._got_stats, client.stats())
            except DaemonDown as e:
                self._post(self._stats_down, client, str(e))
            except Exception:  # noqa: BLE001 - counts are best effort; the outbox reports failures
                pass
        self.run_worker(fetch, thread=True, group="stats", exit_on_error=False)

    def _stats_down(self, client: ApiClient, reason: str) -> None:
        if self.online and client is self.client:
            self._went_down(reason)

    def _got_stats(self, stats: dict) -> None:
        self.stats = stats
        self._update_counts()

    # -- the outbox -------------------------------------------------------------------------

    def _submit(self, action: Action, advance: bool = True) -> None:
        self.actions.append(action)
        with self._lock:
            self.outbox.append(action)
        if advance and self.queue and self.queue[0] is action.item:
            self.handled.add(action.item.id)
            self.queue.pop(0)
        self._render_item()
        self._pump()

    def _pump(self) -> None:
        if self._draining or not self.outbox or not self.online:
            return
        self._draining = True
        self.run_worker(self._drain_thread, thread=True, group="outbox", exit_on_error=False)

    def _drain_thread(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self.outbox:
                        return
                    action = self.outbox[0]
                    action.state = "sending"
                client = self.client
                try:
                    if client is None:
                        raise DaemonDown("lost the connection to the daemon")
                    result = model.send(client, action)
                except DaemonDown as e:
                    action.state = "queued"
                    self._post(self._went_down, str(e))
                    return
                except ApiError as e:
                    if model.is_transient(e):
                        action.state = "queued"
                        self._post(self._went_down, f"the daemon is not ready ({e})")
                        return
                    self._finish(action, "failed", e)
                except Exception as e:  # noqa: BLE001 - report it, keep the app alive
                    self._finish(action, "failed", e)
                else:
                    action.result = result
                    self._finish(action, "done", None)
        finally:
            self._post(self._drain_finished)

    def _finish(self, action: Action, state: str, error: Exception | None) -> None:
        with self._lock:
            action.state = state
            if self.outbox and self.outbox[0] is action:
                self.outbox.popleft()
        self._post(self._action_finished, action, error)

    def _drain_finished(self) -> None:
        self._draining = False
        self._update_counts()
        self._pump()

    def _action_finished(self, action: Action, error: Exception | None) -> None:
        if error is not None:
            self.notify(f"{action.describe()} not saved: {error}", severity="warning", markup=False)
        self._refresh_stats()
        self._update_counts()

    # -- keys -------------------------------------------------------------------------------

    def _need(self, kind: str, what: str) -> Item | None:
        item = self.current
        if item is None:
            self.notify("Nothing to rate right now." if self.loaded else "The queue is not loaded yet.",
                        timeout=3)
            return None
        if item.kind != kind:
            other = "a / b / t" if item.kind == "comparison" else "+ / - (or e to correct)"
            self.notify(f"{what} applies to a {kind}; this is a {item.kind}: use {other}", timeout=3)
            return None
        return item

    def action_rate(self, value: int) -> None:
        if item := self._need("response", "+ / -"):
            action = Action("rate", item, value)
            self.undo_stack.append(action)
            self._submit(action)

    def action_choose(self, choice: str) -> None:
        if item := self._need("comparison", "a / b / t"):
            self._submit(Action("choose", item, choice))

    def action_correct(self) -> None:
        item = self._need("response", "e")
        if item is None:
            return
        original = item.data.get("answer", "")

        def done(text: str | None) -> None:
            if text is None:
                return
            if not text.strip() or text.strip() == original.strip():
                self.notify("Correction unchanged, nothing saved.", timeout=3)
                return
            if self.current is item:
                self._submit(Action("correct", item, text))

        self.push_screen(CorrectionScreen(item.question, original), done)

    def action_skip(self) -> None:
        if len(self.queue) < 2:
            self.notify("Nothing else in the queue." if self.queue else "Nothing to skip.", timeout=3)
            return
        self.queue.append(self.queue.pop(0))
        self._render_item()

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("Nothing to undo (u undoes 👍/👎 ratings from this session).", timeout=3)
            return
        rated = self.undo_stack.pop()
        with self._lock:
            unsent = rated.state == "queued" and rated in self.outbox
            if unsent:
                self.outbox.remove(rated)
                rated.state = "cancelled"
        if rated.state == "failed":
            self.notify("That rating was never saved; nothing to undo.", timeout=3)
            return
        if not unsent:
            self._submit(Action("undo", rated.item, target=rated), advance=False)
        self.handled.discard(rated.item.id)
        self.queue = [rated.item] + [i for i in self.queue if i.id != rated.item.id]
        self._render_item()
        self.notify(f"Undid {rated.describe()}.", timeout=3)

    def action_reload(self) -> None:
        self.load()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # item keys are for the main screen only (a modal on top has its own keys)
        if action in {"choose", "rate", "correct", "skip", "undo", "reload", "help"}:
            return self.screen is self.screen_stack[0]
        return True


def run() -> None:
    RatingApp().run()
