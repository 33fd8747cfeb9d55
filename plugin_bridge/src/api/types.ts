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

/** An adapter's record in decided A/B comparisons ("none": the plain base model). */
export interface WinRate {
	version: string;
	won: number;
	lost: number;
	tied: number;
	decided: number;
	win_rate: number;
}

export interface GateFigures {
	promote: boolean | null;
	reasons: string[] | null;
	accuracy: number | null;
	margin: number | null;
	perplexity: number | null;
	kl_to_base?: number | null;
	evidence?: Record<string, unknown> | null;
}

export interface AdapterVersion {
	version: string;
	created: string | null;
	pairs: number | null;
	heldout: Record<string, number | null> | null;
	gate: GateFigures | null;
	ab?: WinRate | null;
	servable: boolean;
	active: boolean;
}

/** GET /adapters */
export interface AdapterListing {
	active: string | null;
	history: string[];
	versions: AdapterVersion[];
	base_ab?: WinRate | null;
	serving?: string | null;
	warning: string | null;
}

/** POST /adapters/{version}/activate, /adapters/rollback, /adapters/off */
export interface Switched {
	active: string | null;
	previous: string | null;
	swap_ms: number | null;
}

/** A finished retrain as the daemon recorded it (train-last.json). */
export interface LastRun {
	started: string;
	finished: string;
	returncode: number | null;
	error?: string;
	result?: {
		version?: string | null;
		method?: string;
		due?: boolean;
		reason?: string;
		pairs?: { train?: number; heldout?: number; by_source?: Record<string, number> };
		heldout?: Record<string, number | null> | null;
		gate?: { promote?: boolean; promoted?: boolean; reasons?: string[] } | null;
	} | null;
}

/** GET /train/status */
export interface TrainStatus {
	nightly: boolean;
	nightly_at: string;
	next_run: string | null;
	running: boolean;
	progress: { trigger: "manual" | "nightly"; started: string; stage: string; elapsed_s?: number } | null;
	last_run: LastRun | null;
	versions: string[];
	waiting: { total: number; by_source: Record<string, number>; min_new_pairs: number } | null;
}

/** A GGUF model on the daemon's machine (GET /models; the README's "Your own model"). */
export interface ModelRow {
	name: string;
	source: string;
	path: string;
	architecture: string | null;
	parameters: number | null;
	quantization: string | null;
	can: string | null; // "serve", "serve+train", or null: cannot be served (why_not says why)
	why_not: string | null;
	served: boolean;
}

export interface ModelListing {
	served: string | null;
	models: ModelRow[];
}

/** POST /models/use: the model now served, and a notice when an adapter of another base was switched off. */
export interface ModelUsed {
	model: ModelRow;
	switch_ms: number;
	notice: string | null;
	warning: string | null;
}
