// The answer stream against a real HTTP server on loopback (node:http), through real fetch.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { VaultAgentClient } from "../src/api/client";
import { Aborted, DaemonDown, HttpError, Timeout } from "../src/api/errors";
import { SseParser } from "../src/api/sse";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
const servers: http.Server[] = [];

async function serve(handler: Handler): Promise<string> {
	const server = http.createServer(handler);
	servers.push(server);
	await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
	return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
	for (const s of servers.splice(0)) {
		s.closeAllConnections();
		await new Promise((r) => s.close(r));
	}
});

function client(url: string, extra: Record<string, unknown> = {}) {
	return new VaultAgentClient(() => ({ url, token: "tok" }), {
		request: () => Promise.reject(new Error("unused")),
		fetch: (u, i) => fetch(u, i),
		sleep: async () => undefined,
		...extra,
	});
}

const final = { response_id: "r1", question: "q", answer: "Water weekly [1].", citations: [] };
const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

describe("SSE parser", () => {
	it("assembles events split at any byte, CRLF or LF, skipping comments", () => {
		const text = ": keep-alive\r\n" + sse("token", { text: "Wa" }).replace(/\n/g, "\r\n") + sse("final", final);
		for (let cut = 1; cut < text.length; cut++) {
			const p = new SseParser();
			const events = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
			expect(events.map((e) => e.event)).toEqual(["token", "final"]);
			expect(JSON.parse(events[1].data)).toEqual(final);
		}
	});

	it("joins multi-line data", () => {
		expect(new SseParser().push("data: a\ndata: b\n\n")).toEqual([{ event: "message", data: "a\nb" }]);
	});
});

describe("askStream", () => {
	it("streams tokens then resolves to the final answer, with the token and JSON body", async () => {
		let seen: { auth?: string; body?: string } = {};
		const url = await serve((req, res) => {
			let body = "";
			req.on("data", (c) => (body += c));
			req.on("end", async () => {
				seen = { auth: req.headers.authorization, body };
				res.writeHead(200, { "content-type": "text/event-stream" });
				for (const piece of ["Water ", "weekly ", "[1]."]) {
					res.write(sse("token", { text: piece }));
					await new Promise((r) => setTimeout(r, 10));
				}
				res.end(sse("final", final));
			});
		});
		const tokens: string[] = [];
		const answer = await client(url).askStream("how often?", (t) => tokens.push(t));
		expect(tokens).toEqual(["Water ", "weekly ", "[1]."]);
		expect(answer.response_id).toBe("r1");
		expect(seen.auth).toBe("Bearer tok");
		expect(JSON.parse(seen.body!)).toEqual({ question: "how often?" });
	});

	it("aborts on Stop: the server sees the connection close", async () => {
		let closed!: () => void;
		const serverSawClose = new Promise<void>((r) => (closed = r));
		const url = await serve((_req, res) => {
			res.writeHead(200, { "content-type": "text/event-stream" });
			res.write(sse("token", { text: "partial" }));
			res.on("close", () => closed());
		});
		const stop = new AbortController();
		const err = await client(url)
			.askStream("q", () => stop.abort(), stop.signal)
			.catch((e) => e);
		expect(err).toBeInstanceOf(Aborted);
		await serverSawClose;
	});

	it("times out when the stream goes silent", async () => {
		const url = await serve((_req, res) => {
			res.writeHead(200, { "content-type": "text/event-stream" });
			res.write(sse("token", { text: "then nothing" }));
		});
		const err = await client(url, { streamIdleMs: 100 }).askStream("q", () => undefined).catch((e) => e);
		expect(err).toBeInstanceOf(Timeout);
	});

	it("retries a 503 after Retry-After, then streams", async () => {
		let n = 0;
		const url = await serve((_req, res) => {
			if (n++ === 0) {
				res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
				return res.end(JSON.stringify({ error: "model busy" }));
			}
			res.writeHead(200, { "content-type": "text/event-stream" });
			res.end(sse("final", final));
		});
		await expect(client(url).askStream("q", () => undefined)).resolves.toMatchObject({ response_id: "r1" });
		expect(n).toBe(2);
	});

	it("reports a 401 without retrying", async () => {
		const url = await serve((_req, res) => {
			res.writeHead(401, { "content-type": "application/json" });
			res.end(JSON.stringify({ error: "missing or wrong bearer token" }));
		});
		const err = await client(url).askStream("q", () => undefined).catch((e) => e);
		expect(err).toBeInstanceOf(HttpError);
		expect(err.status).toBe(401);
	});

	it("turns an in-stream error event into an error", async () => {
		const url = await serve((_req, res) => {
			res.writeHead(200, { "content-type": "text/event-stream" });
			res.end(sse("error", { error: "RuntimeError: model crashed" }));
		});
		await expect(client(url).askStream("q", () => undefined)).rejects.toThrow("model crashed");
	});

	it("says the daemon went away when the stream ends without an answer", async () => {
		const url = await serve((_req, res) => {
			res.writeHead(200, { "content-type": "text/event-stream" });
			res.end(sse("token", { text: "half" }));
		});
		await expect(client(url).askStream("q", () => undefined)).rejects.toBeInstanceOf(DaemonDown);
	});

	it("says the daemon is not running when nothing listens", async () => {
		const url = await serve(() => undefined);
		servers[0].close();
		await new Promise((r) => setTimeout(r, 20));
		await expect(client(url).askStream("q", () => undefined)).rejects.toBeInstanceOf(DaemonDown);
	});
});
