"""The served /openapi.json tells the truth: every route is exercised with good and bad requests,
each status it answers is documented for that route, and each JSON body validates against the
documented schema. Request bodies are checked against the schema too: what the server refuses,
the schema refuses (so clients generated from it can't build a refused request)."""

from __future__ import annotations

import sys
import time
import uuid

import httpx
import pytest
from jsonschema import Draft202012Validator

from conftest import record_response, wait_until


@pytest.fixture
def contract(api):
    spec = api.http.get("/openapi.json").json()
    return Contract(api, spec)


class Contract:
    def __init__(self, api, spec):
        self.api, self.spec, self.seen = api, spec, set()

    def _validator(self, schema: dict) -> Draft202012Validator:
        return Draft202012Validator({**schema, "components": self.spec.get("components", {})})

    def request_ok(self, route: str, method: str, body: dict) -> bool:
        schema = self.spec["paths"][route][method]["requestBody"]["content"]["application/json"]["schema"]
        return self._validator(schema).is_valid(body)

    def call(self, method: str, route: str, path: str | None = None, *, token: bool = True, **kwargs) -> httpx.Response:
        client = self.api.http if token else httpx.Client(base_url=self.api.url, timeout=60)
        r = client.request(method.upper(), path or route, **kwargs)
        self.check(method, route, r)
        return r

    def check(self, method: str, route: str, r: httpx.Response) -> None:
        op = self.spec["paths"][route][method]
        documented = op["responses"].get(str(r.status_code))
        assert documented is not None, f"{method.upper()} {route} answered {r.status_code}, not documented"
        self.seen.add((method, route, r.status_code))
        content = documented.get("content", {})
        if r.headers.get("content-type", "").startswith("application/json"):
            assert "application/json" in content, f"{method} {route} {r.status_code}: JSON body not documented"
            errors = list(self._validator(content["application/json"]["schema"]).iter_errors(r.json()))
            assert not errors, f"{method} {route} {r.status_code}: {errors[0].message} in {r.text[:300]}"
        for header in documented.get("headers", {}):
            assert header.lower() in r.headers, f"{method} {route} {r.status_code}: missing {header}"


