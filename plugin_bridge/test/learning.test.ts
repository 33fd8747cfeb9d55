// @vitest-environment happy-dom
// The learning view: its wording and numbers (learning-data.ts), the SVG chart, and the view with a
// scripted daemon (switches and "Retrain now" call the right routes, then show the new state).
import { beforeEach, describe, expect, it } from "vitest";
import { Notice, WorkspaceLeaf } from "./obsidian-mock";
import { HttpError } from "../src/api/errors";
import type { AdapterListing, AdapterVersion, TrainStatus } from "../src/api/types";
import { layout, lineChart } from "../src/chart";
import type { PluginHost } from "../src/host";
import { LearningView } from "../src/learning";
import { chartSeries, lastRunSummary, scheduleLine, servingLine, versionRows, waitingLine } from "../src/learning-data";

const version = (v: string, accuracy: number | null, extra: Partial<AdapterVersion> = {}): AdapterVersion => ({
	version: v,
	created: "2026-12-01T03:00",
	pairs: 12,
	heldout: { accuracy_before: 0.5, accuracy_after: accuracy },
	gate: { promote: true, reasons: [], accuracy, margin: 0.3, perplexity: 12, kl_to_base: 0.0213 },
	ab: null,
	servable: true,
	active: false,
	...extra,
});

const listing = (): AdapterListing => ({
	active: "v0002",
	history: ["v0001"],
	versions: [version("v0001", 0.6), version("v0002", 0.75, { active: true, ab: { version: "v0002", won: 3, lost: 1, tied: 0, decided: 4, win_rate: 0.75 } }), version("v0003", 0.55, { gate: { promote: false, reasons: ["held-out accuracy fell"], accuracy: 0.55, margin: 0.1, perplexity: 12, kl_to_base: 0.05 } })],
	serving: "v0002",
	warning: null,
});

const status = (over: Partial<TrainStatus> = {}): TrainStatus => ({
	nightly: true,
	nightly_at: "03:00",
	next_run: "2026-12-08T03:00",
	running: false,
	progress: null,
	last_run: {
		started: "2026-12-07T03:00:00",
		finished: "2026-12-07T03:04:10",
		returncode: 0,
		result: { version: "v0003", method: "dpo", pairs: { train: 12, heldout: 4 }, heldout: { accuracy_before: 0.5, accuracy_after: 0.55, margin_before: 0, margin_after: 0.1 }, gate: { promote: false, reasons: ["held-out accuracy 0.55 vs 0.75", "accuracy below the active adapter's"] } },
	},
	versions: ["v0001", "v0002", "v0003"],
	waiting: { total: 5, by_source: { comparison: 1, correction: 0, rating: 4, synthetic: 0 }, min_new_pairs: 8 },
	...over,
});

