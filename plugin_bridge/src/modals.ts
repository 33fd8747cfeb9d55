// Small dialogs: a question prompt, "Write a better answer", and the rating queue.

import { App, Modal, Notice, Setting } from "obsidian";
import type { PendingComparison, RecordedResponse } from "./api/types";
import { describeError } from "./describe";
import type { PluginHost } from "./host";

export class QuestionModal extends Modal {
	private value = "";

	constructor(app: App, private readonly title: string, private readonly onSubmit: (question: string) => void, private readonly hint?: string) {
		super(app);
	}

	onOpen(): void {
		this.setTitle(this.title);
		if (this.hint) this.contentEl.createEl("p", { text: this.hint, cls: "vault-agent-hint" });
		const input = this.contentEl.createEl("textarea", { cls: "vault-agent-question", attr: { rows: "3", placeholder: "Ask your vault…" } });
		input.addEventListener("input", () => (this.value = input.value));
		input.addEventListener("keydown", (ev) => {
			if (ev.key === "Enter" && !ev.shiftKey) {
				ev.preventDefault();
				this.done();
			}
		});
		new Setting(this.contentEl).addButton((b) => b.setButtonText("Ask").setCta().onClick(() => this.done()));
		input.focus();
	}

	private done(): void {
		const q = this.value.trim();
		if (!q) return;
		this.close();
		this.onSubmit(q);
	}

	onClose(): void {
		this.contentEl.empty();
	}
}

export class CorrectionModal extends Modal {
	constructor(app: App, private readonly original: string, private readonly onSubmit: (text: string) => void) {
		super(app);
	}

	onOpen(): void {
		this.setTitle("Write a better answer");
		this.contentEl.createEl("p", { text: "Your answer is kept as the preferred one; the model learns from it at the next training run.", cls: "vault-agent-hint" });
		const input = this.contentEl.createEl("textarea", { cls: "vault-agent-correction", attr: { rows: "10" } });
		input.value = this.original;
		new Setting(this.contentEl).addButton((b) =>
			b.setButtonText("Submit").setCta().onClick(() => {
				const text = input.value.trim();
				if (!text || text === this.original.trim()) {
					new Notice("vault-agent: change the answer before submitting it");
					return;
				}
				this.close();
				this.onSubmit(text);
			}),
		);
		input.focus();
	}

	onClose(): void {
		this.contentEl.empty();
	}
}

type QueueEntry = { kind: "answer"; response: RecordedResponse } | { kind: "comparison"; comparison: PendingComparison };

/** Unrated answers and undecided comparisons, one at a time, one key per action (like the TUI). */
export class RateQueueModal extends Modal {
	private queue: QueueEntry[] = [];
	private actions = new Map<string, () => void>();

	constructor(app: App, private readonly host: PluginHost) {
		super(app);
		for (const key of ["+", "-", "e", "a", "b", "t", "s"]) {
			this.scope.register([], key, () => {
				this.actions.get(key)?.();
				return false;
			});
		}
	}

	async onOpen(): Promise<void> {
		this.setTitle("Rate recent answers");
		this.contentEl.createEl("p", { text: "Loading…", cls: "vault-agent-hint" });
		try {
			const [comparisons, responses] = await Promise.all([this.host.client.pendingComparisons(), this.host.client.unratedResponses()]);
			this.queue = [
				...comparisons.map((comparison): QueueEntry => ({ kind: "comparison", comparison })),
				...responses.map((response): QueueEntry => ({ kind: "answer", response })),
			];
		} catch (e) {
			this.contentEl.empty();
			this.contentEl.createEl("p", { text: describeError(e), cls: "vault-agent-error" });
			return;
		}
		this.show();
	}

	private show(): void {
		const el = this.contentEl;
		el.empty();
		this.actions.clear();
		const entry = this.queue[0];
		if (!entry) {
			el.createEl("p", { text: "Nothing left to rate.", cls: "vault-agent-hint" });
			return;
		}
		el.createEl("p", { text: `${this.queue.length} left`, cls: "vault-agent-hint" });
		const question = entry.kind === "answer" ? entry.response.question : entry.comparison.question;
		el.createEl("h4", { text: question });
		const row = el.createDiv({ cls: "vault-agent-actions" });
		const action = (key: string, label: string, run: () => void) => {
			this.actions.set(key, run);
			row.createEl("button", { text: `${label} (${key})` }).addEventListener("click", run);
		};
		if (entry.kind === "answer") {
			const r = entry.response;
			el.insertBefore(createDivWith(r.answer, "vault-agent-answer"), row);
			action("+", "Good", () => this.record({ path: "/feedback", body: { response_id: r.id, rating: 1 }, label: "thumbs up" }));
			action("-", "Bad", () => this.record({ path: "/feedback", body: { response_id: r.id, rating: -1 }, label: "thumbs down" }));
			action("e", "Write a better answer", () =>
				new CorrectionModal(this.app, r.answer, (text) =>
					this.record({ path: "/feedback", body: { response_id: r.id, correction: text }, label: "correction" }),
				).open(),
			);
		} else {
			const c = entry.comparison;
			const sides = el.createDiv({ cls: "vault-agent-compare" });
			el.insertBefore(sides, row);
			for (const [name, text] of [["A", c.answer_a], ["B", c.answer_b]]) {
				const col = sides.createDiv({ cls: "vault-agent-compare-side" });
				col.createEl("h5", { text: `Answer ${name}` });
				col.createDiv({ text, cls: "vault-agent-answer" });
			}
			const choose = (choice: string) => () =>
				this.record({ path: `/compare/${encodeURIComponent(c.id)}/choice`, body: { choice }, label: `choice ${choice}` });
			action("a", "A is better", choose("A"));
			action("b", "B is better", choose("B"));
			action("t", "Tie", choose("tie"));
		}
		action("s", "Skip", () => this.next());
	}

	private record(item: Parameters<PluginHost["submit"]>[0]): void {
		void this.host.submit(item);
		this.next();
	}

	private next(): void {
		this.queue.shift();
		this.show();
	}

	onClose(): void {
		this.contentEl.empty();
	}
}

function createDivWith(text: string, cls: string): HTMLElement {
	const div = createDiv({ cls });
	div.setText(text);
	return div;
}
