// What the views and modals need from the plugin, as one narrow interface (tests supply their own).

import type { VaultAgentClient } from "./api/client";
import type { Citation, IndexState, OutboxItem } from "./api/types";

export type Submission = Omit<OutboxItem, "key" | "queuedAt">;

export interface PluginHost {
	client: VaultAgentClient;
	/** Queue a rating/correction/choice with a fresh idempotency key and try to deliver it. */
	submit(item: Submission): Promise<void>;
	openCitation(citation: Citation): void;
	/** Notes indexed / total right now, or null when the daemon is unreachable. */
	indexState(): Promise<IndexState | null>;
}
