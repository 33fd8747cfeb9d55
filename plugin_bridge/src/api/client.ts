// The daemon's HTTP API, with the rules that keep Obsidian responsive: every call has a time
// limit, 503 waits for Retry-After, calls that are safe to repeat (GETs, keyed POSTs) are retried
// when the connection drops, and the answer stream can be aborted at any moment.

import { Aborted, DaemonDown, HttpError, Timeout, VersionMismatch } from "./errors";
import { FetchFn, HttpResponse, RequestFn, header, retryAfterSeconds } from "./http";
import { SseParser } from "./sse";
import type { AdapterListing, Answer, Comparison, DaemonStatus, Health, ModelListing, ModelUsed, OutboxItem, PendingComparison, RecordedResponse, Switched, TrainStatus } from "./types";

/** The daemon versions this plugin speaks: same major.minor. */
export const API_VERSION = "0.1";

export interface Connection {
	url: string;
	token: string;
}

export interface ClientOptions {
	request: RequestFn;
	fetch: FetchFn;
	/** Extra headers on every call (the e2e test sends Obsidian's Origin). */
	headers?: Record<string, string>;
	jsonTimeoutMs?: number;
	/** /ask and /compare wait for a whole generation. */
	generationTimeoutMs?: number;
	/** Longest silence on the answer stream (queued behind other questions included). */
	streamIdleMs?: number;
	/** How many times to retry a 503 or a dropped connection. */
	retries?: number;
	/** Longest Retry-After honoured; a longer one is reported instead of waited for. */
	maxRetryWaitS?: number;
	sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
	/** Told before each wait for a busy daemon (a 503), so the user knows why nothing happens. */
	onWait?: (seconds: number, error: HttpError) => void;
}

interface CallOptions {
	token?: boolean;
	timeoutMs?: number;
	idempotent?: boolean;
	key?: string;
	signal?: AbortSignal;
}

export function newKey(): string {
	const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
	if (c?.randomUUID) return c.randomUUID();
	return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
	return new Promise((resolve, reject) => {
		if (signal?.aborted) return reject(new Aborted());
		const timer = setTimeout(() => {
			signal?.removeEventListener("abort", onAbort);
			resolve();
		}, ms);
		const onAbort = () => {
			clearTimeout(timer);
			reject(new Aborted());
		};
		signal?.addEventListener("abort", onAbort, { once: true });
	});
}

function withTimeout<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
	let timer: ReturnType<typeof setTimeout> | undefined;
	const limit = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(onTimeout()), ms);
	});
	return Promise.race([work, limit]).finally(() => clearTimeout(timer));
}

function errorMessage(text: string): string {
	try {
		const data = JSON.parse(text);
		if (data && typeof data.error === "string") return data.error;
	} catch {
		/* not JSON */
	}
	return text.slice(0, 200) || "no details";
}

export interface ConnectionReport {
	ok: boolean;
	message: string;
	version?: string;
}

export class VaultAgentClient {
	private readonly o: Required<Omit<ClientOptions, "headers" | "onWait">> & Pick<ClientOptions, "onWait"> & { headers: Record<string, string> };

	constructor(private readonly connection: () => Connection, options: ClientOptions) {
		this.o = {
			headers: {},
			jsonTimeoutMs: 15_000,
			generationTimeoutMs: 300_000,
			streamIdleMs: 180_000,
			retries: 3,
			maxRetryWaitS: 30,
			sleep,
			...options,
		};
	}

	get baseUrl(): string {
		return this.connection().url.replace(/\/+$/, "");
	}

	private headers(token: boolean, extra: Record<string, string> = {}): Record<string, string> {
		const h: Record<string, string> = { ...this.o.headers, ...extra };
		if (token) h["Authorization"] = `Bearer ${this.connection().token}`;
		return h;
	}

	/** One JSON call with its time limit and retries; resolves to the parsed body. */
	async call<T>(method: "GET" | "POST", path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
		const url = this.baseUrl + path;
		const seconds = (opts.timeoutMs ?? this.o.jsonTimeoutMs) / 1000;
		const extra: Record<string, string> = {};
		if (body !== undefined) extra["Content-Type"] = "application/json";
		if (opts.key) extra["Idempotency-Key"] = opts.key;
		const canRepeat = opts.idempotent ?? (method === "GET" || !!opts.key);
		for (let attempt = 0; ; attempt++) {
			if (opts.signal?.aborted) throw new Aborted();
			let response: HttpResponse;
			try {
				const sent = this.o.request({
					url,
					method,
					headers: this.headers(opts.token ?? true, extra),
					body: body === undefined ? undefined : JSON.stringify(body),
				});
				response = await withTimeout(sent, seconds * 1000, () => new Timeout(this.baseUrl, seconds));
			} catch (e) {
				const err = e instanceof Timeout ? e : new DaemonDown(this.baseUrl, e instanceof Error ? e.message : String(e));
				if (canRepeat && err instanceof DaemonDown && attempt < this.o.retries) {
					await this.o.sleep(500 * 2 ** attempt, opts.signal);
					continue;
				}
				throw err;
			}
			if (response.status < 400) return (response.text ? JSON.parse(response.text) : {}) as T;
			const error = new HttpError(response.status, errorMessage(response.text), retryAfterSeconds(header(response.headers, "retry-after")));
			if (await this.shouldRetry(error, attempt, opts.signal)) continue;
			throw error;
		}
	}

