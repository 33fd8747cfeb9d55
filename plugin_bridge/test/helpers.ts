// Shared test helpers: a scripted RequestFn and a client built around it.

import { VaultAgentClient, type ClientOptions } from "../src/api/client";
import type { HttpRequest, HttpResponse, RequestFn } from "../src/api/http";

export type Reply = HttpResponse | Error | "hang";

export function json(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponse {
	return { status, headers: { "content-type": "application/json", ...headers }, text: JSON.stringify(body) };
}

/** A RequestFn that answers from a script (one reply per call; the last repeats) and logs calls. */
export function scripted(replies: Reply[]): RequestFn & { calls: HttpRequest[] } {
	const calls: HttpRequest[] = [];
	const fn = (async (req: HttpRequest) => {
		calls.push(req);
		const reply = replies.length > 1 ? replies.shift()! : replies[0];
		if (reply === "hang") return new Promise<HttpResponse>(() => undefined);
		if (reply instanceof Error) throw reply;
		return reply;
	}) as RequestFn & { calls: HttpRequest[] };
	fn.calls = calls;
	return fn;
}

export function makeClient(request: RequestFn, extra: Partial<ClientOptions> = {}, token = "secret") {
	const slept: number[] = [];
	const client = new VaultAgentClient(() => ({ url: "http://127.0.0.1:8765/", token }), {
		request,
		fetch: () => Promise.reject(new Error("no fetch in this test")),
		sleep: async (ms) => void slept.push(ms),
		...extra,
	});
	return { client, slept };
}