describe("learning data", () => {
	it("counts the pairs waiting by source and says what the nightly run needs", () => {
		expect(waitingLine(status().waiting)).toBe("5 pairs wait to train: 4 ratings, 1 comparison. The nightly run trains from 8.");
		expect(waitingLine({ total: 9, by_source: { rating: 9 }, min_new_pairs: 8 })).toBe("9 pairs wait to train: 9 ratings. Enough for the next nightly run.");
		expect(waitingLine({ total: 0, by_source: {}, min_new_pairs: 8 })).toBe("No pairs wait to train. The nightly run trains from 8.");
		expect(waitingLine(null)).toContain("busy");
	});

	it("says when the next run is, or what runs now", () => {
		expect(scheduleLine(status())).toMatch(/^Next nightly run: .*8 Dec, 03:00\.$/);
		expect(scheduleLine(status({ nightly: false }))).toContain("off");
		expect(scheduleLine(status({ running: true, progress: { trigger: "manual", started: "x", stage: "fitting the adapter", elapsed_s: 42 } }))).toBe("Retraining now: fitting the adapter (42 s).");
	});

	it("sums up the last run: method, pairs, held-out before -> after, the gate's verdict", () => {
		const s = lastRunSummary(status().last_run)!;
		expect(s.outcome).toBe("Trained v0003.");
		expect(s.details).toEqual(["DPO on 12 pairs, 4 held out", "held-out accuracy 50% → 55%", "held-out margin 0.000 → 0.100", "gate: kept out (accuracy below the active adapter's)"]);
		expect(lastRunSummary({ started: "a", finished: "b", returncode: -9, error: "retrain was killed by SIGKILL" })!.outcome).toBe("Failed: retrain was killed by SIGKILL");
		expect(lastRunSummary({ started: "a", finished: "b", returncode: 0, result: { due: false, reason: "3 new pairs, 8 needed" } })!.outcome).toBe("Not due: 3 new pairs, 8 needed");
		expect(lastRunSummary(null)).toBeNull();
	});

	it("lists versions newest first with held-out accuracy, KL and A/B win rate", () => {
		const rows = versionRows(listing());
		expect(rows.map((r) => [r.version, r.accuracy, r.kl, r.winRate, r.verdict, r.active])).toEqual([
			["v0003", 0.55, "0.050", "no A/B yet", "kept out by the gate", false],
			["v0002", 0.75, "0.021", "75% of 4", "passed the gate", true],
			["v0001", 0.6, "0.021", "no A/B yet", "passed the gate", false],
		]);
		expect(servingLine(listing())).toBe("Serving v0002.");
		expect(servingLine({ ...listing(), serving: null })).toBe("Serving the base model, no adapter.");
	});

	it("charts accuracy per version oldest first, margin when no version has an accuracy", () => {
		expect(chartSeries(listing())).toEqual({ metric: "accuracy", points: [{ label: "v0001", value: 0.6, active: false }, { label: "v0002", value: 0.75, active: true }, { label: "v0003", value: 0.55, active: false }] });
		const noAcc = { ...listing(), versions: [version("v0001", null, { gate: null, heldout: { margin_after: 0.2 } })] };
		expect(chartSeries(noAcc)).toEqual({ metric: "margin", points: [{ label: "v0001", value: 0.2, active: false }] });
	});
});

describe("chart", () => {
	it("puts higher values higher and spreads versions left to right", () => {
		const pts = chartSeries(listing()).points;
		const { xy } = layout(pts, { width: 320, height: 140, yRange: [0, 1] });
		expect(xy[0][0]).toBeLessThan(xy[1][0]);
		expect(xy[1][1]).toBeLessThan(xy[0][1]); // 0.75 above 0.6 (SVG y grows downwards)
		const svg = lineChart(createDiv(), pts, { title: "Held-out accuracy", yRange: [0, 1] });
		expect(svg.getAttribute("aria-label")).toBe("Held-out accuracy");
		expect(Array.from(svg.querySelectorAll("circle")).map((c) => c.querySelector("title")!.textContent)).toEqual(["v0001: 0.60", "v0002: 0.75 (active)", "v0003: 0.55"]);
		expect(svg.querySelectorAll("circle.is-active")).toHaveLength(1);
	});
});

function fakeDaemon(over: Record<string, unknown> = {}) {
	const calls: string[] = [];
	const state = { listing: listing(), status: status() };
	const client = {
		trainStatus: async () => state.status,
		adapterListing: async () => state.listing,
		trainingPlot: async () => null,
		rollbackAdapter: async () => {
			calls.push("rollback");
			state.listing = { ...state.listing, active: "v0001", serving: "v0001", versions: state.listing.versions.map((v) => ({ ...v, active: v.version === "v0001" })) };
			return { active: "v0001", previous: "v0002", swap_ms: 1 };
		},
		adaptersOff: async () => (calls.push("off"), { active: null, previous: "v0002", swap_ms: 1 }),
		activateAdapter: async (v: string) => (calls.push(`activate ${v}`), { active: v, previous: "v0002", swap_ms: 1 }),
		retrainNow: async (force = false) => {
			calls.push(force ? "retrain force" : "retrain");
			state.status = status({ running: true, progress: { trigger: "manual", started: "x", stage: "starting", elapsed_s: 0 } });
			return { started: true, progress: state.status.progress };
		},
		...over,
	};
	const host = { client, submit: async () => undefined, openCitation: () => undefined, indexState: async () => null } as unknown as PluginHost;
	return { host, calls, state };
}