	/** 503 means "not now": wait as long as the daemon asks (if that is reasonable) and try again. */
	private async shouldRetry(error: HttpError, attempt: number, signal?: AbortSignal): Promise<boolean> {
		if (error.status !== 503 || attempt >= this.o.retries) return false;
		const wait = error.retryAfterS ?? 2;
		if (wait > this.o.maxRetryWaitS) return false;
		this.o.onWait?.(wait, error);
		await this.o.sleep(wait * 1000, signal);
		return true;
	}

	health(timeoutMs = 5_000): Promise<Health> {
		return this.call<Health>("GET", "/health", undefined, { token: false, timeoutMs });
	}

	status(): Promise<DaemonStatus> {
		return this.call<DaemonStatus>("GET", "/status");
	}

	/** The adapter registry, or null on a daemon without one (404). */
	async adapters(): Promise<Record<string, unknown> | null> {
		try {
			return await this.call<Record<string, unknown>>("GET", "/adapters");
		} catch (e) {
			if (e instanceof HttpError && e.status === 404) return null;
			throw e;
		}
	}

	/** GET /adapters, typed, for the learning view. */
	adapterListing(): Promise<AdapterListing> {
		return this.call<AdapterListing>("GET", "/adapters");
	}

	/** Serve this version; a switch is not repeated on a lost reply (the user sees the result and can retry). */
	activateAdapter(version: string): Promise<Switched> {
		return this.call<Switched>("POST", `/adapters/${encodeURIComponent(version)}/activate`, undefined, { idempotent: false });
	}

	rollbackAdapter(): Promise<Switched> {
		return this.call<Switched>("POST", "/adapters/rollback", undefined, { idempotent: false });
	}

	adaptersOff(): Promise<Switched> {
		return this.call<Switched>("POST", "/adapters/off", undefined, { idempotent: false });
	}

	/** The GGUF models the daemon's machine holds, and which one it serves. */
	listModels(): Promise<ModelListing> {
		return this.call<ModelListing>("GET", "/models");
	}

	/** Serve another model (loads it: seconds to minutes); not repeated on a lost reply. */
	useModel(name: string): Promise<ModelUsed> {
		return this.call<ModelUsed>("POST", "/models/use", { model: name }, { timeoutMs: this.o.generationTimeoutMs, idempotent: false });
	}

	trainStatus(): Promise<TrainStatus> {
		return this.call<TrainStatus>("GET", "/train/status");
	}

	/** "Retrain now": starts the nightly job at once (409 while one runs). */
	retrainNow(force = false): Promise<{ started: boolean; progress: TrainStatus["progress"] }> {
		return this.call("POST", "/train/run", { force }, { idempotent: false });
	}

	/** A version's training plot (PNG), or null when it has none (404). */
	async trainingPlot(version: string): Promise<Blob | null> {
		const seconds = this.o.jsonTimeoutMs / 1000;
		const url = `${this.baseUrl}/adapters/${encodeURIComponent(version)}/plot`;
		let response: Response;
		try {
			response = await withTimeout(this.o.fetch(url, { headers: this.headers(true) }), seconds * 1000, () => new Timeout(this.baseUrl, seconds));
		} catch (e) {
			if (e instanceof Timeout) throw e;
			throw new DaemonDown(this.baseUrl, e instanceof Error ? e.message : String(e));
		}
		if (response.status === 404) return null;
		if (!response.ok) throw new HttpError(response.status, errorMessage(await response.text().catch(() => "")));
		return response.blob();
	}

	ask(question: string, signal?: AbortSignal): Promise<Answer> {
		return this.call<Answer>("POST", "/ask", { question }, { timeoutMs: this.o.generationTimeoutMs, idempotent: false, signal });
	}

	compare(question: string, signal?: AbortSignal): Promise<Comparison> {
		return this.call<Comparison>("POST", "/compare", { question }, { timeoutMs: this.o.generationTimeoutMs * 2, idempotent: false, signal });
	}

	async pendingComparisons(limit = 20): Promise<PendingComparison[]> {
		return (await this.call<{ comparisons: PendingComparison[] }>("GET", `/compare/pending?limit=${limit}`)).comparisons;
	}

