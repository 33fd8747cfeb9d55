"""The Textual rating app, driven with Pilot against a real daemon (real API, real preference log,
the hashing test embedder) whose chat model is the fake backend. Every test makes its own items, so the
order the tests run in does not matter."""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid

from pathlib import Path

import pytest

from conftest import record_response, serve_fake_daemon
from vault_agent.client import ApiClient

from tui.app import RatingApp  # noqa: E402
from tui.screens import CorrectionScreen, HelpScreen  # noqa: E402

SIZE = (120, 40)


class App(RatingApp):
    """The real app, keeping the notifications it shows (what a user reads in the toasts)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes: list[str] = []

    def notify(self, message, *args, **kwargs):
        self.notes.append(str(message))
        return super().notify(message, *args, **kwargs)


@pytest.fixture(scope="module")
def fake_daemon(tmp_path_factory, embedder):
    """A daemon of this module's own: the app pages through its whole queue, which would otherwise hold
    every answer the other modules' tests left in the shared one."""
    yield from serve_fake_daemon(tmp_path_factory, embedder)


@pytest.fixture
def seeded(api):
    """This test's own answers and comparison (unique questions, made without a model)."""
    log, tag = api.runtime.log, uuid.uuid4().hex[:8]

    def answer(question: str) -> str:
        return record_response(log, f"{question} ({tag})", f"An answer about {question.lower()}")

    ids = {
        "rate": answer("What do I feed my sourdough starter?"),
        "undo": answer("What is my dinghy called?"),
        "correct": answer("Who is Priya?"),
        "resend": answer("What did I read in 2026?"),
    }
    r = api.http.post("/compare", json={"question": f"What is Project Heron? ({tag})"})
    assert r.status_code == 200, r.text
    ids["comparison"] = r.json()["comparison_id"]
    ids["compare_responses"] = (r.json()["a"]["response_id"], r.json()["b"]["response_id"])
    return ids


def real(daemon):
    return lambda: ApiClient(daemon.url, daemon.token, timeout=30)


