// The status bar item: daemon reachable, index coverage, active adapter version.

import type { VaultAgentClient } from "./api/client";
import { describeError } from "./describe";

export interface StatusSnapshot {
	reachable: boolean;
	text: string;
	detail: string;
}

function adapterVersion(status: string | null, registry: Record<string, unknown> | null): string | null {
	const active = registry?.["active"];
	if (typeof active === "string") return active;
	if (active && typeof active === "object" && typeof (active as { version?: unknown }).version === "string") {
		return (active as { version: string }).version;
	}
	return status;
}

export async function readStatus(client: VaultAgentClient): Promise<StatusSnapshot> {
	try {
		const st = await client.status();
		const registry = await client.adapters().catch(() => null);
		const ix = st.index;
		const adapter = adapterVersion(st.adapter, registry);
		const parts = [`${ix.notes_indexed}/${ix.notes_total} notes`];
		if (adapter) parts.push(`adapter ${adapter}`);
		return {
			reachable: true,
			text: `vault-agent: ${parts.join(" · ")}`,
			detail: `Connected to ${client.baseUrl}; model ${st.model ?? "none"}${ix.notes_indexed < ix.notes_total ? "; still indexing" : ""}`,
		};
	} catch (e) {
		return { reachable: false, text: "vault-agent: offline", detail: describeError(e) };
	}
}

export function showStatus(el: HTMLElement, snap: StatusSnapshot): void {
	el.setText(snap.text);
	el.setAttr("aria-label", snap.detail);
	el.toggleClass("vault-agent-offline", !snap.reachable);
}
