// The "Learning" view: what the ratings are turning into. Pairs waiting to train, the next and the
// last retrain, every adapter version with its held-out and A/B figures, a chart of held-out
// accuracy per version, the last version's training curve, and the switches (activate, roll back,
// off, retrain now) through the daemon's /adapters and /train routes.

import { ItemView, Notice, WorkspaceLeaf, setIcon } from "obsidian";
import type { AdapterListing, TrainStatus } from "./api/types";
import { lineChart } from "./chart";
import { describeError } from "./describe";
import type { PluginHost } from "./host";
import { chartSeries, fixed, lastRunSummary, percent, scheduleLine, servingLine, versionRows, waitingLine } from "./learning-data";

export const LEARNING_VIEW_TYPE = "vault-agent-learning";

/** How often the view polls while a retrain runs. */
export const POLL_WHILE_RUNNING_MS = 3_000;

function iconButton(parent: HTMLElement, icon: string, label: string, text?: string): HTMLButtonElement {
	const b = parent.createEl("button", { cls: "vault-agent-icon-button", attr: { "aria-label": label } });
	setIcon(b.createSpan({ cls: "vault-agent-button-icon" }), icon);
	if (text) b.createSpan({ text });
	return b;
}

export class LearningView extends ItemView {
	private bodyEl!: HTMLElement;
	private poll: number | null = null;
	private plotUrl: string | null = null;
	/** Set by each refresh: what the view shows (tests and the e2e harness read it). */
	shown: { status: TrainStatus | null; listing: AdapterListing | null } = { status: null, listing: null };

	constructor(leaf: WorkspaceLeaf, private readonly host: PluginHost) {
		super(leaf);
	}

	getViewType(): string {
		return LEARNING_VIEW_TYPE;
	}

	getDisplayText(): string {
		return "Learning";
	}

	getIcon(): string {
		return "graduation-cap";
	}

	async onOpen(): Promise<void> {
		const root = this.contentEl;
		root.empty();
		root.addClass("vault-agent-view", "vault-agent-learning");
		const head = root.createDiv({ cls: "vault-agent-learning-head" });
		head.createEl("h4", { text: "Learning" });
		const refresh = iconButton(head, "refresh-cw", "Refresh");
		this.registerDomEvent(refresh, "click", () => void this.refresh());
		root.createDiv({
			cls: "vault-agent-hint",
			text: "Your ratings, corrections and A/B choices become training pairs. A retrain turns them into a new adapter version, served only if it beats the current one on held-out pairs.",
		});
		this.bodyEl = root.createDiv({ cls: "vault-agent-learning-body" });
		await this.refresh();
	}

	async onClose(): Promise<void> {
		this.stopPolling();
		if (this.plotUrl) URL.revokeObjectURL(this.plotUrl);
	}

	private stopPolling(): void {
		if (this.poll !== null) window.clearInterval(this.poll);
		this.poll = null;
	}

	/** Reads /train/status and /adapters and redraws; polls while a retrain runs. */
	async refresh(): Promise<void> {
		let status: TrainStatus | null = null;
		let listing: AdapterListing | null = null;
		try {
			[status, listing] = await Promise.all([this.host.client.trainStatus(), this.host.client.adapterListing()]);
		} catch (e) {
			this.bodyEl.empty();
			this.bodyEl.createDiv({ cls: "vault-agent-error", text: describeError(e) });
			this.stopPolling();
			return;
		}
		this.shown = { status, listing };
		this.draw(status, listing);
		if (status.running && this.poll === null) {
			this.poll = this.registerInterval(window.setInterval(() => void this.refresh(), POLL_WHILE_RUNNING_MS));
		} else if (!status.running) this.stopPolling();
	}

	private section(title: string): HTMLElement {
		const s = this.bodyEl.createDiv({ cls: "vault-agent-learning-section" });
		s.createEl("h5", { text: title });
		return s;
	}

	private draw(status: TrainStatus, listing: AdapterListing): void {
		this.bodyEl.empty();
		this.section("Waiting to train").createDiv({ cls: "vault-agent-waiting", text: waitingLine(status.waiting) });

		const schedule = this.section("Retraining");
		schedule.createDiv({ cls: "vault-agent-schedule", text: scheduleLine(status) });
		const run = iconButton(schedule, "play", "Start the nightly retrain now", "Retrain now");
		run.disabled = status.running;
		this.registerDomEvent(run, "click", () => void this.act(() => this.host.client.retrainNow(), () => "Retrain started"));
		if (status.last_run?.result?.due === false && !status.running) {
			// the last run found too little new feedback: offer to train on what there is
			const force = iconButton(schedule, "play", "Retrain now even with little new feedback", "Train anyway");
			this.registerDomEvent(force, "click", () => void this.act(() => this.host.client.retrainNow(true), () => "Retrain started"));
		}

		const last = lastRunSummary(status.last_run);
		const lastEl = this.section("Last run");
		if (!last) lastEl.createDiv({ cls: "vault-agent-hint", text: "No retrain has run yet." });
		else {
			lastEl.createDiv({ cls: `vault-agent-last-run${last.ok ? "" : " vault-agent-error"}`, text: `${last.when}: ${last.outcome}` });
			const ul = lastEl.createEl("ul", { cls: "vault-agent-last-run-details" });
			for (const d of last.details) ul.createEl("li", { text: d });
		}

		this.drawVersions(listing);
	}

