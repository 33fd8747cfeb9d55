// What the learning view says, shaped from GET /train/status and GET /adapters (no DOM here, so
// the wording and the numbers are tested on their own).

import type { AdapterListing, AdapterVersion, LastRun, TrainStatus, WinRate } from "./api/types";

const SOURCE_ORDER = ["rating", "correction", "comparison", "synthetic"];

export function percent(x: number | null | undefined): string {
	return typeof x === "number" && Number.isFinite(x) ? `${Math.round(x * 100)}%` : "–";
}

export function fixed(x: number | null | undefined, digits = 3): string {
	return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

/** "Mon 7 Dec, 03:00" from the daemon's local ISO time (no time zone: it is the machine's). */
export function when(iso: string | null | undefined): string {
	if (!iso) return "–";
	const d = new Date(iso);
	if (Number.isNaN(d.getTime())) return iso;
	const day = d.toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short" });
	const time = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
	return `${day}, ${time}`;
}

/** "12 pairs wait to train: 7 ratings, 5 corrections. The nightly run trains from 8." */
export function waitingLine(waiting: TrainStatus["waiting"]): string {
	if (!waiting) return "The preference log is busy; pairs waiting are not known right now.";
	const parts = SOURCE_ORDER.concat(Object.keys(waiting.by_source).filter((s) => !SOURCE_ORDER.includes(s)))
		.filter((s) => (waiting.by_source[s] ?? 0) > 0)
		.map((s) => `${waiting.by_source[s]} ${plural(s, waiting.by_source[s])}`);
	const head = waiting.total === 0 ? "No pairs wait to train" : `${waiting.total} ${waiting.total === 1 ? "pair waits" : "pairs wait"} to train: ${parts.join(", ")}`;
	const need = waiting.total >= waiting.min_new_pairs ? "enough for the next nightly run" : `the nightly run trains from ${waiting.min_new_pairs}`;
	return `${head}. ${capitalize(need)}.`;
}

function plural(source: string, n: number): string {
	const word = source === "synthetic" ? "generated" : source;
	return n === 1 || word === "generated" ? word : `${word}s`;
}

function capitalize(s: string): string {
	return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The schedule line: running now (stage, seconds), next nightly run, or off. */
export function scheduleLine(status: TrainStatus): string {
	if (status.running) {
		const p = status.progress;
		if (!p) return "A retrain is running (started outside the daemon).";
		const who = p.trigger === "manual" ? "Retraining now" : "Nightly retrain running";
		return `${who}: ${p.stage}${p.elapsed_s !== undefined ? ` (${p.elapsed_s} s)` : ""}.`;
	}
	if (!status.nightly) return "Nightly retraining is off (train.nightly).";
	return `Next nightly run: ${when(status.next_run)}.`;
}

export interface RunSummary {
	when: string;
	outcome: string; // one line: trained / not due / failed
	details: string[]; // method and pairs, held-out before -> after, gate verdict
	ok: boolean;
}

/** The last retrain, in words. */
export function lastRunSummary(run: LastRun | null): RunSummary | null {
	if (!run) return null;
	const at = when(run.finished ?? run.started);
	if (run.error || (run.returncode !== null && run.returncode !== 0)) {
		return { when: at, outcome: `Failed: ${run.error ?? `exit ${run.returncode}`}`, details: [], ok: false };
	}
	const r = run.result;
	if (!r) return { when: at, outcome: "Finished without a result.", details: [], ok: false };
	if (r.due === false) return { when: at, outcome: `Not due: ${r.reason ?? "too little new feedback"}`, details: [], ok: true };
	if (!r.version) return { when: at, outcome: "No version was written.", details: [], ok: false };
	const details: string[] = [];
	const trainPairs = r.pairs?.train;
	details.push(`${(r.method ?? "dpo").toUpperCase()} on ${trainPairs ?? "?"} ${r.method === "kto" ? "answers" : "pairs"}${r.pairs?.heldout ? `, ${r.pairs.heldout} held out` : ""}`);
	const h = r.heldout ?? {};
	if (typeof h.accuracy_after === "number") details.push(`held-out accuracy ${percent(h.accuracy_before)} → ${percent(h.accuracy_after)}`);
	if (typeof h.margin_after === "number") details.push(`held-out margin ${fixed(h.margin_before)} → ${fixed(h.margin_after)}`);
	if (r.gate) {
		const promoted = r.gate.promoted ?? r.gate.promote;
		const why = (r.gate.reasons ?? []).slice(-1)[0];
		details.push(promoted ? "gate: promoted, now served" : `gate: kept out${why ? ` (${why})` : ""}`);
	}
	return { when: at, outcome: `Trained ${r.version}.`, details, ok: true };
}

export interface VersionRow {
	version: string;
	created: string;
	pairs: string;
	accuracy: number | null; // held-out preference accuracy (the gate's, else training's)
	margin: number | null;
	kl: string;
	winRate: string;
	verdict: string;
	active: boolean;
	serving: boolean;
	servable: boolean;
}

export function winRateText(ab: WinRate | null | undefined): string {
	if (!ab || !ab.decided) return "no A/B yet";
	return `${percent(ab.win_rate)} of ${ab.decided}`;
}

function num(x: unknown): number | null {
	return typeof x === "number" && Number.isFinite(x) ? x : null;
}

export function versionRow(v: AdapterVersion, serving: string | null | undefined): VersionRow {
	const g = v.gate;
	return {
		version: v.version,
		created: when(v.created),
		pairs: v.pairs === null || v.pairs === undefined ? "–" : String(v.pairs),
		accuracy: num(g?.accuracy) ?? num(v.heldout?.accuracy_after),
		margin: num(g?.margin) ?? num(v.heldout?.margin_after),
		kl: fixed(g?.kl_to_base),
		winRate: winRateText(v.ab),
		verdict: !g ? "not gated" : g.promote ? "passed the gate" : g.promote === false ? "kept out by the gate" : "gated",
		active: v.active,
		serving: serving === v.version,
		servable: v.servable,
	};
}

/** Newest first, for the table. */
export function versionRows(listing: AdapterListing): VersionRow[] {
	return listing.versions.map((v) => versionRow(v, listing.serving)).reverse();
}

export interface ChartPoint {
	label: string;
	value: number;
	active: boolean;
}

/**
 * Held-out accuracy per version (oldest first), the chart's points; versions without a figure are
 * left out. Margin is the fallback when no version has an accuracy.
 */
export function chartSeries(listing: AdapterListing): { metric: "accuracy" | "margin"; points: ChartPoint[] } {
	const rows = listing.versions.map((v) => versionRow(v, listing.serving));
	const pick = (metric: "accuracy" | "margin") =>
		rows.filter((r) => r[metric] !== null).map((r) => ({ label: r.version, value: r[metric] as number, active: r.active }));
	const accuracy = pick("accuracy");
	return accuracy.length ? { metric: "accuracy", points: accuracy } : { metric: "margin", points: pick("margin") };
}

/** What is served now, in words. */
export function servingLine(listing: AdapterListing): string {
	const serving = listing.serving === undefined ? listing.active : listing.serving;
	const base = listing.base_ab?.decided ? ` (the base model won ${winRateText(listing.base_ab)} A/B comparisons)` : "";
	return serving ? `Serving ${serving}${base}.` : `Serving the base model, no adapter${base}.`;
}