def test_every_route_answers_as_its_schema_says(api, contract):
    c, log = contract, api.runtime.log
    big = {"query": "x" * (api.runtime.settings.server.max_body_bytes + 10)}
    c.call("get", "/health")
    c.call("get", "/health", headers={"Host": "evil.example"})
    c.call("get", "/status")
    c.call("get", "/status", token=False)
    for route, good, bad in [
        ("/search", {"query": "garden"}, {"query": ""}),
        ("/ask", {"question": "Who is Priya?"}, {"question": "Who?", "k": 0}),
        ("/compare", {"question": "Who is Priya?"}, {}),
    ]:
        assert c.request_ok(route, "post", good) and not c.request_ok(route, "post", bad)
        assert c.call("post", route, json=good).status_code == 200
        assert c.call("post", route, json=bad).status_code == 422
        assert c.call("post", route, json=good, token=False).status_code == 401
        assert c.call("post", route, json=big).status_code == 413
    too_long = {"question": "why " * api.runtime.settings.server.max_question_chars}
    assert c.call("post", "/ask", json=too_long).status_code == 422

    stream = c.call("post", "/ask/stream", json={"question": "Who is Priya?"})
    assert stream.status_code == 200 and "event: final" in stream.text
    assert c.call("post", "/ask/stream", json={"question": ""}).status_code == 422

    queue = api.runtime.queue  # a full queue: 503 with Retry-After, before any stream starts
    saved, queue.capacity = queue.capacity, 0
    try:
        for route in ("/ask", "/ask/stream", "/compare"):
            assert c.call("post", route, json={"question": "Who is Priya?"}).status_code == 503
    finally:
        queue.capacity = saved

    rid = record_response(log, f"q {uuid.uuid4().hex}", "a")
    neither = {"response_id": rid}
    assert not c.request_ok("/feedback", "post", neither)  # the schema refuses it too
    assert not c.request_ok("/feedback", "post", {"response_id": rid, "rating": None, "correction": None})
    assert c.request_ok("/feedback", "post", {"response_id": rid, "correction": "better"})
    assert c.call("post", "/feedback", json=neither).status_code == 422
    assert c.call("post", "/feedback", json={"response_id": "r_nope", "rating": 1}).status_code == 404
    rating = c.call("post", "/feedback", json={"response_id": rid, "rating": 1}).json()["rating"]
    assert c.call("post", "/ratings/{rating_id}/undo", f"/ratings/{rating['id']}/undo").status_code == 200
    assert c.call("post", "/ratings/{rating_id}/undo", "/ratings/rt_nope/undo").status_code == 404

    cid = c.call("post", "/compare", json={"question": "What is Project Heron?"}).json()["comparison_id"]
    choice = "/compare/{comparison_id}/choice"
    assert c.call("post", choice, f"/compare/{cid}/choice", json={"choice": "C"}).status_code == 422
    assert c.call("post", choice, "/compare/c_nope/choice", json={"choice": "A"}).status_code == 404
    assert c.call("post", choice, f"/compare/{cid}/choice", json={"choice": "A"}).status_code == 200

    for route, bad in (("/compare/pending", {"limit": 0}), ("/responses", {"limit": 100000})):
        assert c.call("get", route).status_code == 200
        assert c.call("get", route, params=bad).status_code == 422
    assert c.call("get", "/preferences/stats").status_code == 200

    # a reconcile on demand (what `vault-agent index` asks of a running daemon)
    assert c.call("post", "/index", json={"full": False}).json()["report"]["indexed"] == 0
    assert c.call("post", "/index", json={"full": "sometimes"}).status_code == 422

    # adapters (this daemon has no versions) and training
    assert c.call("get", "/adapters").json()["versions"] == []
    assert c.call("post", "/adapters/{version}/activate", "/adapters/v0099/activate").status_code == 404
    assert c.call("post", "/adapters/rollback").json()["active"] is None
    assert c.call("post", "/adapters/off").json()["active"] is None
    assert c.call("get", "/adapters/{version}/plot", "/adapters/v0099/plot").status_code == 404
    assert c.call("get", "/train/status").status_code == 200

    # models: the list, a switch (the fake backend takes any file) and back, refusals
    assert c.call("get", "/models").json()["served"] == api.backend.model_id
    assert c.call("post", "/models/use", json={"model": "nope:1b"}).status_code == 404
    assert c.call("post", "/models/use", json={"model": 5}).status_code == 422
    try:
        assert c.call("post", "/models/use", json={"model": "bundled"}).json()["model"]["served"] is True
    finally:
        api.backend.model_id, api.backend.model_path = "fake-model.gguf", None
        api.runtime.settings.llm.model_path = "bundled"
    assert c.call("post", "/train/run", json={"force": "sometimes"}).status_code == 422
    from vault_agent.train.schedule import TrainingLock

    with TrainingLock(api.runtime.dirs):  # a retrain from the CLI holds the lock
        assert c.call("post", "/train/run").status_code == 409
    scheduler = api.runtime.scheduler
    scheduler.command = [sys.executable, "-c", "print('{}')"]  # the child: a retrain with nothing to do
    try:
        assert c.call("post", "/train/run").status_code == 202
        while scheduler.running:
            time.sleep(0.05)
    finally:
        scheduler.command = None
    assert c.call("post", "/pairs/generate", json={"limit": 0}).status_code == 422
    assert c.call("post", "/pairs/generate", json={"limit": 1}).status_code == 202
    assert c.call("get", "/pairs/generate").status_code == 200
    # the job generates in the background: let it finish, or it would take the injected fault below
    wait_until(lambda: not c.call("get", "/pairs/generate").json()["running"], timeout=60, what="the pair job")

    # the OpenAI-compatible API: every error OpenAI-shaped, as documented
    chat = {"model": "vault-agent", "messages": [{"role": "user", "content": "Who is Priya?"}]}
    no_messages = {"model": "vault-agent", "messages": []}
    assert c.request_ok("/v1/chat/completions", "post", chat)
    assert not c.request_ok("/v1/chat/completions", "post", no_messages)
    assert c.call("get", "/v1/models").status_code == 200
    assert c.call("get", "/v1/models", token=False).status_code == 401
    assert c.call("get", "/v1/models", headers={"Host": "evil.example"}).status_code == 400
    model = "/v1/models/{model_id}"
    assert c.call("get", model, "/v1/models/vault-agent-plain").status_code == 200
    assert c.call("get", model, "/v1/models/gpt-4o").status_code == 404
    completions = "/v1/chat/completions"
    assert c.call("post", completions, json=chat).status_code == 200
    streamed = c.call("post", completions, json={**chat, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert c.call("post", completions, json=no_messages).status_code == 422
    assert c.call("post", completions, json={**chat, "model": "gpt-4o"}).status_code == 404
    assert c.call("post", completions, json=chat, token=False).status_code == 401
    assert c.call("post", completions, json={**chat, "messages": [{"role": "user", "content": "word " * 9000}]}
                  ).status_code == 400
    assert c.call("post", completions, json=big).status_code == 413
    saved, queue.capacity = queue.capacity, 0
    try:
        assert c.call("post", completions, json=chat).status_code == 503
    finally:
        queue.capacity = saved
    api.backend.fail_next = RuntimeError("a bug")
    assert c.call("post", completions, json=chat).status_code == 500
    assert c.call("post", "/v1/embeddings", json={"input": ["garden", "bread"]}).status_code == 200
    assert c.call("post", "/v1/embeddings", json={"input": ""}).status_code == 422  # the schema: not blank
    assert c.call("post", "/v1/embeddings", json={"input": 5}).status_code == 422
    assert c.call("post", "/v1/embeddings", json={"input": "x" * 70000}).status_code == 413

    api.backend.fail_next = RuntimeError("a bug")
    assert c.call("post", "/ask", json={"question": "Who is Priya?"}).status_code == 500

    exercised = {(m, r) for m, r, _ in c.seen}
    documented = {(m, r) for r, ops in c.spec["paths"].items() for m in ops}
    assert documented == exercised, f"routes never exercised: {documented - exercised}"


def test_every_route_documents_the_guards(contract):
    for route, ops in contract.spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "413", "500"} <= codes, (method, route, codes)
            if route != "/health":
                assert "401" in codes, (method, route)
    assert "HTTPValidationError" not in contract.spec.get("components", {}).get("schemas", {})
