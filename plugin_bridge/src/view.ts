// The side view: ask, watch the answer stream in, open citations, rate, correct, compare.

import { Component, ItemView, Notice, WorkspaceLeaf, setIcon } from "obsidian";
import { Aborted } from "./api/errors";
import type { Answer, Comparison, IndexState } from "./api/types";
import { describeError } from "./describe";
import type { PluginHost } from "./host";
import { CorrectionModal } from "./modals";
import { AnswerRenderer, ThrottledRender, answeredBy, renderCitations } from "./render";

/** A streaming answer is re-rendered as markdown at most this often. */
export const STREAM_RENDER_MS = 250;

/** A button with an Obsidian icon and its words as aria-label (what Obsidian shows as a tooltip). */
function iconButton(parent: HTMLElement, icon: string, label: string, cls = ""): HTMLButtonElement {
	const b = parent.createEl("button", { cls: `clickable-icon ${cls}`.trim(), attr: { "aria-label": label } });
	setIcon(b, icon);
	return b;
}

export const VIEW_TYPE = "vault-agent-ask";

export class AskView extends ItemView {
	private input!: HTMLTextAreaElement;
	private askButton!: HTMLButtonElement;
	private compareButton!: HTMLButtonElement;
	private stopButton!: HTMLButtonElement;
	private syncEl!: HTMLElement;
	private resultEl!: HTMLElement;
	private running: AbortController | null = null;
	/** Owns what the shown result rendered (markdown's child components); replaced with the result. */
	private resultOwner: Component | null = null;

	constructor(leaf: WorkspaceLeaf, private readonly host: PluginHost) {
		super(leaf);
	}

	getViewType(): string {
		return VIEW_TYPE;
	}

	getDisplayText(): string {
		return "Ask your vault";
	}

	getIcon(): string {
		return "message-square";
	}

	async onOpen(): Promise<void> {
		const root = this.contentEl;
		root.empty();
		root.addClass("vault-agent-view");
		const form = root.createDiv({ cls: "vault-agent-form" });
		this.input = form.createEl("textarea", { cls: "vault-agent-question", attr: { rows: "3", placeholder: "Ask your vault…", "aria-label": "Question" } });
		const buttons = form.createDiv({ cls: "vault-agent-buttons" });
		this.askButton = buttons.createEl("button", { text: "Ask", cls: "mod-cta", attr: { "aria-label": "Ask (Ctrl/Cmd+Enter)" } });
		this.compareButton = buttons.createEl("button", { text: "Compare", attr: { "aria-label": "Get two answers and pick the better one" } });
		setIcon(this.compareButton.createSpan({ cls: "vault-agent-button-icon" }), "columns-2");
		this.stopButton = buttons.createEl("button", { text: "Stop", attr: { "aria-label": "Stop the answer" } });
		this.stopButton.disabled = true;
		this.syncEl = root.createDiv({ cls: "vault-agent-sync" });
		this.syncEl.hide();
		this.resultEl = root.createDiv({ cls: "vault-agent-result" });

		this.registerDomEvent(this.askButton, "click", () => void this.ask(this.input.value));
		this.registerDomEvent(this.compareButton, "click", () => void this.compare(this.input.value));
		this.registerDomEvent(this.stopButton, "click", () => this.stop());
		this.registerDomEvent(this.input, "keydown", (ev: KeyboardEvent) => {
			if (ev.key === "Enter" && (ev.metaKey || ev.ctrlKey)) {
				ev.preventDefault();
				void this.ask(this.input.value);
			}
		});
		void this.refreshSync();
	}

	async onClose(): Promise<void> {
		this.stop(); // closing the view stops generation on the daemon too
	}

	focusQuestion(question?: string): void {
		if (question !== undefined) this.input.value = question;
		this.input.focus();
	}

	stop(): void {
		this.running?.abort();
	}

	private begin(): AbortController {
		this.running?.abort();
		const controller = new AbortController();
		this.running = controller;
		this.askButton.disabled = this.compareButton.disabled = true;
		this.stopButton.disabled = false;
		return controller;
	}

	/** Clears the result area and what its rendering loaded; returns the new result's owner. */
	private newResult(): Component {
		this.resultEl.empty();
		if (this.resultOwner) this.removeChild(this.resultOwner);
		this.resultOwner = this.addChild(new Component());
		return this.resultOwner;
	}

	/** A request that failed or was stopped: say so in its status line, and in a notice unless the user stopped it. */
	private failed(status: HTMLElement, e: unknown, stopped: string): null {
		if (e instanceof Aborted) status.setText(stopped);
		else {
			status.setText(describeError(e));
			status.addClass("vault-agent-error");
			new Notice(describeError(e));
		}
		return null;
	}

	private end(controller: AbortController): void {
		if (this.running !== controller) return;
		this.running = null;
		this.askButton.disabled = this.compareButton.disabled = false;
		this.stopButton.disabled = true;
	}

