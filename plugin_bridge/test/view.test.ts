// @vitest-environment happy-dom
// The side view and the rating queue, rendered with the obsidian stand-in.
import { beforeEach, describe, expect, it } from "vitest";
import { App, Modal, Notice, WorkspaceLeaf } from "./obsidian-mock";
import { Aborted, DaemonDown } from "../src/api/errors";
import type { Answer, Citation, IndexState } from "../src/api/types";
import type { PluginHost, Submission } from "../src/host";
import { RateQueueModal } from "../src/modals";
import { AskView } from "../src/view";

const citations: Citation[] = [
	{ n: 1, path: "Garden/Tomatoes.md", heading: "Tomatoes > Watering", link: "[[Garden/Tomatoes#Watering]]", uri: "obsidian://open?vault=v&file=Garden%2FTomatoes.md", snippet: "Water deeply twice a week.", explicit: true },
	{ n: 2, path: "Garden/Soil.md", heading: null, link: "[[Garden/Soil]]", uri: "obsidian://open?vault=v&file=Garden%2FSoil.md", snippet: "Loam.", explicit: true },
];
const answer: Answer = { response_id: "resp-1", question: "q", answer: "Water twice a week [1], in loam [2].", citations };

function fakeHost(overrides: Partial<Record<string, unknown>> = {}) {
	const submitted: Submission[] = [];
	const opened: Citation[] = [];
	let release!: () => void;
	const gate = new Promise<void>((r) => (release = r));
	let seenSignal: AbortSignal | undefined;
	const client = {
		async askStream(_q: string, onToken: (t: string) => void, signal?: AbortSignal) {
			seenSignal = signal;
			onToken("Water twice ");
			onToken("a week [1], ");
			await Promise.race([gate, new Promise((_, rej) => signal?.addEventListener("abort", () => rej(new Aborted())))]);
			onToken("in loam [2].");
			return answer;
		},
		async compare() {
			return { comparison_id: "cmp-1", question: "q", a: { ...answer, response_id: "a", answer: "Weekly [1]." }, b: { ...answer, response_id: "b", answer: "Daily." } };
		},
		async pendingComparisons() {
			return [{ id: "cmp-9", question: "Which soil?", answer_a: "Loam", answer_b: "Clay" }];
		},
		async unratedResponses() {
			return [{ id: "resp-7", question: "When to sow?", answer: "In March." }];
		},
		...overrides,
	};
	const state: { index: IndexState | null } = { index: { notes_indexed: 21, notes_total: 21 } };
	const host: PluginHost = {
		client: client as unknown as PluginHost["client"],
		submit: async (s) => void submitted.push(s),
		openCitation: (c) => void opened.push(c),
		indexState: async () => state.index,
	};
	return { host, submitted, opened, release, state, signal: () => seenSignal };
}

async function openView(host: PluginHost) {
	const view = new AskView(new WorkspaceLeaf() as never, host);
	await view.onOpen();
	document.body.appendChild(view.containerEl);
	return view;
}

const q = (view: AskView, sel: string) => view.contentEl.querySelector(sel) as HTMLElement;
const buttons = (el: HTMLElement) => Array.from(el.querySelectorAll("button")) as HTMLButtonElement[];
const byText = (el: HTMLElement, text: string) => buttons(el).find((b) => b.textContent === text)!;
const tick = () => new Promise((r) => setTimeout(r, 0));

beforeEach(() => {
	Notice.messages = [];
	document.body.empty();
});

