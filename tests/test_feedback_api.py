"""Feedback over the real HTTP API: thumbs, corrections, comparisons, idempotent retries."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.slow


def make_response(daemon, question="How often do I water tomatoes?", answer="Every day."):
    msgs = [{"role": "system", "content": "rules"}, {"role": "user", "content": question}]
    return daemon.services.log.record_response(question=question, prompt=question, messages=msgs, answer=answer,
                                               retrieved=[], citations=[], model_id="test", adapter_version=None,
                                               timings={})


def test_thumbs_up_is_recorded_once_on_retry(daemon):
    rid = make_response(daemon)
    key = uuid.uuid4().hex
    first = daemon.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    retry = daemon.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    assert first.status_code == retry.status_code == 200
    assert first.json()["rating"]["id"] == retry.json()["rating"]["id"]
    rated = [r for r in daemon.services.log.recent_responses(500) if r["id"] == rid]
    assert rated  # still listed among all responses...
    unrated = {r["id"] for r in daemon.http.get("/responses", params={"unrated": True}).json()["responses"]}
    assert rid not in unrated  # ...but no longer in the rating queue


def test_idempotency_key_header_works_too(daemon):
    rid = make_response(daemon)
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    a = daemon.http.post("/feedback", json={"response_id": rid, "rating": -1}, headers=headers).json()
    b = daemon.http.post("/feedback", json={"response_id": rid, "rating": -1}, headers=headers).json()
    assert a["rating"]["id"] == b["rating"]["id"]


def test_unknown_ids_are_404_and_bad_values_422(daemon):
    r = daemon.http.post("/feedback", json={"response_id": "r_nope", "rating": 1})
    assert r.status_code == 404 and "r_nope" in r.json()["error"]
    rid = make_response(daemon)
    assert daemon.http.post("/feedback", json={"response_id": rid, "rating": 5}).status_code == 422
    r = daemon.http.post("/feedback", json={"response_id": rid})
    assert r.status_code == 422 and "rating" in r.json()["error"]
    assert daemon.http.post("/compare/c_nope/choice", json={"choice": "A"}).status_code == 404
    assert daemon.http.post("/ratings/rt_nope/undo").status_code == 404


def test_correction_becomes_a_pair(daemon):
    rid = make_response(daemon, "What is Gerald?", "A dog.")
    before = daemon.http.get("/preferences/stats").json()["pairs"]["correction"]
    r = daemon.http.post("/feedback", json={"response_id": rid, "correction": "Gerald is my sourdough starter."})
    assert r.status_code == 200 and r.json()["correction"]["text"].startswith("Gerald")
    stats = daemon.http.get("/preferences/stats").json()
    assert stats["pairs"]["correction"] == before + 1
    pair = next(p for p in daemon.services.log.pairs() if p["source"] == "correction" and p["chosen"].startswith("Gerald"))
    assert pair["rejected"] == "A dog."


def test_up_and_down_on_same_prompt_pair_and_undo_removes_it(daemon):
    q = "Which shoes do I run in?"
    good, bad = make_response(daemon, q, "Pegasus 41 [1]."), make_response(daemon, q, "Sandals.")
    before = daemon.http.get("/preferences/stats").json()["pairs"]["rating"]
    daemon.http.post("/feedback", json={"response_id": good, "rating": 1})
    down = daemon.http.post("/feedback", json={"response_id": bad, "rating": -1}).json()["rating"]
    assert daemon.http.get("/preferences/stats").json()["pairs"]["rating"] == before + 1
    undone = daemon.http.post(f"/ratings/{down['id']}/undo")
    assert undone.status_code == 200 and undone.json()["undone"] is True
    assert daemon.http.get("/preferences/stats").json()["pairs"]["rating"] == before


def test_compare_two_candidates_then_choose(daemon):
    r = daemon.http.post("/compare", json={"question": "What should I do when replication lag alerts fire?"})
    assert r.status_code == 200
    body = r.json()
    a, b = body["a"], body["b"]
    assert a["response_id"] != b["response_id"] and a["answer"] and b["answer"]
    pending = daemon.http.get("/compare/pending").json()["comparisons"]
    assert body["comparison_id"] in {c["id"] for c in pending}
    assert daemon.http.post(f"/compare/{body['comparison_id']}/choice", json={"choice": "C"}).status_code == 422
    before = daemon.http.get("/preferences/stats").json()["pairs"]["comparison"]
    chosen = daemon.http.post(f"/compare/{body['comparison_id']}/choice", json={"choice": "B"})
    assert chosen.status_code == 200 and chosen.json()["choice"] == "B"
    assert daemon.http.get("/preferences/stats").json()["pairs"]["comparison"] == before + (a["answer"] != b["answer"])
    assert body["comparison_id"] not in {c["id"] for c in daemon.http.get("/compare/pending").json()["comparisons"]}