	private drawVersions(listing: AdapterListing): void {
		const s = this.section("Versions");
		s.createDiv({ cls: "vault-agent-serving", text: servingLine(listing) });
		if (listing.warning) s.createDiv({ cls: "vault-agent-error", text: listing.warning });
		const switches = s.createDiv({ cls: "vault-agent-actions" });
		const back = iconButton(switches, "undo-2", "Serve the version served before this one", "Roll back");
		back.disabled = !listing.active;
		this.registerDomEvent(back, "click", () => void this.act(() => this.host.client.rollbackAdapter(), (r) => `Now serving ${r.active ?? "the base model"}`));
		const off = iconButton(switches, "power-off", "Serve the plain base model", "Adapters off");
		off.disabled = !listing.active;
		this.registerDomEvent(off, "click", () => void this.act(() => this.host.client.adaptersOff(), () => "Now serving the base model"));

		if (!listing.versions.length) {
			s.createDiv({ cls: "vault-agent-hint", text: "No adapter version yet: the first retrain makes one." });
			return;
		}
		const series = chartSeries(listing);
		if (series.points.length) {
			const accuracy = series.metric === "accuracy";
			s.createDiv({ cls: "vault-agent-hint", text: accuracy ? "Held-out preference accuracy per version" : "Held-out margin per version (nats)" });
			lineChart(s.createDiv({ cls: "vault-agent-chart-box" }), series.points, {
				title: accuracy ? "Held-out accuracy per adapter version" : "Held-out margin per adapter version",
				yRange: accuracy ? [0, 1] : undefined,
				format: accuracy ? percent : (v) => fixed(v, 2),
			});
		}

		const table = s.createEl("table", { cls: "vault-agent-versions" });
		const head = table.createEl("thead").createEl("tr");
		for (const h of ["Version", "Pairs", "Held-out", "KL", "A/B wins", ""]) head.createEl("th", { text: h });
		const body = table.createEl("tbody");
		for (const row of versionRows(listing)) {
			const tr = body.createEl("tr", { cls: row.active ? "is-active" : "" });
			tr.dataset.version = row.version;
			const name = tr.createEl("td");
			name.createDiv({ text: row.version + (row.active ? " (active)" : ""), cls: "vault-agent-version-name" });
			name.createDiv({ text: `${row.created} · ${row.verdict}`, cls: "vault-agent-hint" });
			tr.createEl("td", { text: row.pairs });
			tr.createEl("td", { text: row.accuracy !== null ? percent(row.accuracy) : fixed(row.margin, 2) });
			tr.createEl("td", { text: row.kl });
			tr.createEl("td", { text: row.winRate });
			const cell = tr.createEl("td");
			if (!row.active) {
				const use = iconButton(cell, "check", `Serve ${row.version}`, "Use");
				use.disabled = !row.servable;
				this.registerDomEvent(use, "click", () => void this.act(() => this.host.client.activateAdapter(row.version), () => `Now serving ${row.version}`));
			}
		}
		void this.drawPlot(s, listing.active ?? listing.versions[listing.versions.length - 1].version);
	}

	/** The version's training curve (loss and reward margin per step), when the retrain drew one. */
	private async drawPlot(parent: HTMLElement, version: string): Promise<void> {
		const blob = await this.host.client.trainingPlot(version).catch(() => null);
		if (!blob) return;
		if (this.plotUrl) URL.revokeObjectURL(this.plotUrl);
		this.plotUrl = URL.createObjectURL(blob);
		const details = parent.createEl("details", { cls: "vault-agent-plot" });
		details.createEl("summary", { text: `Training curve of ${version}` });
		details.createEl("img", { attr: { src: this.plotUrl, alt: `Loss and reward margin per training step of ${version}` } });
	}

	/** A switch or a retrain: say what happened (or why not), then show the new state. */
	private async act<T>(call: () => Promise<T>, done: (result: T) => string): Promise<void> {
		try {
			const result = await call();
			new Notice(`vault-agent: ${done(result)}`);
		} catch (e) {
			new Notice(describeError(e));
		}
		await this.refresh();
	}
}
