import { describe, expect, it } from "vitest";
import { DaemonDown, HttpError } from "../src/api/errors";
import type { OutboxItem } from "../src/api/types";
import { Outbox } from "../src/outbox";

const item = (key: string): OutboxItem => ({ key, path: "/feedback", body: { response_id: "r", rating: 1 }, label: "thumbs up", queuedAt: 0 });

function setup(initial: OutboxItem[] = []) {
	let up = false;
	const delivered: string[] = [];
	const saved: string[][] = [];
	const failWith: { e: unknown } = { e: new DaemonDown("http://127.0.0.1:8765") };
	const outbox = new Outbox(
		initial,
		async (i) => {
			if (!up) throw failWith.e;
			await new Promise((r) => setTimeout(r, 5));
			delivered.push(i.key);
		},
		async (items) => void saved.push(items.map((i) => i.key)),
	);
	return { outbox, delivered, saved, setUp: (v: boolean) => (up = v), failWith };
}

describe("outbox", () => {
	it("keeps ratings made while the daemon is down, saved before any send, and sends them in order once back", async () => {
		const t = setup();
		const r1 = await t.outbox.submit(item("a"));
		await t.outbox.submit(item("b"));
		expect(r1.blocked).toBeInstanceOf(DaemonDown);
		expect(t.saved[0]).toEqual(["a"]);
		expect(t.outbox.pending.map((i) => i.key)).toEqual(["a", "b"]);
		t.setUp(true);
		const r = await t.outbox.flush();
		expect(r).toMatchObject({ sent: 2, pending: 0 });
		expect(t.delivered).toEqual(["a", "b"]);
		expect(t.saved.at(-1)).toEqual([]);
	});

	it("survives a restart: a new outbox from the saved items delivers them", async () => {
		const t = setup();
		await t.outbox.submit(item("a"));
		const again = setup(t.outbox.pending as OutboxItem[]);
		again.setUp(true);
		await again.outbox.flush();
		expect(again.delivered).toEqual(["a"]);
	});

	it("sends each item once when flushes overlap", async () => {
		const t = setup([item("a"), item("b")]);
		t.setUp(true);
		await Promise.all([t.outbox.flush(), t.outbox.flush(), t.outbox.submit(item("c"))]);
		expect(t.delivered).toEqual(["a", "b", "c"]);
	});

	it("does not queue the same key twice", async () => {
		const t = setup();
		await t.outbox.submit(item("a"));
		await t.outbox.submit(item("a"));
		expect(t.outbox.pending).toHaveLength(1);
	});

	it("keeps items on 401 (a token the user can fix) and on 503", async () => {
		for (const e of [new HttpError(401, "wrong token"), new HttpError(503, "storage unavailable", 5)]) {
			const t = setup();
			t.failWith.e = e;
			const r = await t.outbox.submit(item("a"));
			expect(r.blocked).toBe(e);
			expect(r.pending).toBe(1);
		}
	});

	it("drops an item the daemon refuses for good (404) and goes on", async () => {
		const t = setup([item("gone"), item("b")]);
		let first = true;
		const outbox = new Outbox(
			t.outbox.pending as OutboxItem[],
			async (i) => {
				if (first) {
					first = false;
					throw new HttpError(404, "no response with id 'gone'");
				}
				t.delivered.push(i.key);
			},
			async () => undefined,
		);
		const r = await outbox.flush();
		expect(r.dropped.map((d) => d.item.key)).toEqual(["gone"]);
		expect(r.dropped[0].reason).toContain("no response");
		expect(t.delivered).toEqual(["b"]);
	});
});