	async unratedResponses(limit = 50): Promise<RecordedResponse[]> {
		return (await this.call<{ responses: RecordedResponse[] }>("GET", `/responses?unrated=true&limit=${limit}`)).responses;
	}

	/** Deliver a queued rating/correction/choice; its key makes a repeat harmless. */
	deliver(item: OutboxItem): Promise<unknown> {
		return this.call("POST", item.path, { ...item.body, idempotency_key: item.key }, { key: item.key });
	}

	/**
	 * POST /ask/stream: calls onToken for each piece of text and resolves to the final answer.
	 * Aborting `signal` (Stop, view closed) closes the connection, which cancels generation.
	 */
	async askStream(question: string, onToken: (text: string) => void, signal?: AbortSignal): Promise<Answer> {
		for (let attempt = 0; ; attempt++) {
			try {
				return await this.streamOnce(question, onToken, signal);
			} catch (e) {
				// A 503 arrives before the stream starts: nothing was generated or recorded yet.
				if (e instanceof HttpError && (await this.shouldRetry(e, attempt, signal))) continue;
				throw e;
			}
		}
	}

	private async streamOnce(question: string, onToken: (text: string) => void, signal?: AbortSignal): Promise<Answer> {
		const url = this.baseUrl + "/ask/stream";
		const controller = new AbortController();
		let timedOut = false;
		let idle: ReturnType<typeof setTimeout> | undefined;
		const armIdle = (ms: number) => {
			clearTimeout(idle);
			idle = setTimeout(() => {
				timedOut = true;
				controller.abort();
			}, ms);
		};
		const onAbort = () => controller.abort();
		if (signal?.aborted) throw new Aborted();
		signal?.addEventListener("abort", onAbort, { once: true });
		const failure = (e: unknown): Error => {
			if (signal?.aborted) return new Aborted();
			if (timedOut) return new Timeout(this.baseUrl, Math.round(this.o.streamIdleMs / 1000));
			if (e instanceof HttpError) return e;
			return new DaemonDown(this.baseUrl, e instanceof Error ? e.message : String(e));
		};
		try {
			armIdle(this.o.jsonTimeoutMs); // the response head comes at once, before any generation
			let response: Response;
			try {
				response = await this.o.fetch(url, {
					method: "POST",
					headers: this.headers(true, { "Content-Type": "application/json", Accept: "text/event-stream" }),
					body: JSON.stringify({ question }),
					signal: controller.signal,
				});
			} catch (e) {
				throw failure(e);
			}
			if (!response.ok) {
				const text = await response.text().catch(() => "");
				throw new HttpError(response.status, errorMessage(text), retryAfterSeconds(response.headers.get("retry-after") ?? undefined));
			}
			if (!response.body) throw new DaemonDown(this.baseUrl, "the answer stream has no body");
			const reader = response.body.getReader();
			const decoder = new TextDecoder();
			const parser = new SseParser();
			for (;;) {
				armIdle(this.o.streamIdleMs);
				let chunk: ReadableStreamReadResult<Uint8Array>;
				try {
					chunk = await reader.read();
				} catch (e) {
					throw failure(e);
				}
				if (chunk.done) break;
				for (const ev of parser.push(decoder.decode(chunk.value, { stream: true }))) {
					const data = JSON.parse(ev.data);
					if (ev.event === "token") onToken(data.text);
					else if (ev.event === "final") {
						await reader.cancel().catch(() => undefined);
						return data as Answer;
					} else if (ev.event === "error") throw new HttpError(500, data.error ?? "generation failed");
				}
			}
			throw new DaemonDown(this.baseUrl, "the answer stream ended before the answer was complete");
		} finally {
			clearTimeout(idle);
			signal?.removeEventListener("abort", onAbort);
		}
	}

	/** Settings' "Test connection": says exactly what is wrong, or what it found. */
	async testConnection(): Promise<ConnectionReport> {
		let health: Health;
		try {
			health = await this.health();
		} catch (e) {
			return { ok: false, message: e instanceof Error ? e.message : String(e) };
		}
		if (!versionCompatible(health.version)) {
			return { ok: false, message: new VersionMismatch(health.version, API_VERSION).message, version: health.version };
		}
		if (!this.connection().token.trim()) {
			return { ok: false, message: "no token set: run `vault-agent token` and paste it here", version: health.version };
		}
		try {
			const st = await this.status();
			const ix = st.index;
			return {
				ok: true,
				version: health.version,
				message: `Connected to vault-agent ${health.version}: ${ix.notes_indexed} of ${ix.notes_total} notes indexed in "${ix.vault_name}"`,
			};
		} catch (e) {
			return { ok: false, message: e instanceof Error ? e.message : String(e), version: health.version };
		}
	}
}

export function versionCompatible(version: string): boolean {
	return version.split(".").slice(0, 2).join(".") === API_VERSION;
}