@pytest.fixture
def dead_url():
    """A loopback URL where nothing answers: the port stays bound (by us, never listening) for the
    whole test, so no other process can take it and answer meanwhile; connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


async def until(pilot, cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what} (banner: {pilot.app.banner_text!r})"
        await pilot.pause(0.05)


async def goto(app, pilot, item_id: str) -> None:
    """Skip until the item is on screen."""
    await until(pilot, lambda: app.loaded and app.current is not None, "the queue to load")
    for _ in range(len(app.queue)):
        if app.current.id == item_id:
            return
        await pilot.press("s")
    assert app.current.id == item_id, f"{item_id} is not in the queue"


def shown_text(app) -> str:
    return " ".join(str(w.render()) for w in app.screen.query("Static") if w.display)


@pytest.mark.asyncio
async def test_queue_shows_comparisons_first_with_counts_and_citations(api, seeded, tmp_path):
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and "cited notes:" in shown_text(app), "the first item to show")
        assert app.current.kind == "comparison"  # pending comparisons come first
        ids = [i.id for i in app.queue]
        for key in ("rate", "undo", "correct", "resend", "comparison"):
            assert seeded[key] in ids
        # the comparison's two answers are shown as the comparison, not as single answers
        assert not set(seeded["compare_responses"]) & set(ids)
        counts = str(app.query_one("#counts").render())
        assert "rated today: " in counts and "pairs ready: " in counts and f"queue: {len(app.queue)}" in counts
        text = shown_text(app)
        assert "Project Heron" in text
        assert "cited notes:" in text and "[[" in text
        assert not app.query_one("#banner").display
        shot = Path(app.save_screenshot(path=str(tmp_path), filename="tui.svg")).read_text()
        assert shot.startswith("<svg") and "Heron" in shot and "rated&#160;today" in shot


@pytest.mark.asyncio
async def test_skip_moves_to_the_next_item(api, seeded):
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the queue to load")
        first, second = app.queue[0].id, app.queue[1].id
        await pilot.press("s")
        assert app.current.id == second
        assert app.queue[-1].id == first and app.actions == []  # skipping sends nothing


@pytest.mark.asyncio
async def test_help_opens_and_closes(api, seeded):
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        assert "undo" in shown_text(app)
        await pilot.press("a")  # item keys do nothing while help is open
        assert app.actions == []
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help to close")


@pytest.mark.asyncio
async def test_keys_that_do_not_apply_only_notify(api, seeded):
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["comparison"])
        await pilot.press("plus", "minus", "e")
        assert app.current.id == seeded["comparison"] and app.actions == []
        assert not isinstance(app.screen, CorrectionScreen)
        assert sum("applies to a response" in n for n in app.notes) == 3
        await goto(app, pilot, seeded["rate"])
        await pilot.press("a", "t")
        assert app.current.id == seeded["rate"] and app.actions == []
        assert sum("applies to a comparison" in n for n in app.notes) == 2


@pytest.mark.asyncio
async def test_thumbs_up_is_recorded(api, seeded):
    log = api.runtime.log
    ups = log.stats()["ratings"]["up"]
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["rate"])
        await pilot.press("plus")
        assert app.current is None or app.current.id != seeded["rate"]  # advanced at once
        action = app.undo_stack[-1]
        await until(pilot, lambda: action.state == "done", "the rating to be sent")
        rating = log.get_rating(action.result["rating"]["id"])
        assert rating["response_id"] == seeded["rate"] and rating["value"] == 1 and not rating["undone"]
        assert log.stats()["ratings"]["up"] == ups + 1
        await until(pilot, lambda: app.stats.get("rated_today", 0) >= 1, "the counts to update")


@pytest.mark.asyncio
async def test_undo_takes_back_the_last_rating(api, seeded):
    log = api.runtime.log
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["undo"])
        await pilot.press("minus")
        rated = app.undo_stack[-1]
        await until(pilot, lambda: rated.state == "done", "the rating to be sent")
        rating_id = rated.result["rating"]["id"]
        assert log.get_rating(rating_id)["value"] == -1
        await pilot.press("u")
        assert app.current.id == seeded["undo"]  # back at the front of the queue
        await until(pilot, lambda: log.get_rating(rating_id)["undone"], "the rating to be undone")
        await until(pilot, lambda: not app.outbox, "the outbox to empty")
        assert seeded["undo"] in {r["id"] for r in log.recent_responses(200, unrated=True)}


@pytest.mark.asyncio
async def test_choosing_a_decides_the_comparison(api, seeded):
    log = api.runtime.log
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["comparison"])
        await pilot.press("a")
        assert app.current.id != seeded["comparison"]
        await until(pilot, lambda: log.get_comparison(seeded["comparison"])["choice"] == "A", "the choice")
        cmp = log.get_comparison(seeded["comparison"])
        pairs = [p for p in log.pairs() if p["source"] == "comparison"]
        assert any(p["chosen"] == cmp["answer_a"] and p["rejected"] == cmp["answer_b"] for p in pairs)


@pytest.mark.asyncio
async def test_correction_in_the_editor_becomes_a_pair(api, seeded):
    log = api.runtime.log
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["correct"])
        original = app.current.data["answer"]
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, CorrectionScreen), "the editor")
        area = app.screen.query_one("TextArea")
        assert area.text == original  # prefilled with the answer
        area.load_text("Priya is my running coach")
        area.move_cursor(area.document.end)
        await pilot.press(*" [[People/Priya]].")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, CorrectionScreen), "the editor to close")
        want = "Priya is my running coach [[People/Priya]]."
        await until(pilot, lambda: any(p["source"] == "correction" and p["chosen"] == want
                                       for p in log.pairs()), "the correction pair")
        pair = next(p for p in log.pairs() if p["chosen"] == want)
        assert pair["rejected"] == original


@pytest.mark.asyncio
async def test_escape_cancels_the_editor(api, seeded):
    app = App(real(api))
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["resend"])
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, CorrectionScreen), "the editor")
        await pilot.press("x", "escape")
        await until(pilot, lambda: not isinstance(app.screen, CorrectionScreen), "the editor to close")
        assert app.current.id == seeded["resend"] and app.actions == []


@pytest.mark.asyncio
async def test_daemon_down_shows_a_banner_and_keeps_retrying(dead_url):
    url = dead_url
    calls = []

    def factory():
        calls.append(1)
        return ApiClient(url, "token", timeout=5)

    app = App(factory, retry_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner")
        await until(pilot, lambda: banner.display, "the banner")
        text = str(banner.render())
        assert url in text and "not answering" in text and "vault-agent serve" in text and "Retrying" in text
        await until(pilot, lambda: len(calls) >= 3, "retries")
        await pilot.press("a", "plus", "s", "u", "e", "r")  # no item: notes, never a crash
        assert not isinstance(app.screen, CorrectionScreen) and app.actions == []
        assert app.is_running


@pytest.mark.asyncio
async def test_banner_goes_away_when_the_daemon_comes_up(api, seeded, dead_url):
    url = dead_url
    target = {"client": lambda: ApiClient(url, "token", timeout=5)}
    app = App(lambda: target["client"](), retry_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner")
        await until(pilot, lambda: banner.display, "the banner")
        assert not app.loaded
        target["client"] = real(api)  # the daemon "starts"
        await until(pilot, lambda: not banner.display, "the banner to go", timeout=5)
        assert app.loaded and app.online and app.queue


@pytest.mark.asyncio
async def test_rating_during_a_restart_is_sent_once_when_the_daemon_is_back(api, seeded, dead_url):
    log = api.runtime.log
    url = dead_url
    target = {"client": real(api)}
    app = App(lambda: target["client"](), retry_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["resend"])
        # the daemon goes away: requests now fail at the transport level
        target["client"] = lambda: ApiClient(url, "token", timeout=5)
        app.client = target["client"]()
        await pilot.press("plus")
        action = app.undo_stack[-1]
        banner = app.query_one("#banner")
        await until(pilot, lambda: banner.display, "the banner")
        assert action.state == "queued" and list(app.outbox) == [action]
        assert "unsent: 1" in str(app.query_one("#counts").render())
        target["client"] = real(api)  # ... and comes back
        await until(pilot, lambda: action.state == "done", "the rating to be re-sent")
        assert not banner.display
        rating = log.get_rating(action.result["rating"]["id"])
        assert rating["response_id"] == seeded["resend"] and rating["idempotency_key"] == f"{action.key}:rate"
        # re-sending the same action is recorded once
        again = ApiClient(api.url, api.token).rate(seeded["resend"], 1, key=action.key)
        assert again["rating"]["id"] == rating["id"]


@pytest.mark.asyncio
async def test_a_daemon_that_goes_away_while_idle_is_noticed(api, seeded, dead_url):
    url = dead_url
    target = {"client": real(api)}
    app = App(lambda: target["client"](), retry_seconds=0.2, idle_refresh_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded and app.online, "the queue to load")
        banner = app.query_one("#banner")
        assert not banner.display
        target["client"] = lambda: ApiClient(url, "token", timeout=5)
        app.client = target["client"]()  # the daemon stops; nobody presses a key
        await until(pilot, lambda: banner.display, "the banner")
        assert "Waiting" not in shown_text(app)  # the loaded queue stays on screen
        target["client"] = real(api)
        await until(pilot, lambda: not banner.display and app.online, "the daemon to be back")


@pytest.mark.asyncio
async def test_a_locked_preference_log_keeps_the_rating_queued_until_it_lands(api, seeded):
    log = api.runtime.log
    app = App(real(api), retry_seconds=0.2)
    blocker = sqlite3.connect(log.path, isolation_level=None, timeout=1)
    async with app.run_test(size=SIZE) as pilot:
        await goto(app, pilot, seeded["rate"])
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the log: the daemon answers 503
        try:
            await pilot.press("plus")
            action = app.undo_stack[-1]
            banner = app.query_one("#banner")
            await until(pilot, lambda: banner.display, "the banner", timeout=30)
            assert action.state in ("queued", "sending") and action in app.outbox  # kept, not dropped
            assert "locked" in str(banner.render())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await until(pilot, lambda: action.state == "done", "the rating to be re-sent", timeout=30)
        rating = log.get_rating(action.result["rating"]["id"])
        assert rating["response_id"] == seeded["rate"] and rating["value"] == 1
        conn = sqlite3.connect(log.path)
        try:  # sent until it landed, recorded once
            assert conn.execute("SELECT count(*) FROM ratings WHERE response_id = ?", (seeded["rate"],)).fetchone()[0] == 1
        finally:
            conn.close()
