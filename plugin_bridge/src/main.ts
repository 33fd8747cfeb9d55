// The plugin: wires the HTTP client, the outbox, the side view, commands, settings and status bar.

import { MarkdownView, Notice, Plugin, WorkspaceLeaf, requestUrl } from "obsidian";
import { VaultAgentClient, newKey } from "./api/client";
import type { RequestFn } from "./api/http";
import type { Citation, IndexState, OutboxItem } from "./api/types";
import { describeError } from "./describe";
import type { PluginHost, Submission } from "./host";
import { QuestionModal, RateQueueModal } from "./modals";
import { Outbox, OutboxResult } from "./outbox";
import { noteQuestion } from "./question";
import { linkText } from "./render";
import { DEFAULT_DATA, PluginData, SettingsHost, VaultAgentSettingTab } from "./settings";
import { readStatus, showStatus } from "./statusbar";
import { AskView, VIEW_TYPE } from "./view";
import { LEARNING_VIEW_TYPE, LearningView } from "./learning";

const STATUS_EVERY_MS = 30_000;

/** Obsidian's requestUrl (no CORS, no Origin), reporting every status instead of throwing. */
const obsidianRequest: RequestFn = async (req) => {
	const r = await requestUrl({ url: req.url, method: req.method, headers: req.headers, body: req.body, throw: false });
	return { status: r.status, headers: r.headers, text: r.text };
};

/** data.json as saved (or hand-edited): unknown or malformed fields fall back to the defaults. */
export function readData(saved: unknown): PluginData {
	const d = (saved && typeof saved === "object" ? saved : {}) as Partial<Record<keyof PluginData, unknown>>;
	return {
		...(d as object),
		daemonUrl: typeof d.daemonUrl === "string" && d.daemonUrl.trim() ? d.daemonUrl.trim() : DEFAULT_DATA.daemonUrl,
		token: typeof d.token === "string" ? d.token.trim() : "",
		outbox: Array.isArray(d.outbox) ? d.outbox.filter((i): i is OutboxItem => !!i && typeof i.key === "string" && typeof i.path === "string") : [],
	};
}

export default class VaultAgentPlugin extends Plugin implements PluginHost, SettingsHost {
	data: PluginData = { ...DEFAULT_DATA, outbox: [] };
	client!: VaultAgentClient;
	outbox!: Outbox;
	private statusEl!: HTMLElement;

	async onload(): Promise<void> {
		this.data = readData(await this.loadData());
		this.client = new VaultAgentClient(() => ({ url: this.data.daemonUrl, token: this.data.token }), {
			request: obsidianRequest,
			// Streaming needs fetch; the daemon grants CORS to app://obsidian.md.
			fetch: (url, init) => fetch(url, init),
			onWait: (seconds, error) => new Notice(`vault-agent: ${error.detail}; trying again in ${seconds} s`),
		});
		this.outbox = new Outbox(this.data.outbox, (item) => this.client.deliver(item), async (items) => {
			this.data.outbox = [...items];
			await this.persist();
		});

		this.registerView(VIEW_TYPE, (leaf) => new AskView(leaf, this));
		this.addRibbonIcon("message-square", "Ask your vault", () => void this.openView());
		this.registerView(LEARNING_VIEW_TYPE, (leaf) => new LearningView(leaf, this));
		this.addRibbonIcon("graduation-cap", "Vault-agent: what your ratings taught", () => void this.openLearning());
		this.addCommand({ id: "ask-vault", name: "Ask the vault", callback: () => void this.openView().then((v) => v?.focusQuestion()) });
		this.addCommand({ id: "ask-about-note", name: "Ask about the current note or selection", callback: () => this.askAboutNote() });
		this.addCommand({
			id: "compare-answers",
			name: "Compare two answers",
			callback: () => new QuestionModal(this.app, "Compare two answers", (q) => void this.openView().then((v) => v?.compare(q))).open(),
		});
		this.addCommand({ id: "rate-recent-answers", name: "Rate recent answers", callback: () => new RateQueueModal(this.app, this).open() });
		this.addCommand({ id: "stop-answer", name: "Stop the answer", callback: () => this.views().forEach((v) => v.stop()) });
		this.addCommand({ id: "open-learning", name: "Show what the assistant learned (adapters, retraining)", callback: () => void this.openLearning() });
		this.addSettingTab(new VaultAgentSettingTab(this.app, this, this));

		this.statusEl = this.addStatusBarItem();
		this.statusEl.addClass("vault-agent-status");
		this.statusEl.setText("vault-agent: …");
		this.registerInterval(window.setInterval(() => void this.tick(), STATUS_EVERY_MS));
		this.app.workspace.onLayoutReady(() => void this.tick());
	}

