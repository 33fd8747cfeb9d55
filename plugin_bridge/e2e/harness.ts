// A browser page hosting the real side view (src/view.ts) with the obsidian stand-in, talking to a
// real daemon through the plugin's real client; e2e/render-check.mjs drives it in headless Chromium.

import { WorkspaceLeaf } from "obsidian";
import { VaultAgentClient, newKey } from "../src/api/client";
import { fetchRequest } from "../src/api/http";
import type { OutboxItem } from "../src/api/types";
import type { PluginHost } from "../src/host";
import { Outbox } from "../src/outbox";
import { linkText } from "../src/render";
import { AskView } from "../src/view";
import { LearningView } from "../src/learning";

declare global {
	interface Window {
		VA: { done?: { ok: boolean; response_id?: string; error?: string }; delivered: OutboxItem[]; opened: string[] };
	}
}

const params = new URLSearchParams(location.search);
window.VA = { delivered: [], opened: [] };
const client = new VaultAgentClient(() => ({ url: params.get("url") ?? "", token: params.get("token") ?? "" }), {
	request: fetchRequest((u, i) => fetch(u, i)),
	fetch: (u, i) => fetch(u, i),
});
const outbox = new Outbox([], async (item) => {
	await client.deliver(item);
	window.VA.delivered.push(item);
}, async () => undefined);
const host: PluginHost = {
	client,
	submit: async (s) => void (await outbox.submit({ ...s, key: newKey(), queuedAt: Date.now() })),
	openCitation: (c) => void window.VA.opened.push(linkText(c)),
	indexState: async () => (await client.status()).index,
};

/** ?view=learning: the learning view instead of the ask view. */
async function learning() {
	const view = new LearningView(new WorkspaceLeaf() as never, host);
	document.querySelector(".workspace-leaf")!.appendChild(view.containerEl);
	view.containerEl.addClass("workspace-leaf-content");
	await view.onOpen();
	window.VA.done = { ok: !!view.shown.listing };
}

async function main() {
	if (params.get("view") === "learning") return learning();
	const view = new AskView(new WorkspaceLeaf() as never, host);
	document.querySelector(".workspace-leaf")!.appendChild(view.containerEl);
	view.containerEl.addClass("workspace-leaf-content");
	await view.onOpen();
	const answer = await view.ask(params.get("q") ?? "");
	window.VA.done = { ok: !!answer, response_id: answer?.response_id };
}

main().catch((e) => (window.VA.done = { ok: false, error: String(e) }));
