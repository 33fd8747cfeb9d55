"""No route blocks the event loop: an open answer stream keeps flowing while 50 compares run and
save to the preference log (SQLite commits wait for fsync; they belong in worker threads).

Fake backend with parallel slots (generations interleave, as in a server with several), so the
compares really finish and save while the stream is generating: with one slot they would all
wait for the stream's generation to end."""

from __future__ import annotations

import json
import threading
import time

import httpx

STREAM_QUESTION = "Tell me slowly about Project Heron."
TOKEN_DELAY_S = 0.05


def stream_arrivals(api, arrivals: list[float], started: threading.Event) -> None:
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}, timeout=60) as c:
        with c.stream("POST", "/ask/stream", json={"question": STREAM_QUESTION}) as r:
            assert r.status_code == 200
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "token":
                    arrivals.append(time.perf_counter())
                    started.set()
                elif line.startswith("data: ") and event == "error":
                    raise AssertionError(json.loads(line[6:]))


def test_stream_keeps_flowing_while_50_compares_save(api):
    backend = api.backend
    backend.parallel = True
    backend.max_tokens = 60  # 60 tokens, 50 ms apart: a 3 s stream
    backend.token_delay_s = lambda messages: TOKEN_DELAY_S if STREAM_QUESTION in messages[-1]["content"] else 0.0
    gate = api.services.gate
    saved_capacity, gate.capacity = gate.capacity, 60
    codes: list[int] = []
    lock = threading.Lock()
    first_token = threading.Event()

    def one_compare(i: int) -> None:
        first_token.wait(30)
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}, timeout=120) as c:
            r = c.post("/compare", json={"question": f"What did I read in 2026? ({i})"})
        with lock:
            codes.append(r.status_code)

    compares = [threading.Thread(target=one_compare, args=(i,)) for i in range(50)]
    for t in compares:
        t.start()
    arrivals: list[float] = []
    streamer = threading.Thread(target=stream_arrivals, args=(api, arrivals, first_token))
    try:
        streamer.start()  # the compares start at its first token
        streamer.join(60)
        for t in compares:
            t.join(120)
    finally:
        gate.capacity = saved_capacity
    assert codes.count(200) == 50, codes
    assert len(arrivals) >= 50
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # tokens are produced every 50 ms; a loop stalled by SQLite would deliver them in bursts
    assert max(gaps) < TOKEN_DELAY_S + 0.25, f"longest gap {max(gaps):.3f}s"
