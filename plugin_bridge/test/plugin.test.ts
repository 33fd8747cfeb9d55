// @vitest-environment happy-dom
// The plugin as Obsidian loads it (with the stand-in): commands, data.json, the outbox notices,
// and queued ratings sent once the daemon is back.
import { beforeEach, describe, expect, it } from "vitest";
import { API_VERSION, VaultAgentClient } from "../src/api/client";
import VaultAgentPlugin, { readData } from "../src/main";
import { App, Notice } from "./obsidian-mock";
import { json, scripted, type Reply } from "./helpers";

const status = { index: { vault: "/v", vault_name: "Notes", notes_indexed: 21, notes_total: 21, chunks: 80, last_sync: null }, model: "m", adapter: "v0003", queue: { running: 0, waiting: 0, capacity: 3 } };

async function load(saved: unknown = null) {
	const app = new App();
	const plugin = new VaultAgentPlugin(app as never, { id: "vault-agent" } as never);
	(plugin as unknown as { saved: unknown }).saved = saved;
	await plugin.onload();
	const replies: Reply[] = [new Error("connect ECONNREFUSED")];
	const request = scripted(replies);
	plugin.client = new VaultAgentClient(() => ({ url: plugin.data.daemonUrl, token: plugin.data.token }), {
		request: (req) => request(req),
		fetch: () => Promise.reject(new Error("no fetch")),
		sleep: async () => undefined,
		retries: 0,
	});
	const mock = plugin as unknown as { saved: any; commands: { id: string; name: string; hotkeys?: unknown }[]; statusBar: HTMLElement[] };
	return { plugin, mock, replies, request, app };
}

beforeEach(() => void (Notice.messages = []));

describe("plugin", () => {
	it("registers its commands and views with no default hotkeys", async () => {
		const { mock, plugin } = await load();
		expect(mock.commands.map((c) => c.id)).toEqual(["ask-vault", "ask-about-note", "compare-answers", "rate-recent-answers", "stop-answer", "open-learning"]);
		expect([...(plugin as unknown as { views: Map<string, unknown> }).views.keys()]).toEqual(["vault-agent-ask", "vault-agent-learning"]);
		expect(mock.commands.every((c) => c.hotkeys === undefined)).toBe(true);
	});

	it("reads data.json written by `vault-agent plugin install`, tolerating junk", async () => {
		const { plugin } = await load({ daemonUrl: "http://127.0.0.1:9000", token: " t0k ", outbox: "oops", extra: 1 });
		expect(plugin.data).toMatchObject({ daemonUrl: "http://127.0.0.1:9000", token: "t0k", outbox: [], extra: 1 });
		expect(readData(null)).toEqual({ daemonUrl: "http://127.0.0.1:8765", token: "", outbox: [] });
	});

	it("queues a rating while the daemon is down, says so, and sends it once it is back", async () => {
		const { plugin, mock, replies, request } = await load({ token: "tok" });
		await plugin.submit({ path: "/feedback", body: { response_id: "r1", rating: 1 }, label: "thumbs up" });
		expect(Notice.messages[0]).toContain("not running");
		expect(Notice.messages[0]).toContain("thumbs up is saved and will be sent when the daemon is back (1 waiting)");
		expect(mock.saved.outbox).toHaveLength(1);
		const key = mock.saved.outbox[0].key;

		await plugin.tick(); // still down
		expect(mock.statusBar[0].textContent).toBe("vault-agent: offline");

		replies.splice(0, replies.length, json(200, status), json(404, { error: "Not Found" }), json(200, { response_id: "r1" }));
		await plugin.tick();
		expect(mock.statusBar[0].textContent).toBe("vault-agent: 21/21 notes · adapter v0003");
		const sent = request.calls.filter((c) => c.url.endsWith("/feedback"));
		expect(sent.at(-1)!.headers["Idempotency-Key"]).toBe(key);
		expect(JSON.parse(sent.at(-1)!.body!)).toEqual({ response_id: "r1", rating: 1, idempotency_key: key });
		expect(Notice.messages.at(-1)).toBe("vault-agent: sent 1 queued rating");
		expect(mock.saved.outbox).toEqual([]);
	});

	it("tests the connection through the settings host", async () => {
		const { plugin, replies } = await load({ token: "tok" });
		replies.splice(0, replies.length, json(200, { ok: true, version: `${API_VERSION}.0` }), json(401, { error: "missing or wrong bearer token" }));
		expect((await plugin.testConnection()).message).toContain("vault-agent token");
	});
});
