// Ratings, corrections and choices made while the daemon is down wait here, in order, each with
// the idempotency key it got when the user clicked, and are delivered once the daemon is back.
// The queue is saved (plugin data) before any delivery is tried, so closing Obsidian loses nothing.

import { HttpError, isTransient } from "./api/errors";
import type { OutboxItem } from "./api/types";

export interface OutboxResult {
	sent: number;
	pending: number;
	/** Items the daemon refused for good (e.g. 404: the answer no longer exists). */
	dropped: { item: OutboxItem; reason: string }[];
	/** Why delivery stopped with items left (daemon down, wrong token...). */
	blocked?: Error;
}

export class Outbox {
	private items: OutboxItem[];
	private running: Promise<OutboxResult> | null = null;

	constructor(
		initial: OutboxItem[],
		private readonly send: (item: OutboxItem) => Promise<unknown>,
		private readonly save: (items: OutboxItem[]) => Promise<void>,
	) {
		this.items = [...initial];
	}

	get pending(): readonly OutboxItem[] {
		return this.items;
	}

	/** Queue one item (saved first), then try to deliver everything queued. */
	async submit(item: OutboxItem): Promise<OutboxResult> {
		if (!this.items.some((i) => i.key === item.key)) {
			this.items.push(item);
			await this.save(this.items);
		}
		return this.flush();
	}

	/** Deliver in order; stop at the first failure worth retrying later. One flush at a time. */
	flush(): Promise<OutboxResult> {
		if (this.running) return this.running.then(() => this.flush());
		this.running = this.drain().finally(() => (this.running = null));
		return this.running;
	}

	private async drain(): Promise<OutboxResult> {
		const result: OutboxResult = { sent: 0, pending: 0, dropped: [] };
		while (this.items.length) {
			const item = this.items[0];
			try {
				await this.send(item);
				result.sent++;
			} catch (e) {
				const err = e instanceof Error ? e : new Error(String(e));
				// Down, slow, busy, or a wrong token the user can fix: keep it for later.
				if (isTransient(e) || (e instanceof HttpError && e.status === 401)) {
					result.blocked = err;
					break;
				}
				result.dropped.push({ item, reason: err.message });
			}
			this.items = this.items.slice(1);
			await this.save(this.items);
		}
		result.pending = this.items.length;
		return result;
	}
}