describe("ask view", () => {
	it("shows the answer growing as tokens stream, then citations that open the note at the heading", async () => {
		const t = fakeHost();
		const view = await openView(t.host);
		const done = view.ask("How often do I water tomatoes?");
		await tick();
		await tick(); // the first streamed render is due at once; later ones wait their turn
		expect(q(view, ".vault-agent-answer").textContent!.trim()).toBe("Water twice a week [1],");
		expect(q(view, ".vault-agent-answer").hasClass("is-streaming")).toBe(true);
		expect(byText(view.contentEl, "Stop").disabled).toBe(false);
		t.release();
		await done;
		expect(q(view, ".vault-agent-answer").textContent).toBe(answer.answer);
		const links = Array.from(view.contentEl.querySelectorAll(".vault-agent-citation a.internal-link")) as HTMLAnchorElement[];
		expect(links.map((a) => a.textContent)).toEqual(["Tomatoes › Watering", "Soil"]);
		expect(links[0].dataset.href).toBe("Garden/Tomatoes#Watering");
		links[0].click();
		expect(t.opened.map((c) => c.n)).toEqual([1]);
		expect(byText(view.contentEl, "Stop").disabled).toBe(true);
	});

	it("turns [n] markers into links that jump to citation n", async () => {
		const t = fakeHost();
		const view = await openView(t.host);
		t.release();
		await view.ask("q");
		const markers = Array.from(view.contentEl.querySelectorAll(".vault-agent-marker")) as HTMLElement[];
		expect(markers.map((m) => m.textContent)).toEqual(["[1]", "[2]"]);
		markers[1].click();
		const highlighted = view.contentEl.querySelectorAll(".vault-agent-citation.is-highlighted");
		expect(highlighted).toHaveLength(1);
		expect((highlighted[0] as HTMLElement).dataset.n).toBe("2");
	});

	it("sends thumbs and corrections for this answer", async () => {
		const t = fakeHost();
		const view = await openView(t.host);
		t.release();
		await view.ask("q");
		const up = view.contentEl.querySelector('[aria-label="Good answer"]') as HTMLButtonElement;
		const down = view.contentEl.querySelector('[aria-label="Bad answer"]') as HTMLButtonElement;
		expect(up.getAttribute("data-icon")).toBe("thumbs-up");
		down.click();
		expect(down.hasClass("is-active")).toBe(true);
		const better = view.contentEl.querySelector('[aria-label="Write a better answer"]') as HTMLButtonElement;
		expect(better.getAttribute("data-icon")).toBe("pencil");
		better.click();
		const modal = Modal.opened.at(-1)!;
		(modal.contentEl.querySelector("textarea") as HTMLTextAreaElement).value = "Water deeply twice a week, in loam.";
		byText(modal.contentEl, "Submit").click();
		expect(t.submitted).toEqual([
			{ path: "/feedback", body: { response_id: "resp-1", rating: -1 }, label: "thumbs down" },
			{ path: "/feedback", body: { response_id: "resp-1", correction: "Water deeply twice a week, in loam." }, label: "correction" },
		]);
	});

	it("renders the answer's markdown, keeps its [n] markers clickable and names the adapter that wrote it", async () => {
		const md: Answer = { ...answer, adapter_version: "v0003", answer: "The answer is: **Daily** [1].\n\n- water *deeply*\n- in loam [2]" };
		const t = fakeHost({ askStream: async () => md });
		const view = await openView(t.host);
		await view.ask("q");
		const el = q(view, ".vault-agent-answer");
		expect(el.textContent).not.toContain("**");
		expect(el.querySelector("strong")!.textContent).toBe("Daily");
		expect(Array.from(el.querySelectorAll("li")).map((li) => li.textContent)).toEqual(["water deeply", "in loam [2]"]);
		const markers = Array.from(el.querySelectorAll(".vault-agent-marker")) as HTMLElement[];
		expect(markers.map((m) => m.textContent)).toEqual(["[1]", "[2]"]);
		markers[1].click();
		expect((view.contentEl.querySelector(".vault-agent-citation.is-highlighted") as HTMLElement).dataset.n).toBe("2");
		expect(q(view, ".vault-agent-version").textContent).toBe("answered by v0003");
	});

	it("opens a [[link]] in the answer as the note it names", async () => {
		const t = fakeHost({ askStream: async () => ({ ...answer, answer: "See [[Garden/Soil|your soil note]] [2]." }) });
		const view = await openView(t.host);
		const opened: string[] = [];
		view.app.workspace.openLinkText = async (target: string) => void opened.push(target);
		await view.ask("q");
		(q(view, ".vault-agent-answer a.internal-link") as HTMLAnchorElement).click();
		expect(opened).toEqual(["Garden/Soil"]);
		expect(q(view, ".vault-agent-answer a.internal-link").textContent).toBe("your soil note");
	});

	it("says the base model answered when no adapter was served", async () => {
		const t = fakeHost({ askStream: async () => ({ ...answer, adapter_version: null }) });
		const view = await openView(t.host);
		await view.ask("q");
		expect(q(view, ".vault-agent-provenance").textContent).toContain("answered by the base model");
	});

	it("shows snippets as plain text and gives every control a label", async () => {
		const withMarks = [{ ...citations[0], snippet: "## Watering\n- Water **deeply twice a week**\n- Check [[Garden/Soil|the soil]] first" }, citations[1]];
		const t = fakeHost({ askStream: async () => ({ ...answer, citations: withMarks }) });
		const view = await openView(t.host);
		await view.ask("q");
		expect(q(view, ".vault-agent-snippet").textContent).toBe("Watering · Water deeply twice a week · Check the soil first");
		const unlabeled = buttons(view.contentEl).filter((b) => !b.getAttribute("aria-label"));
		expect(unlabeled.map((b) => b.outerHTML)).toEqual([]);
	});

	it("stops the stream with Stop, and when the view closes", async () => {
		for (const how of ["stop", "close"]) {
			const t = fakeHost();
			const view = await openView(t.host);
			const done = view.ask("q");
			await tick();
			if (how === "stop") byText(view.contentEl, "Stop").click();
			else await view.onClose();
			await done;
			expect(t.signal()!.aborted).toBe(true);
			expect(view.contentEl.textContent).toContain("Stopped.");
			expect(Notice.messages).toEqual([]);
		}
	});

	it("says clearly when the daemon is down", async () => {
		const t = fakeHost({
			askStream: async () => {
				throw new DaemonDown("http://127.0.0.1:8765");
			},
		});
		const view = await openView(t.host);
		await view.ask("q");
		expect(Notice.messages[0]).toContain("not running at http://127.0.0.1:8765");
		expect(q(view, ".vault-agent-error").textContent).toContain("vault-agent serve");
	});

	it("shows a syncing notice with notes indexed / total while the index catches up", async () => {
		const t = fakeHost();
		t.state.index = { notes_indexed: 120, notes_total: 500 };
		const view = await openView(t.host);
		await tick();
		const sync = q(view, ".vault-agent-sync");
		expect(sync.isShown()).toBe(true);
		expect(sync.textContent).toContain("120 of 500 notes indexed");
		t.state.index = { notes_indexed: 500, notes_total: 500 };
		await view.refreshSync();
		expect(sync.isShown()).toBe(false);
	});

	it("compares two answers side by side and records the pick", async () => {
		const t = fakeHost();
		const view = await openView(t.host);
		await view.compare("q");
		const sides = view.contentEl.querySelectorAll(".vault-agent-compare-side");
		expect(Array.from(sides).map((s) => s.querySelector("h5")!.textContent)).toEqual(["Answer A", "Answer B"]);
		expect(sides[1].textContent).toContain("Daily.");
		byText(view.contentEl, "Tie").click();
		expect(t.submitted).toEqual([{ path: "/compare/cmp-1/choice", body: { choice: "tie" }, label: "choice tie" }]);
	});
});

describe("rate recent answers", () => {
	it("walks pending comparisons then unrated answers, one key per action", async () => {
		const t = fakeHost();
		const modal = new RateQueueModal(new App() as never, t.host);
		await modal.open();
		expect(modal.contentEl.textContent).toContain("Which soil?");
		expect(modal.contentEl.textContent).toContain("2 left");
		(modal.scope as unknown as { press(k: string): void }).press("b");
		expect(modal.contentEl.textContent).toContain("When to sow?");
		(modal.scope as unknown as { press(k: string): void }).press("+");
		expect(modal.contentEl.textContent).toContain("Nothing left to rate.");
		expect(t.submitted).toEqual([
			{ path: "/compare/cmp-9/choice", body: { choice: "B" }, label: "choice B" },
			{ path: "/feedback", body: { response_id: "resp-7", rating: 1 }, label: "thumbs up" },
		]);
	});
});
