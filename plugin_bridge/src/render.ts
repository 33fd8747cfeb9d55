// Answer text with [n] markers that jump to their citation, and the citation links.

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

export interface CitationHandlers {
	open(citation: Citation): void;
}

/** Renders `text` into `el`, turning [n] into links to citation n (when it exists). */
export function renderAnswerText(el: HTMLElement, text: string, citations: Citation[], jump: (n: number) => void): void {
	el.empty();
	const known = new Set(citations.map((c) => c.n));
	let last = 0;
	for (const m of text.matchAll(/\[(\d+)\]/g)) {
		const n = Number(m[1]);
		if (!known.has(n)) continue;
		el.appendText(text.slice(last, m.index));
		const marker = el.createEl("a", { text: `[${n}]`, cls: "vault-agent-marker", href: `#citation-${n}` });
		marker.dataset.n = String(n);
		marker.addEventListener("click", (ev) => {
			ev.preventDefault();
			jump(n);
		});
		last = (m.index ?? 0) + m[0].length;
	}
	el.appendText(text.slice(last));
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
		const a = li.createEl("a", { text: citationLabel(c), cls: "internal-link", href: c.uri });
		a.dataset.href = linkText(c);
		a.addEventListener("click", (ev) => {
			ev.preventDefault();
			handlers.open(c);
		});
		if (c.snippet) li.createDiv({ text: c.snippet, cls: "vault-agent-snippet" });
		items.set(c.n, li);
	}
	return items;
}