async function open(host: PluginHost) {
	const view = new LearningView(new WorkspaceLeaf() as never, host);
	await view.onOpen();
	document.body.appendChild(view.containerEl);
	return view;
}

const label = (view: LearningView, l: string) => view.contentEl.querySelector(`[aria-label="${l}"]`) as HTMLButtonElement;
const settle = () => new Promise((r) => setTimeout(r, 0));

beforeEach(() => {
	Notice.messages = [];
	document.body.empty();
});

describe("learning view", () => {
	it("shows waiting pairs, schedule, last run, versions and the chart", async () => {
		const view = await open(fakeDaemon().host);
		const text = view.contentEl.textContent!;
		expect(text).toContain("5 pairs wait to train: 4 ratings, 1 comparison");
		expect(text).toContain("Next nightly run:");
		expect(text).toContain("Trained v0003.");
		expect(text).toContain("gate: kept out (accuracy below the active adapter's)");
		const rows = Array.from(view.contentEl.querySelectorAll("tr[data-version]")) as HTMLElement[];
		expect(rows.map((r) => r.dataset.version)).toEqual(["v0003", "v0002", "v0001"]);
		expect(rows[1].textContent).toContain("v0002 (active)");
		expect(rows[1].textContent).toContain("75% of 4");
		expect(view.contentEl.querySelectorAll("svg.vault-agent-chart circle")).toHaveLength(3);
		const unlabeled = Array.from(view.contentEl.querySelectorAll("button")).filter((b) => !b.getAttribute("aria-label"));
		expect(unlabeled).toEqual([]);
	});

	it("rolls back through the daemon and shows the new active version", async () => {
		const t = fakeDaemon();
		const view = await open(t.host);
		label(view, "Serve the version served before this one").click();
		await settle();
		await settle();
		expect(t.calls).toEqual(["rollback"]);
		expect(Notice.messages).toEqual(["vault-agent: Now serving v0001"]);
		expect((view.contentEl.querySelector("tr.is-active") as HTMLElement).dataset.version).toBe("v0001");
	});

	it("activates a chosen version", async () => {
		const t = fakeDaemon();
		const view = await open(t.host);
		label(view, "Serve v0003").click();
		await settle();
		expect(t.calls).toEqual(["activate v0003"]);
	});

	it("starts a retrain, then shows it running with Retrain now disabled", async () => {
		const t = fakeDaemon();
		const view = await open(t.host);
		label(view, "Start the nightly retrain now").click();
		await settle();
		await settle();
		expect(t.calls).toEqual(["retrain"]);
		expect(view.contentEl.textContent).toContain("Retraining now: starting (0 s).");
		expect(label(view, "Start the nightly retrain now").disabled).toBe(true);
		await view.onClose();
	});

	it("offers to train anyway after a run that was not due", async () => {
		const t = fakeDaemon();
		t.state.status = status({ last_run: { started: "a", finished: "2026-12-07T03:00:01", returncode: 0, result: { due: false, reason: "3 new pairs, 8 needed" } } });
		const view = await open(t.host);
		expect(view.contentEl.textContent).toContain("Not due: 3 new pairs, 8 needed");
		label(view, "Retrain now even with little new feedback").click();
		await settle();
		expect(t.calls).toEqual(["retrain force"]);
		await view.onClose();
	});

	it("says why a retrain did not start (one already runs)", async () => {
		const t = fakeDaemon({ retrainNow: async () => { throw new HttpError(409, "a retrain is already running; wait for it to finish"); } });
		const view = await open(t.host);
		label(view, "Start the nightly retrain now").click();
		await settle();
		expect(Notice.messages[0]).toContain("already running");
	});

	it("says so when the daemon cannot be reached", async () => {
		const t = fakeDaemon({ trainStatus: async () => { throw new Error("connection refused"); } });
		const view = await open(t.host);
		expect(view.contentEl.querySelector(".vault-agent-error")!.textContent).toContain("connection refused");
	});
});
