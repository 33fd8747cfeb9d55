import { describe, expect, it } from "vitest";
import { API_VERSION } from "../src/api/client";
import { DaemonDown, HttpError, Timeout } from "../src/api/errors";
import { retryAfterSeconds } from "../src/api/http";
import { json, makeClient, scripted } from "./helpers";

const refused = () => new Error("connect ECONNREFUSED 127.0.0.1:8765");
const status = { index: { vault: "/v", vault_name: "Notes", notes_indexed: 20, notes_total: 21, chunks: 80, last_sync: null }, model: "m", adapter: null, queue: { running: 0, waiting: 0, capacity: 3 } };

describe("JSON calls", () => {
	it("send the bearer token and parse the body", async () => {
		const request = scripted([json(200, status)]);
		const { client } = makeClient(request);
		const st = await client.status();
		expect(st.index.notes_total).toBe(21);
		expect(request.calls[0].url).toBe("http://127.0.0.1:8765/status");
		expect(request.calls[0].headers["Authorization"]).toBe("Bearer secret");
	});

	it("give up after the time limit when the daemon hangs", async () => {
		const { client } = makeClient(scripted(["hang"]), { jsonTimeoutMs: 50 });
		const started = Date.now();
		await expect(client.status()).rejects.toBeInstanceOf(Timeout);
		expect(Date.now() - started).toBeLessThan(2000);
	});

	it("retry a GET when the connection drops, then succeed", async () => {
		const request = scripted([refused(), refused(), json(200, status)]);
		const { client, slept } = makeClient(request);
		await expect(client.status()).resolves.toMatchObject({ model: "m" });
		expect(request.calls).toHaveLength(3);
		expect(slept).toEqual([500, 1000]);
	});

	it("say the daemon is not running once retries run out", async () => {
		const { client } = makeClient(scripted([refused()]), { retries: 1 });
		const err = await client.status().catch((e) => e);
		expect(err).toBeInstanceOf(DaemonDown);
		expect(err.message).toContain("not running at http://127.0.0.1:8765");
		expect(err.message).toContain("vault-agent serve");
	});

	it("never repeat a generation request whose connection dropped", async () => {
		const request = scripted([refused(), json(200, {})]);
		const { client } = makeClient(request);
		await expect(client.ask("q")).rejects.toBeInstanceOf(DaemonDown);
		expect(request.calls).toHaveLength(1);
	});

	it("wait as long as a 503's Retry-After says, then retry", async () => {
		const request = scripted([json(503, { error: "model busy" }, { "Retry-After": "3" }), json(200, { response_id: "r1" })]);
		const waits: number[] = [];
		const { client, slept } = makeClient(request, { onWait: (s) => void waits.push(s) });
		await expect(client.ask("q")).resolves.toMatchObject({ response_id: "r1" });
		expect(slept).toEqual([3000]);
		expect(waits).toEqual([3]);
	});

	it("report a 503 whose Retry-After is too long instead of freezing", async () => {
		const request = scripted([json(503, { error: "storage unavailable" }, { "retry-after": "600" })]);
		const { client, slept } = makeClient(request);
		const err = await client.status().catch((e) => e);
		expect(err).toBeInstanceOf(HttpError);
		expect(err.retryAfterS).toBe(600);
		expect(err.message).toContain("storage unavailable");
		expect(slept).toEqual([]);
	});

	it("read Retry-After as seconds or as an HTTP date", () => {
		expect(retryAfterSeconds("7")).toBe(7);
		const now = Date.parse("2026-11-25T10:00:00Z");
		expect(retryAfterSeconds("Wed, 25 Nov 2026 10:00:05 GMT", now)).toBe(5);
		expect(retryAfterSeconds("soon")).toBeNull();
	});

	it("show the daemon's error message and an error id from a 500", async () => {
		const { client } = makeClient(scripted([json(500, { error: "internal error (id 4f2a)" })]));
		await expect(client.status()).rejects.toThrow("daemon error 500: internal error (id 4f2a)");
	});
});

describe("delivering ratings", () => {
	it("retries with the same idempotency key, in the header and the body", async () => {
		const request = scripted([refused(), json(200, { response_id: "r1" })]);
		const { client } = makeClient(request);
		await client.deliver({ key: "k-1", path: "/feedback", body: { response_id: "r1", rating: 1 }, label: "thumbs up", queuedAt: 0 });
		expect(request.calls).toHaveLength(2);
		for (const call of request.calls) {
			expect(call.headers["Idempotency-Key"]).toBe("k-1");
			expect(JSON.parse(call.body!)).toEqual({ response_id: "r1", rating: 1, idempotency_key: "k-1" });
		}
	});
});

describe("Test connection", () => {
	const health = json(200, { ok: true, version: `${API_VERSION}.7` });

	it("says the daemon is not running", async () => {
		const { client } = makeClient(scripted([refused()]), { retries: 0 });
		const r = await client.testConnection();
		expect(r.ok).toBe(false);
		expect(r.message).toMatch(/not running.*vault-agent serve/);
	});

	it("says the token is wrong on 401 and how to get the right one", async () => {
		const { client } = makeClient(scripted([health, json(401, { error: "missing or wrong bearer token" })]));
		const r = await client.testConnection();
		expect(r.ok).toBe(false);
		expect(r.message).toContain("wrong or missing token");
		expect(r.message).toContain("vault-agent token");
	});

	it("says when no token is set at all", async () => {
		const { client } = makeClient(scripted([health]), {}, "");
		expect((await client.testConnection()).message).toContain("no token set");
	});

	it("explains a refused Host", async () => {
		const { client } = makeClient(scripted([json(400, { error: "Host 'my-pc.lan:8765' not allowed (DNS rebinding guard)" })]));
		const r = await client.testConnection();
		expect(r.message).toContain("refused the Host");
		expect(r.message).toContain("127.0.0.1");
	});

	it("reports a version mismatch from /health", async () => {
		const { client } = makeClient(scripted([json(200, { ok: true, version: "9.4.0" })]));
		const r = await client.testConnection();
		expect(r.ok).toBe(false);
		expect(r.message).toContain("daemon version 9.4.0 does not match");
	});

	it("says what it found when all is well", async () => {
		const { client } = makeClient(scripted([health, json(200, status)]));
		const r = await client.testConnection();
		expect(r).toMatchObject({ ok: true, version: `${API_VERSION}.7` });
		expect(r.message).toContain('20 of 21 notes indexed in "Notes"');
	});
});

describe("adapters", () => {
	it("are null on a daemon without the route", async () => {
		const { client } = makeClient(scripted([json(404, { error: "Not Found" })]));
		await expect(client.adapters()).resolves.toBeNull();
	});
});
