"""Feedback over the real HTTP API (fake backend): thumbs, corrections, comparisons, retries that
change nothing, and storage trouble answered as 503 so clients retry."""

from __future__ import annotations

import sqlite3
import uuid

from conftest import record_response


def make_response(api, question="How often do I water tomatoes?", answer="Every day."):
    return record_response(api.runtime.log, question, answer)


def test_thumbs_up_is_recorded_once_on_retry(api):
    rid = make_response(api)
    key = uuid.uuid4().hex
    first = api.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    retry = api.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()
    assert api.runtime.log.get_response(rid) is not None
    unrated = {r["id"] for r in api.http.get("/responses", params={"unrated": True}).json()["responses"]}
    assert rid not in unrated  # no longer in the rating queue


def test_idempotency_key_header_works_too(api):
    rid = make_response(api)
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    a = api.http.post("/feedback", json={"response_id": rid, "rating": -1}, headers=headers).json()
    b = api.http.post("/feedback", json={"response_id": rid, "rating": -1}, headers=headers).json()
    assert a["rating"]["id"] == b["rating"]["id"]


def test_unknown_ids_are_404_and_bad_values_422(api):
    r = api.http.post("/feedback", json={"response_id": "r_nope", "rating": 1})
    assert r.status_code == 404 and "r_nope" in r.json()["error"]
    rid = make_response(api)
    assert api.http.post("/feedback", json={"response_id": rid, "rating": 5}).status_code == 422
    r = api.http.post("/feedback", json={"response_id": rid})
    assert r.status_code == 422 and "rating" in r.json()["error"]
    assert api.http.post("/compare/c_nope/choice", json={"choice": "A"}).status_code == 404
    assert api.http.post("/ratings/rt_nope/undo").status_code == 404


def test_correction_becomes_a_pair(api):
    rid = make_response(api, "What is Gerald?", "A dog.")
    before = api.http.get("/preferences/stats").json()["pairs"]["correction"]
    r = api.http.post("/feedback", json={"response_id": rid, "correction": "Gerald is my sourdough starter."})
    assert r.status_code == 200 and r.json()["correction"]["text"].startswith("Gerald")
    assert api.http.get("/preferences/stats").json()["pairs"]["correction"] == before + 1
    pair = next(p for p in api.runtime.log.pairs() if p["origin_id"] == r.json()["correction"]["id"])
    assert pair["rejected"] == "A dog."


def test_up_and_down_on_same_prompt_pair_and_undo_removes_it(api):
    q = f"Which shoes do I run in? {uuid.uuid4().hex}"
    good, bad = make_response(api, q, "Pegasus 41 [1]."), make_response(api, q, "Sandals.")
    before = api.http.get("/preferences/stats").json()["pairs"]["rating"]
    api.http.post("/feedback", json={"response_id": good, "rating": 1})
    down = api.http.post("/feedback", json={"response_id": bad, "rating": -1}).json()["rating"]
    assert api.http.get("/preferences/stats").json()["pairs"]["rating"] == before + 1
    undone = api.http.post(f"/ratings/{down['id']}/undo")
    assert undone.status_code == 200 and undone.json()["undone"] is True
    assert api.http.get("/preferences/stats").json()["pairs"]["rating"] == before


def test_compare_two_candidates_then_choose(api):
    r = api.http.post("/compare", json={"question": "What should I do when replication lag alerts fire?"})
    assert r.status_code == 200
    body = r.json()
    a, b = body["a"], body["b"]
    assert a["response_id"] != b["response_id"] and a["answer"] != b["answer"]
    pending = api.http.get("/compare/pending").json()["comparisons"]
    assert body["comparison_id"] in {c["id"] for c in pending}
    assert api.http.post(f"/compare/{body['comparison_id']}/choice", json={"choice": "C"}).status_code == 422
    before = api.http.get("/preferences/stats").json()["pairs"]["comparison"]
    chosen = api.http.post(f"/compare/{body['comparison_id']}/choice", json={"choice": "B"})
    assert chosen.status_code == 200 and chosen.json()["choice"] == "B"
    assert api.http.get("/preferences/stats").json()["pairs"]["comparison"] == before + 1
    assert body["comparison_id"] not in {c["id"] for c in api.http.get("/compare/pending").json()["comparisons"]}


