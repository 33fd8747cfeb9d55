"""The OpenAI-compatible API (/v1) driven by the official `openai` Python package, a client no one
here wrote, against the real daemon (uvicorn, index, embeddings, preference log) on the fake
backend; one slow test on the bundled llama.cpp model."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from conftest import SAMPLE_VAULT, start_daemon

QUESTION = "How often do I water the tomatoes?"


def client(daemon, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=key or daemon.token, max_retries=0, timeout=60)


def ask(c: openai.OpenAI, model: str = "vault-agent", content: str = QUESTION, **kwargs):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)


def stored(api, response_id: str) -> dict:
    row = api.runtime.log.get_response(response_id)
    assert row is not None, "the answer was not recorded"
    return row


def test_models_lists_both_ids_and_retrieves_each(api):
    c = client(api)
    ids = [m.id for m in c.models.list()]
    assert ids == ["vault-agent", "vault-agent-plain"]
    model = c.models.retrieve("vault-agent-plain")
    assert model.id == "vault-agent-plain" and model.object == "model" and model.owned_by == "vault-agent"
    with pytest.raises(openai.NotFoundError) as err:
        c.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found" and "vault-agent" in err.value.message


def test_vault_agent_answers_from_the_notes_and_records_the_answer_for_feedback(api):
    c = client(api)
    done = ask(c, max_tokens=100)
    text = done.choices[0].message.content
    assert text.startswith("From your notes [1]:")  # the fake cites [1] when it was given notes
    assert done.id.startswith("chatcmpl-") and done.model == "vault-agent" and done.object == "chat.completion"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens > 0 and done.usage.total_tokens > done.usage.prompt_tokens > 0
    extra = done.model_extra["vault_agent"]
    assert extra["citations"][0]["n"] == 1 and extra["citations"][0]["path"].endswith(".md")
    assert extra["index_state"]["state"] == "ready"
    row = stored(api, extra["response_id"])
    assert row["answer"] == text and row["question"] == QUESTION and row["retrieved"]
    # in the rating queue like an /ask answer, and /feedback takes its response_id
    unrated = api.http.get("/responses", params={"unrated": True}).json()["responses"]
    assert extra["response_id"] in [r["id"] for r in unrated]
    rated = api.http.post("/feedback", json={"response_id": extra["response_id"], "rating": 1})
    assert rated.status_code == 200, rated.text


def test_plain_model_answers_the_clients_messages_without_retrieval(api):
    c = client(api)
    messages = [{"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": QUESTION}]
    done = c.chat.completions.create(model="vault-agent-plain", messages=messages, max_tokens=100)
    assert done.choices[0].message.content.startswith("I don't know:")  # no notes in its prompt
    extra = done.model_extra["vault_agent"]
    assert extra["citations"] == [] and extra["index_state"] == {}
    row = stored(api, extra["response_id"])
    assert row["messages"] == messages and row["retrieved"] == []


@pytest.mark.parametrize("model", ["vault-agent", "vault-agent-plain"])
def test_stream_gives_the_same_answer_in_chunks_then_done(api, model):
    c = client(api)
    whole = ask(c, model, max_tokens=100, seed=7, temperature=0.5).choices[0].message.content
    chunks = list(ask(c, model, max_tokens=100, seed=7, temperature=0.5, stream=True,
                      stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip() == whole
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    last = [ch for ch in chunks if ch.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    extra = last.model_extra["vault_agent"]
    assert stored(api, extra["response_id"])["answer"] == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # the usage chunk


def test_max_tokens_ends_with_length_and_stop_strings_cut_the_answer(api):
    c = client(api)
    short = ask(c, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert short.choices[0].message.content == "From your."  # the fake ends a cut answer with "."
    cut = ask(c, max_tokens=100, stop=[" notes", "zzz"])
    assert cut.choices[0].message.content == "From your" and cut.choices[0].finish_reason == "stop"
    assert stored(api, cut.model_extra["vault_agent"]["response_id"])["answer"] == "From your"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in ask(c, max_tokens=100, stop="[1]", stream=True)
                       if ch.choices)
    assert streamed == "From your notes "


def test_a_stop_string_split_across_pieces_is_never_shown():
    from vault_agent.llm.stops import StopScanner

    scanner = StopScanner(["END", "\n\n"])
    shown = [scanner.feed(p) for p in ["Hello E", "N", "x and E", "ND more"]]
    assert shown == ["Hello ", "", "ENx and ", ""] and scanner.stopped and scanner.flush() == ""
    unfinished = StopScanner(["END"])
    assert unfinished.feed("the E") == "the " and unfinished.flush() == "E"  # held back, then let out


def test_earlier_turns_stay_in_the_prompt_oldest_dropped_first(api):
    c = client(api)
    turns = []
    for n in range(12):  # ~12 * 1,600 chars: far more than the fake's 2,048-token window holds
        turns += [{"role": "user", "content": f"turn {n} " + "blah " * 300},
                  {"role": "assistant", "content": f"reply {n}"}]
    messages = turns + [{"role": "user", "content": QUESTION}]
    done = c.chat.completions.create(model="vault-agent", messages=messages, max_tokens=50)
    prompt = stored(api, done.model_extra["vault_agent"]["response_id"])["messages"]
    kept = [m["content"] for m in prompt[1:-1]]
    assert kept and kept[-1] == "reply 11"  # the newest earlier turns stay, in order
    assert not any(k.startswith("turn 0 ") for k in kept)  # the oldest went
    assert prompt[-1]["role"] == "user" and "Notes:" in prompt[-1]["content"] and QUESTION in prompt[-1]["content"]
    short = c.chat.completions.create(model="vault-agent", max_tokens=50, messages=[
        {"role": "user", "content": "What is Project Heron?"}, {"role": "assistant", "content": "A plan."},
        {"role": "user", "content": [{"type": "text", "text": "And who runs it?"}]}])
    prompt = stored(api, short.model_extra["vault_agent"]["response_id"])["messages"]
    assert [m["content"] for m in prompt[1:3]] == ["What is Project Heron?", "A plan."]


def test_a_message_longer_than_a_question_is_answered_from_the_notes(api):
    pasted = "Some pasted text about nothing in particular. " * 100  # 4,700 chars: over max_question_chars
    assert len(pasted) > api.runtime.settings.server.max_question_chars  # /ask would refuse it (422)
    done = ask(client(api), content=pasted + QUESTION, max_tokens=100)
    assert done.choices[0].message.content.startswith("From your notes [1]:")
    row = stored(api, done.model_extra["vault_agent"]["response_id"])
    assert row["retrieved"] and row["question"] == (pasted + QUESTION).strip()  # the prompt has all of it


def test_a_cancelled_stream_stops_generating_and_records_nothing(api):
    api.backend.token_delay_s = 0.05
    before, generations = len(api.runtime.log.recent_responses(500)), api.backend.generations
    stream = ask(client(api), max_tokens=100, stream=True)
    next(iter(stream)), next(iter(stream))  # the role chunk and the first token: then hang up
    stream.close()
    deadline = time.monotonic() + 10
    while api.backend.generations == generations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api.backend.generations == generations + 1
    time.sleep(0.2)
    assert api.runtime.queue.snapshot()["running"] == 0
    assert len(api.runtime.log.recent_responses(500)) == before
    api.backend.token_delay_s = 0.0
    assert ask(client(api)).choices[0].message.content  # the model is free again


def test_wrong_key_is_an_authentication_error(api):
    with pytest.raises(openai.AuthenticationError) as err:
        client(api, key="not-the-token").models.list()
    assert err.value.body["type"] == "authentication_error" and err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        ask(client(api, key="not-the-token"), stream=True)


@pytest.mark.parametrize("model", ["vault-agent", "vault-agent-plain"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_for_the_context_window_is_a_bad_request(api, model, stream):
    huge = "word " * 9000  # ~11,000 tokens for the fake's 2,048-token window, under max_body_bytes
    with pytest.raises(openai.BadRequestError) as err:
        ask(client(api), model, content=huge, stream=stream)
    assert err.value.code == "context_length_exceeded" and "context window" in err.value.message
    with pytest.raises(openai.BadRequestError):  # an answer longer than the window is refused the same way
        ask(client(api), model, max_tokens=5000, stream=stream)


def test_embeddings_are_the_index_embedding_model(api):
    c = client(api)
    texts = ["tomatoes need water", "sourdough starter"]
    got = c.embeddings.create(model="anything", input=texts)  # the SDK asks for base64 and decodes it
    expected = api.runtime.indexer.embedder.embed(texts)
    assert [d.index for d in got.data] == [0, 1]
    assert np.allclose([d.embedding for d in got.data], expected, atol=1e-6)
    assert got.model == api.runtime.indexer.embedder.label and got.usage.prompt_tokens > 4
    one = c.embeddings.create(model="anything", input="tomatoes need water", encoding_format="float")
    assert np.allclose(one.data[0].embedding, expected[0], atol=1e-6)
    for blank in ("", "  ", [], ["ok", "\n"]):  # refused by the schema itself, as the fuzzer checks
        with pytest.raises(openai.UnprocessableEntityError) as err:
            c.embeddings.create(model="anything", input=blank)
        assert err.value.param and err.value.param.startswith("input"), err.value.body


def raw(api, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, api.url + path, timeout=30, **kwargs)


def test_errors_under_v1_are_openai_shaped_and_elsewhere_unchanged(api):
    auth = {"Authorization": f"Bearer {api.token}"}
    for method, path in (("POST", "/v1/completions"), ("GET", "/v1/nothing")):
        r = raw(api, method, path, headers=auth, json={"model": "vault-agent", "prompt": "hi"})
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["code"] == "unknown_url" and set(error) == {"message", "type", "param", "code"}
    bad = raw(api, "POST", "/v1/chat/completions", headers=auth, json={"model": "vault-agent", "messages": []})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "messages"
    assert bad.json()["error"]["type"] == "invalid_request_error"
    unknown = raw(api, "POST", "/v1/chat/completions", headers=auth,
                  json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "logprobs": True})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    big = raw(api, "POST", "/v1/embeddings", headers=auth,
              json={"input": "x" * (api.runtime.settings.server.max_body_bytes + 10)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    host = raw(api, "GET", "/v1/models", headers={**auth, "Host": "evil.example"})
    assert host.status_code == 400 and host.json()["error"]["type"] == "invalid_request_error"
    assert raw(api, "POST", "/ask", headers=auth, json={"question": ""}).json()["error"].startswith("question")


def test_a_full_queue_is_503_with_retry_after(api):
    queue = api.runtime.queue
    saved, queue.capacity = queue.capacity, 0
    try:
        with pytest.raises(openai.InternalServerError) as err:
            ask(client(api))
        assert err.value.status_code == 503 and err.value.response.headers["Retry-After"]
        assert "busy" in err.value.message
    finally:
        queue.capacity = saved


def test_a_failure_mid_stream_is_an_error_frame(api):
    api.backend.fail_next = RuntimeError("a bug")
    with pytest.raises(openai.APIError) as err:
        list(ask(client(api), stream=True))
    assert "internal error" in err.value.message
    assert api.runtime.queue.snapshot()["running"] == 0


STAINLESS = ("authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
             "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
             "x-stainless-runtime-version,x-stainless-timeout")


def test_cors_preflight_of_the_openai_js_sdk_passes_for_obsidian_only(api):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": STAINLESS}
    good = raw(api, "OPTIONS", "/v1/chat/completions", headers={"Origin": "app://obsidian.md", **pre})
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == "app://obsidian.md"
    allowed = {h.strip().lower() for h in good.headers["access-control-allow-headers"].split(",")}
    assert set(STAINLESS.split(",")) <= allowed
    evil = raw(api, "OPTIONS", "/v1/chat/completions", headers={"Origin": "https://evil.example", **pre})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers  # the browser refuses


@pytest.mark.slow
def test_the_bundled_model_answers_through_the_openai_sdk(daemon):
    c = client(daemon)
    chunks = list(c.chat.completions.create(
        model="vault-agent", stream=True,
        messages=[{"role": "user", "content": "What do I feed my sourdough starter, and how often?"}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    extra = [ch for ch in chunks if ch.choices][-1].model_extra["vault_agent"]
    assert any(cit["path"] == "Recipes/Sourdough.md" for cit in extra["citations"])
    row = daemon.runtime.log.get_response(extra["response_id"])
    assert row["answer"] == text.strip() and row["model_id"].endswith(".gguf")
    plain = c.chat.completions.create(model="vault-agent-plain", max_tokens=20,
                                      messages=[{"role": "user", "content": "Say hello."}])
    assert plain.choices[0].message.content.strip() and plain.choices[0].finish_reason in ("stop", "length")


# --- the official npm package, under Node and in headless Chromium -------------------------------

PLUGIN = Path(__file__).resolve().parent.parent / "plugin_bridge"
CHROMIUM = Path("/usr/bin/chromium")


def serve_plugin_folder():
    """plugin_bridge/ on a loopback port: an origin for a page (e2e/openai-page.html)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(PLUGIN)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_openai_npm_package_under_node_and_in_chromium(tmp_path, embedder):
    from vault_agent.llm.fake import FakeBackend

    if shutil.which("node") is None or not (PLUGIN / "node_modules" / "openai").exists():
        pytest.fail("node and the plugin's dev dependencies are needed (cd plugin_bridge && npm ci)")
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed for the browser check (`make test` installs it as root)")
    (granted_server, granted), (foreign_server, foreign) = serve_plugin_folder(), serve_plugin_folder()
    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    # The granted page's origin stands in for app://obsidian.md (granted the same way); the other isn't.
    running = start_daemon(vault, tmp_path / "home", embedder, FakeBackend(),
                           server={"port": 0, "cors_origins": [granted]})
    try:
        config = {"url": running.url, "token": running.token, "granted": granted, "foreign": foreign}
        r = subprocess.run(["node", "e2e/openai-check.mjs", json.dumps(config)], cwd=PLUGIN,
                           capture_output=True, text=True, timeout=300)
        out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {"error": r.stderr[-3000:]}
        assert r.returncode == 0 and "error" not in out, out
        log = running.runtime.log

        node = out["node"]
        assert node["models"] == ["vault-agent", "vault-agent-plain"]
        assert node["answer"]["content"].startswith("From your notes [1]:")
        assert node["answer"]["finish_reason"] == "stop" and node["answer"]["vault_agent"]["citations"]
        assert log.get_response(node["answer"]["vault_agent"]["response_id"])["answer"] == node["answer"]["content"]
        assert node["stream"]["content"].startswith("I don't know:")  # plain: no notes
        assert log.get_response(node["stream"]["vault_agent"]["response_id"])["answer"] == node["stream"]["content"]
        assert node["embedding_length"] == running.runtime.indexer.embedder.dimension
        assert node["wrong_key"]["name"] == "AuthenticationError" and node["wrong_key"]["status"] == 401

        page = out["chromium"]["granted"]
        assert page["ok"], page
        assert page["origin"] == granted and page["content"].startswith("From your notes [1]:")
        assert log.get_response(page["vault_agent"]["response_id"])["answer"] == page["content"]
        post = next(s for s in page["sent"] if s["method"] == "POST")
        assert any(h.startswith("x-stainless-") for h in post["headers"])  # so the preflight asked for them
        blocked = out["chromium"]["foreign"]
        assert not blocked["ok"] and blocked["error"]["name"] == "APIConnectionError", blocked
    finally:
        running.stop()
        granted_server.shutdown()
        foreign_server.shutdown()
