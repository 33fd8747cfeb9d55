"""Answers over the real HTTP API: real uvicorn, the bundled embedding and chat models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def stream_events(daemon, question):
    events = []
    with daemon.http.stream("POST", "/ask/stream", json={"question": question}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events


def test_answer_cites_the_note_it_came_from(daemon):
    r = daemon.http.post("/ask", json={"question": "What do I feed my sourdough starter, and how often?"})
    assert r.status_code == 200
    body = r.json()
    assert body["answer"].strip()
    cited = [c["path"] for c in body["citations"]]
    assert "Recipes/Sourdough.md" in cited
    c = next(c for c in body["citations"] if c["path"] == "Recipes/Sourdough.md")
    assert c["link"].startswith("[[Recipes/Sourdough")
    assert c["uri"].startswith("obsidian://open?vault=vault&file=Recipes%2FSourdough.md")
    assert body["response_id"].startswith("r_")
    # the answer was recorded for later feedback
    stored = daemon.runtime.log.get_response(body["response_id"])
    assert stored["answer"] == body["answer"] and stored["model_id"] == body["model"]
    assert stored["retrieved"] and stored["timings"]["generation_ms"] > 0
    # made with the whole vault indexed, and the log keeps that with the answer
    total = len(daemon.runtime.indexer.files.scan()[0])
    assert body["index_state"] == {"state": "ready", "notes_indexed": total, "notes_total": total}
    assert stored["timings"]["index_state"] == body["index_state"]


def test_stream_yields_tokens_then_one_final_event(daemon):
    events = stream_events(daemon, "How much should I water the tomato plants?")
    kinds = [k for k, _ in events]
    assert kinds.count("final") == 1 and kinds[-1] == "final"
    tokens = [d["text"] for k, d in events if k == "token"]
    assert len(tokens) >= 3
    final = events[-1][1]
    assert final["answer"] == "".join(tokens).strip()
    assert final["response_id"] and final["citations"]
    assert any(c["path"] == "Garden/Vegetable Garden.md" for c in final["citations"])


def test_note_edited_while_running_is_used_in_next_answer(daemon):
    note = daemon.vault / "Boats.md"
    note.write_text("# Boats\n\nMy sailing dinghy is called Marigold Seven and is moored at Pier 4.\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        hits = daemon.http.post("/search", json={"query": "sailing dinghy name", "k": 3}).json()["hits"]
        if hits and hits[0]["path"] == "Boats.md":
            break
        time.sleep(0.1)
    body = daemon.http.post("/ask", json={"question": "What is my dinghy called?"}).json()
    assert "Boats.md" in [c["path"] for c in body["citations"]]
    stored = daemon.runtime.log.get_response(body["response_id"])
    assert "Marigold Seven" in stored["prompt"]


def test_concurrent_requests_complete_or_get_503_never_500(daemon):
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one(i):
        with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {daemon.token}"}, timeout=300) as c:
            r = c.post("/ask", json={"question": f"What did I read in 2026? ({i})"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    codes = sorted(r.status_code for r in results)
    assert len(codes) == 8 and set(codes) <= {200, 503}
    assert codes.count(200) >= 3  # the running one plus a queue of 2
    busy = [r for r in results if r.status_code == 503]
    assert all(r.headers.get("retry-after") and "busy" in r.json()["error"] for r in busy)
    assert daemon.http.get("/status").json()["queue"]["running"] == 0


def test_client_disconnect_cancels_generation(daemon):
    before = len(daemon.runtime.log.recent_responses(500))
    with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {daemon.token}"}, timeout=60) as c:
        with c.stream("POST", "/ask/stream", json={"question": "Tell me everything about Project Heron."}) as r:
            for line in r.iter_lines():
                if line.startswith("event: token"):
                    break  # got the first token: hang up
    deadline = time.monotonic() + 10
    while daemon.http.get("/status").json()["queue"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.http.get("/status").json()["queue"]["running"] == 0
    assert len(daemon.runtime.log.recent_responses(500)) == before  # a cancelled answer isn't recorded
    # and the model is free for the next question
    assert daemon.http.post("/ask", json={"question": "Who is Priya?"}).status_code == 200