def test_a_late_retry_cannot_undo_a_newer_choice(api):
    cid = api.http.post("/compare", json={"question": "Who is Priya?"}).json()["comparison_id"]
    first = api.http.post(f"/compare/{cid}/choice", json={"choice": "A", "idempotency_key": "k1-" + cid})
    api.http.post(f"/compare/{cid}/choice", json={"choice": "B", "idempotency_key": "k2-" + cid})
    retry = api.http.post(f"/compare/{cid}/choice", json={"choice": "A", "idempotency_key": "k1-" + cid})
    assert retry.status_code == 200 and retry.json() == first.json()  # the original result...
    assert api.runtime.log.get_comparison(cid)["choice"] == "B"  # ...and the newer decision stands
    (pair,) = [p for p in api.runtime.log.pairs() if p["origin_id"] == cid]
    assert pair["chosen"] == api.runtime.log.get_comparison(cid)["answer_b"]


def test_every_write_route_records_a_key_once(api):
    log = api.runtime.log
    rid = make_response(api, f"q {uuid.uuid4().hex}", "a")
    rating = api.http.post("/feedback", json={"response_id": rid, "rating": 1}).json()["rating"]
    undo = {"Idempotency-Key": uuid.uuid4().hex}
    assert api.http.post(f"/ratings/{rating['id']}/undo", headers=undo).json()["undone"] is True
    again = api.http.post("/feedback", json={"response_id": rid, "rating": 1}).json()["rating"]
    assert again["id"] != rating["id"] and not again["undone"]  # rated anew after the undo
    replay = api.http.post(f"/ratings/{rating['id']}/undo", headers=undo)
    assert replay.status_code == 200 and log.get_rating(again["id"])["undone"] is False

    key = uuid.uuid4().hex
    generations = api.backend.generations
    one = api.http.post("/compare", json={"question": "What is Project Heron?", "idempotency_key": key}).json()
    two = api.http.post("/compare", json={"question": "What is Project Heron?", "idempotency_key": key}).json()
    assert one == two and api.backend.generations == generations + 2  # no second generation
    assert [c["id"] for c in log.pending_comparisons(200)].count(one["comparison_id"]) == 1


def test_discarded_compare_candidates_are_not_rated_or_counted(api):
    log = api.runtime.log
    stats_before = log.stats()["responses"]
    api.backend.one_answer = True  # every retry of the compare loop gives the same text
    body = api.http.post("/compare", json={"question": "What is my dinghy called?"}).json()
    shown = {body["a"]["response_id"], body["b"]["response_id"]}
    question = "What is my dinghy called?"
    made = set(sqlite_rows(log.path, "SELECT id FROM responses WHERE source = 'compare' AND question = ?", question))
    thrown_away = made - shown
    assert len(thrown_away) >= 1  # the loop did throw candidates away
    listed = {r["id"] for r in api.http.get("/responses", params={"limit": 500}).json()["responses"]}
    assert not thrown_away & (listed | unrated_ids(api))
    assert log.stats()["responses"] == stats_before + 2


def sqlite_rows(path, sql, *params):
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_locked_preference_log_is_503_with_retry_after_then_the_retry_lands(api):
    rid = make_response(api)
    key = uuid.uuid4().hex
    blocker = sqlite3.connect(api.runtime.log.path, isolation_level=None, timeout=1)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        r = api.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1 and "locked" in r.json()["error"]
    assert rid in unrated_ids(api)  # nothing half-saved
    retry = api.http.post("/feedback", json={"response_id": rid, "rating": 1, "idempotency_key": key})
    assert retry.status_code == 200 and rid not in unrated_ids(api)


def unrated_ids(api) -> set[str]:
    return {r["id"] for r in api.http.get("/responses", params={"unrated": True, "limit": 500}).json()["responses"]}


def test_unexpected_error_is_500_with_an_id_that_is_in_the_log(api, caplog):
    api.backend.fail_next = KeyError("a bug in the model wrapper")
    with caplog.at_level("ERROR", logger="vault_agent.server.app"):
        r = api.http.post("/ask", json={"question": "Who is Priya?"})
    assert r.status_code == 500
    body = r.json()
    assert body["error_id"] in body["error"] and "a bug" not in body["error"]  # no internals leak
    logged = [rec for rec in caplog.records if body["error_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is KeyError  # with the traceback
    assert api.http.post("/ask", json={"question": "Who is Priya?"}).status_code == 200  # and it goes on