	onunload(): void {
		this.views().forEach((v) => v.stop());
	}

	async persist(): Promise<void> {
		await this.saveData(this.data);
	}

	testConnection() {
		return this.client.testConnection();
	}

	listModels() {
		return this.client.listModels();
	}

	useModel(name: string) {
		return this.client.useModel(name);
	}

	/** Status bar refresh; when the daemon is reachable, deliver what waited in the outbox. */
	async tick(): Promise<void> {
		const snap = await readStatus(this.client);
		showStatus(this.statusEl, snap);
		if (snap.reachable && this.outbox.pending.length) {
			const result = await this.outbox.flush();
			if (result.sent) new Notice(`vault-agent: sent ${result.sent} queued rating${result.sent > 1 ? "s" : ""}`);
			this.reportDropped(result);
		}
	}

	async submit(s: Submission): Promise<void> {
		const item: OutboxItem = { ...s, key: newKey(), queuedAt: Date.now() };
		const result = await this.outbox.submit(item);
		if (result.blocked) {
			new Notice(`${describeError(result.blocked)}\nYour ${item.label} is saved and will be sent when the daemon is back (${result.pending} waiting).`);
		} else if (!result.dropped.some((d) => d.item.key === item.key)) {
			new Notice(`vault-agent: ${item.label} recorded`);
		}
		this.reportDropped(result);
	}

	private reportDropped(result: OutboxResult): void {
		for (const d of result.dropped) new Notice(`vault-agent: ${d.item.label} not recorded: ${d.reason}`);
	}

	openCitation(c: Citation): void {
		void this.app.workspace.openLinkText(linkText(c), "", false);
	}

	async indexState(): Promise<IndexState | null> {
		try {
			return (await this.client.status()).index;
		} catch {
			return null;
		}
	}

	private views(): AskView[] {
		return this.app.workspace.getLeavesOfType(VIEW_TYPE).map((l) => l.view).filter((v): v is AskView => v instanceof AskView);
	}

	async openView(): Promise<AskView | null> {
		const { workspace } = this.app;
		let leaf: WorkspaceLeaf | null = workspace.getLeavesOfType(VIEW_TYPE)[0] ?? null;
		if (!leaf) {
			leaf = workspace.getRightLeaf(false);
			if (!leaf) return null;
			await leaf.setViewState({ type: VIEW_TYPE, active: true });
		}
		await workspace.revealLeaf(leaf);
		return leaf.view instanceof AskView ? leaf.view : null;
	}

	/** The learning view, in the right sidebar (opened once, then revealed and refreshed). */
	async openLearning(): Promise<LearningView | null> {
		const { workspace } = this.app;
		let leaf: WorkspaceLeaf | null = workspace.getLeavesOfType(LEARNING_VIEW_TYPE)[0] ?? null;
		const existed = !!leaf;
		if (!leaf) {
			leaf = workspace.getRightLeaf(false);
			if (!leaf) return null;
			await leaf.setViewState({ type: LEARNING_VIEW_TYPE, active: true });
		}
		await workspace.revealLeaf(leaf);
		const view = leaf.view instanceof LearningView ? leaf.view : null;
		if (existed) await view?.refresh();
		return view;
	}

	private askAboutNote(): void {
		const file = this.app.workspace.getActiveFile();
		if (!file) {
			new Notice("vault-agent: open a note first");
			return;
		}
		const selection = this.app.workspace.getActiveViewOfType(MarkdownView)?.editor.getSelection() ?? "";
		const hint = selection ? `About the selected passage of ${file.basename}` : `About ${file.basename}`;
		new QuestionModal(this.app, "Ask about this note", (q) => void this.openView().then((v) => v?.ask(noteQuestion(q, file.path, selection))), hint).open();
	}
}
