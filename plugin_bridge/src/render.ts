// Answers as Obsidian renders notes (MarkdownRenderer), [n] markers that jump to their citation,
// snippets as plain text, and the citation links.

import { App, Component, MarkdownRenderer } from "obsidian";
import type { Citation } from "./api/types";

/** `[[Folder/Note#Heading]]` -> `Folder/Note#Heading`, the link text Obsidian opens. */
export function linkText(citation: Citation): string {
	const m = /^\[\[(.*)\]\]$/.exec(citation.link.trim());
	return m ? m[1] : citation.path.replace(/\.md$/i, "") + (citation.heading ? `#${citation.heading}` : "");
}

/** "Note › Section › Subsection": the heading path without a repeat of the note's own title. */
export function citationLabel(citation: Citation): string {
	const note = citation.path.replace(/\.md$/i, "").split("/").pop() ?? citation.path;
	const parts = (citation.heading ?? "").split(" > ").map((p) => p.trim()).filter(Boolean);
	if (parts[0] === note) parts.shift();
	return [note, ...parts].join(" › ");
}

/** Which model wrote an answer, as the view names it. */
export function answeredBy(adapterVersion: string | null | undefined): string {
	return adapterVersion ? `answered by ${adapterVersion}` : "answered by the base model";
}

/**
 * A note excerpt as one line of plain text: headings, list and quote marks, emphasis, code ticks,
 * wiki and markdown links reduced to their words; lines (and list items the daemon flattened
 * into one line) kept apart with " · " so they don't run together.
 */
export function plainSnippet(markdown: string): string {
	const lines = markdown
		.replace(/```[^\n]*\n?/g, "")
		.replace(/<[^>\n]+>/g, "")
		.replace(/[ \t]+#{1,6}[ \t]+(?=\S)/g, "\n")
		.split(/\r?\n/)
		.flatMap(splitFlattenedList)
		.map((line) =>
			line
				.replace(/^\s{0,3}(?:#{1,6}\s+|>\s?)+/, "")
				.replace(/^\s*(?:[-*+]\s+\[[ xX]\]\s+|[-*+]\s+|\d+[.)]\s+)/, "")
				.replace(/!\[\[[^\]]*\]\]/g, "")
				.replace(/!\[([^\]]*)\]\([^)]*\)/g, "$1")
				.replace(/\[\[([^\]|]+)\|([^\]]+)\]\]/g, "$2")
				.replace(/\[\[([^\]]+)\]\]/g, (_, target: string) => target.split("#").pop()!.split("/").pop()!)
				.replace(/\[([^\]]+)\]\([^)]*\)/g, "$1")
				.replace(/\*\*(?=\S)(.+?)(?<=\S)\*\*/g, "$1")
				.replace(/(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)/g, "$1")
				.replace(/\*(?=\S)(.+?)(?<=\S)\*/g, "$1")
				.replace(/(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)/g, "$1")
				.replace(/~~(.+?)~~/g, "$1")
				.replace(/==(.+?)==/g, "$1")
				.replace(/`([^`]*)`/g, "$1")
				.replace(/\s+/g, " ")
				.trim(),
		)
		.filter((line) => line && !/^([-*_=])\1{2,}$/.test(line) && !/^\|?[\s:|-]+\|?$/.test(line));
	return lines.join(" · ");
}

const INLINE_ITEM = /(^|[.:;!?)])?[ \t]+[-*+][ \t]+(?:\[[ xX]\][ \t]+)?(?=\S)/g;

/**
 * The daemon flattens a snippet to one line, so list items follow each other as " - ". Two or
 * more such dashes in one line are a list (prose rarely has two spaced hyphens so close); a single
 * one counts only after a sentence ends.
 */
function splitFlattenedList(line: string): string[] {
	const dashes = Array.from(line.matchAll(INLINE_ITEM));
	const isList = dashes.length >= 2;
	return line.replace(INLINE_ITEM, (whole, end: string | undefined) => (isList || end !== undefined ? `${end ?? ""}\n` : whole)).split("\n");
}

const SKIP_MARKERS = new Set(["CODE", "PRE", "A"]);