	/** Ask and stream the answer in; resolves when it is complete, stopped or failed. */
	async ask(question: string): Promise<Answer | null> {
		question = question.trim();
		if (!question) return null;
		this.input.value = question;
		const controller = this.begin();
		const owner = this.newResult();
		const block = this.resultEl.createDiv({ cls: "vault-agent-answer-block" });
		const textEl = block.createDiv({ cls: "vault-agent-answer markdown-rendered is-streaming" });
		const status = block.createDiv({ text: "Thinking…", cls: "vault-agent-hint" });
		const renderer = new AnswerRenderer(this.app, owner);
		const live = new ThrottledRender((md) => renderer.render(textEl, md, [], () => undefined), STREAM_RENDER_MS);
		let text = "";
		void this.refreshSync();
		try {
			const answer = await this.host.client.askStream(
				question,
				(piece) => {
					if (!text) status.setText("");
					text += piece;
					live.push(text);
				},
				controller.signal,
			);
			live.cancel();
			await live.flush(); // a render in progress ends before the final one replaces it
			status.remove();
			await this.renderAnswer(block, textEl, answer, renderer);
			if (answer.index_state) this.showSync(answer.index_state);
			return answer;
		} catch (e) {
			live.cancel();
			textEl.removeClass("is-streaming");
			return this.failed(status, e, text ? "Stopped." : "Stopped before the answer began.");
		} finally {
			this.end(controller);
		}
	}

	private async renderAnswer(block: HTMLElement, textEl: HTMLElement, answer: Answer, renderer: AnswerRenderer): Promise<void> {
		textEl.removeClass("is-streaming");
		const sources = block.createDiv({ cls: "vault-agent-sources" });
		const items = renderCitations(sources, answer.citations, { open: (c) => this.host.openCitation(c) });
		await renderer.render(textEl, answer.answer, answer.citations, (n) => {
			const li = items.get(n);
			if (!li) return;
			li.scrollIntoView({ block: "nearest" });
			for (const other of items.values()) other.removeClass("is-highlighted");
			li.addClass("is-highlighted");
		});
		this.renderProvenance(block, answer);
		this.renderRating(block, answer);
	}

	/** Which adapter wrote the answer, and that rating it trains the next one. */
	private renderProvenance(block: HTMLElement, answer: Answer): void {
		const line = block.createDiv({ cls: "vault-agent-provenance" });
		line.createSpan({ text: answeredBy(answer.adapter_version), cls: "vault-agent-version" });
		line.createSpan({ text: " · your ratings train the next version", cls: "vault-agent-hint" });
	}

	private renderRating(block: HTMLElement, answer: Answer): void {
		const row = block.createDiv({ cls: "vault-agent-actions" });
		const up = iconButton(row, "thumbs-up", "Good answer", "vault-agent-thumb");
		const down = iconButton(row, "thumbs-down", "Bad answer", "vault-agent-thumb");
		const better = iconButton(row, "pencil", "Write a better answer");
		const thumb = (button: HTMLButtonElement, rating: 1 | -1) => {
			up.removeClass("is-active");
			down.removeClass("is-active");
			button.addClass("is-active");
			void this.host.submit({ path: "/feedback", body: { response_id: answer.response_id, rating }, label: rating > 0 ? "thumbs up" : "thumbs down" });
		};
		this.registerDomEvent(up, "click", () => thumb(up, 1));
		this.registerDomEvent(down, "click", () => thumb(down, -1));
		this.registerDomEvent(better, "click", () =>
			new CorrectionModal(this.app, answer.answer, (text) =>
				void this.host.submit({ path: "/feedback", body: { response_id: answer.response_id, correction: text }, label: "correction" }),
			).open(),
		);
	}

	/** Two answers side by side; pick A, B or tie. */
	async compare(question: string): Promise<Comparison | null> {
		question = question.trim();
		if (!question) return null;
		this.input.value = question;
		const controller = this.begin();
		const owner = this.newResult();
		const status = this.resultEl.createDiv({ text: "Writing two answers…", cls: "vault-agent-hint" });
		try {
			const cmp = await this.host.client.compare(question, controller.signal);
			status.remove();
			const sides = this.resultEl.createDiv({ cls: "vault-agent-compare" });
			for (const [name, answer] of [["A", cmp.a], ["B", cmp.b]] as const) {
				const col = sides.createDiv({ cls: "vault-agent-compare-side" });
				col.createEl("h5", { text: `Answer ${name}` });
				const textEl = col.createDiv({ cls: "vault-agent-answer markdown-rendered" });
				const items = renderCitations(col.createDiv({ cls: "vault-agent-sources" }), answer.citations, { open: (c) => this.host.openCitation(c) });
				await new AnswerRenderer(this.app, owner).render(textEl, answer.answer, answer.citations, (n) => items.get(n)?.scrollIntoView({ block: "nearest" }));
			}
			const row = this.resultEl.createDiv({ cls: "vault-agent-actions" });
			const buttons: HTMLButtonElement[] = [];
			for (const [choice, label] of [["A", "A is better"], ["B", "B is better"], ["tie", "Tie"]] as const) {
				const b = row.createEl("button", { text: label, attr: { "aria-label": label === "Tie" ? "Both are as good" : `Answer ${label}` } });
				buttons.push(b);
				this.registerDomEvent(b, "click", () => {
					for (const other of buttons) other.removeClass("is-active");
					b.addClass("is-active");
					void this.host.submit({ path: `/compare/${encodeURIComponent(cmp.comparison_id)}/choice`, body: { choice }, label: `choice ${choice}` });
				});
			}
			return cmp;
		} catch (e) {
			return this.failed(status, e, "Stopped.");
		} finally {
			this.end(controller);
		}
	}

	async refreshSync(): Promise<void> {
		const state = await this.host.indexState().catch(() => null);
		if (state) this.showSync(state);
	}

	private showSync(state: IndexState): void {
		if (state.notes_indexed >= state.notes_total) {
			this.syncEl.hide();
			return;
		}
		this.syncEl.setText(`Still indexing: ${state.notes_indexed} of ${state.notes_total} notes indexed. Answers may miss notes not indexed yet.`);
		this.syncEl.show();
	}
}
