// Shapes of the daemon's JSON (see the README's HTTP API section).

export interface Citation {
	n: number;
	path: string;
	heading: string | null;
	link: string; // [[path#heading]]
	uri: string; // obsidian://open?vault=...&file=...
	snippet: string;
	explicit: boolean;
}

export interface IndexState {
	notes_indexed: number;
	notes_total: number;
}

export interface Answer {
	response_id: string;
	question: string;
	answer: string;
	citations: Citation[];
	model?: string;
	adapter_version?: string | null;
	timings?: Record<string, number>;
	index_state?: IndexState; // present once the daemon reports it with each answer
}

export interface Health {
	ok: boolean;
	version: string;
}

export interface DaemonStatus {
	index: IndexState & { vault: string; vault_name: string; chunks: number; last_sync: string | null };
	model: string | null;
	adapter: string | null;
	queue: { running: number; waiting: number; capacity: number };
}

export interface Comparison {
	comparison_id: string;
	question: string;
	a: Answer;
	b: Answer;
}

export interface PendingComparison {
	id: string;
	question: string;
	answer_a: string;
	answer_b: string;
}

export interface RecordedResponse {
	id: string;
	question: string;
	answer: string;
	created_at?: string;
}

export type Choice = "A" | "B" | "tie";

/** A rating or choice waiting to be delivered; its key makes redelivery harmless. */
export interface OutboxItem {
	key: string;
	path: string; // e.g. /feedback or /compare/<id>/choice
	body: Record<string, unknown>;
	label: string; // what the user did, for notices
	queuedAt: number;
}
