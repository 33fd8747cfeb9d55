// Runs the plugin's real HTTP client and outbox under Node against a running daemon, as
// Obsidian would (same code, fetch standing in for requestUrl, Obsidian's Origin header).
// Driven by tests/test_plugin_e2e.py: `node e2e/dist/run.cjs <scenario> '<json config>'`;
// prints one JSON object with what happened.

import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { VaultAgentClient, newKey } from "../src/api/client";
import { fetchRequest } from "../src/api/http";
import type { OutboxItem } from "../src/api/types";
import { Outbox } from "../src/outbox";

interface Config {
	url: string;
	token: string;
	question?: string;
	response_id?: string;
	outbox_file?: string;
	key?: string;
}

const ORIGIN = "app://obsidian.md";

function client(cfg: Config, token = cfg.token) {
	return new VaultAgentClient(() => ({ url: cfg.url, token }), {
		request: fetchRequest((u, i) => fetch(u, i)),
		fetch: (u, i) => fetch(u, i),
		headers: { Origin: ORIGIN },
		jsonTimeoutMs: 10_000,
		generationTimeoutMs: 240_000,
		retries: 1,
	});
}

async function flow(cfg: Config) {
	const c = client(cfg);
	const out: Record<string, unknown> = {};
	out.connection = await c.testConnection();
	out.wrong_token = await client(cfg, "not-the-token").testConnection();

	const tokens: string[] = [];
	const answer = await c.askStream(cfg.question!, (t) => tokens.push(t));
	out.tokens = tokens.length;
	out.streamed_text = tokens.join("");
	out.answer = answer;

	// What the browser checks before letting Obsidian read a fetch response.
	const probe = await fetch(cfg.url + "/status", { headers: { Origin: ORIGIN, Authorization: `Bearer ${cfg.token}` } });
	out.cors_allow_origin = probe.headers.get("access-control-allow-origin");

	// A thumb delivered twice with one key (a retry after a lost reply) is recorded once.
	const thumb: OutboxItem = { key: newKey(), path: "/feedback", body: { response_id: answer.response_id, rating: 1 }, label: "thumbs up", queuedAt: Date.now() };
	out.thumb_first = await c.deliver(thumb);
	out.thumb_again = await c.deliver(thumb);
	out.correction = await c.deliver({ key: newKey(), path: "/feedback", body: { response_id: answer.response_id, correction: "A better answer, written by hand." }, label: "correction", queuedAt: Date.now() });

	const cmp = await c.compare(cfg.question!);
	out.compare = { id: cmp.comparison_id, a: cmp.a.answer, b: cmp.b.answer };
	out.pending_before = (await c.pendingComparisons()).map((p) => p.id);
	out.choice = await c.deliver({ key: newKey(), path: `/compare/${cmp.comparison_id}/choice`, body: { choice: "A" }, label: "choice A", queuedAt: Date.now() });
	out.pending_after = (await c.pendingComparisons()).map((p) => p.id);
	out.unrated = (await c.unratedResponses()).map((r) => r.id);
	out.adapters = await c.adapters();
	return out;
}

/** One outbox step, persisted to a file the way the plugin persists data.json. */
async function outboxStep(cfg: Config, action: "rate" | "flush") {
	const file = cfg.outbox_file!;
	const saved: OutboxItem[] = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : [];
	const c = client(cfg);
	const box = new Outbox(saved, (item) => c.deliver(item), async (items) => writeFileSync(file, JSON.stringify(items)));
	const result =
		action === "rate"
			? await box.submit({ key: cfg.key ?? newKey(), path: "/feedback", body: { response_id: cfg.response_id, rating: -1 }, label: "thumbs down", queuedAt: Date.now() })
			: await box.flush();
	return {
		sent: result.sent,
		pending: result.pending,
		blocked: result.blocked ? `${result.blocked.name}: ${result.blocked.message}` : null,
		dropped: result.dropped.map((d) => d.reason),
		saved_keys: JSON.parse(readFileSync(file, "utf8")).map((i: OutboxItem) => i.key),
	};
}

async function main() {
	const [scenario, raw] = process.argv.slice(2);
	const cfg: Config = JSON.parse(raw);
	const result = scenario === "flow" ? await flow(cfg) : await outboxStep(cfg, scenario as "rate" | "flush");
	process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
	process.stdout.write(JSON.stringify({ error: `${e?.name}: ${e?.message}` }) + "\n");
	process.exit(1);
});