/** Turns each [n] in `el`'s text (outside code and links) into a link to citation n, when it exists. */
export function linkMarkers(el: HTMLElement, citations: Citation[], jump: (n: number) => void): void {
	const known = new Set(citations.map((c) => c.n));
	const doc = el.ownerDocument;
	const walker = doc.createTreeWalker(el, 4 /* NodeFilter.SHOW_TEXT */);
	const texts: Text[] = [];
	for (let node = walker.nextNode(); node; node = walker.nextNode()) {
		let parent = node.parentElement;
		let skip = false;
		while (parent && parent !== el) {
			if (SKIP_MARKERS.has(parent.tagName)) skip = true;
			parent = parent.parentElement;
		}
		if (!skip && /\[\d+\]/.test(node.nodeValue ?? "")) texts.push(node as Text);
	}
	for (const node of texts) {
		const text = node.nodeValue ?? "";
		const frag = doc.createDocumentFragment();
		let last = 0;
		for (const m of text.matchAll(/\[(\d+)\]/g)) {
			const n = Number(m[1]);
			if (!known.has(n)) continue;
			frag.appendChild(doc.createTextNode(text.slice(last, m.index)));
			const marker = doc.createElement("a");
			marker.textContent = `[${n}]`;
			marker.className = "vault-agent-marker";
			marker.setAttribute("href", `#citation-${n}`);
			marker.setAttribute("aria-label", `Go to source ${n}`);
			marker.dataset.n = String(n);
			marker.addEventListener("click", (ev) => {
				ev.preventDefault();
				jump(n);
			});
			frag.appendChild(marker);
			last = (m.index ?? 0) + m[0].length;
		}
		frag.appendChild(doc.createTextNode(text.slice(last)));
		node.replaceWith(frag);
	}
}

/**
 * Renders `text` as Obsidian renders a note into `el` (links resolve against the vault), then
 * links the [n] markers. `owner` holds the rendered children's lifecycle: it is unloaded and
 * replaced on each render, so re-rendering a streaming answer leaks nothing.
 */
export class AnswerRenderer {
	private owner: Component | null = null;

	constructor(private readonly app: App, private readonly parent: Component) {}

	async render(el: HTMLElement, text: string, citations: Citation[], jump: (n: number) => void): Promise<void> {
		const owner = new Component();
		const scratch = el.ownerDocument.createElement("div");
		await MarkdownRenderer.render(this.app, text, scratch, "", owner);
		linkMarkers(scratch, citations, jump);
		this.openLinksInVault(scratch);
		if (this.owner) this.parent.removeChild(this.owner);
		this.owner = this.parent.addChild(owner);
		el.replaceChildren(...Array.from(scratch.childNodes));
	}

	/** Outside a note, rendered [[links]] are inert: a click opens the note (Ctrl/Cmd: a new tab, as in notes). */
	private openLinksInVault(el: HTMLElement): void {
		for (const a of Array.from(el.querySelectorAll("a.internal-link")) as HTMLAnchorElement[]) {
			const target = a.dataset.href ?? a.getAttribute("href") ?? "";
			a.addEventListener("click", (ev) => {
				ev.preventDefault();
				void this.app.workspace.openLinkText(target, "", ev.ctrlKey || ev.metaKey);
			});
		}
	}
}

/**
 * Re-renders a growing text at most every `everyMs` (a streaming answer: rendering markdown on
 * each token would make Obsidian stutter). Renders never overlap; the last text always lands.
 */
export class ThrottledRender {
	private pending: string | null = null;
	private timer: ReturnType<typeof setTimeout> | null = null;
	private running: Promise<void> = Promise.resolve();
	private lastAt = -Infinity;
	renders = 0;

	constructor(private readonly draw: (text: string) => Promise<void>, private readonly everyMs = 250, private readonly now: () => number = () => Date.now()) {}

	push(text: string): void {
		this.pending = text;
		if (this.timer) return;
		const wait = Math.max(0, this.lastAt + this.everyMs - this.now());
		this.timer = setTimeout(() => {
			this.timer = null;
			void this.flush();
		}, wait);
	}

	/** Draws what is pending now (the final text), after any render in progress. */
	flush(): Promise<void> {
		if (this.timer) {
			clearTimeout(this.timer);
			this.timer = null;
		}
		this.running = this.running.then(async () => {
			if (this.pending === null) return;
			const text = this.pending;
			this.pending = null;
			this.lastAt = this.now();
			this.renders++;
			await this.draw(text);
		});
		return this.running;
	}

	cancel(): void {
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
		this.pending = null;
	}
}

export interface CitationHandlers {
	open(citation: Citation): void;
}

/** An ordered list of citations; returns n -> list item, for the markers to jump to. */
export function renderCitations(el: HTMLElement, citations: Citation[], handlers: CitationHandlers): Map<number, HTMLElement> {
	el.empty();
	const items = new Map<number, HTMLElement>();
	if (!citations.length) return items;
	el.createEl("div", { text: "Sources", cls: "vault-agent-sources-title" });
	const list = el.createEl("ol", { cls: "vault-agent-citations" });
	for (const c of citations) {
		const li = list.createEl("li", { cls: "vault-agent-citation" });
		li.dataset.n = String(c.n);
		li.createSpan({ text: `[${c.n}] `, cls: "vault-agent-citation-n" });
		const a = li.createEl("a", { text: citationLabel(c), cls: "internal-link", href: c.uri, attr: { "aria-label": `Open ${citationLabel(c)}` } });
		a.dataset.href = linkText(c);
		a.addEventListener("click", (ev) => {
			ev.preventDefault();
			handlers.open(c);
		});
		const snippet = plainSnippet(c.snippet ?? "");
		if (snippet) li.createDiv({ text: snippet, cls: "vault-agent-snippet" });
		items.set(c.n, li);
	}
	return items;
}
