// What can go wrong talking to the daemon, as classes the UI turns into one clear sentence.

/** No TCP answer at all: the daemon is not running (or is restarting). */
export class DaemonDown extends Error {
	constructor(public readonly url: string, cause?: string) {
		super(`vault-agent daemon is not running at ${url}${cause ? ` (${cause})` : ""}: start it with \`vault-agent serve\``);
		this.name = "DaemonDown";
	}
}

/** It answered nothing within the time limit: busy, slow or restarting. */
export class Timeout extends Error {
	constructor(public readonly url: string, public readonly seconds: number) {
		super(`vault-agent daemon at ${url} did not answer within ${seconds} s (busy or restarting?)`);
		this.name = "Timeout";
	}
}

/** The caller gave up (Stop pressed, view closed). */
export class Aborted extends Error {
	constructor() {
		super("stopped");
		this.name = "Aborted";
	}
}

/** An HTTP error status with the daemon's `{"error": ...}` message. */
export class HttpError extends Error {
	constructor(
		public readonly status: number,
		public readonly detail: string,
		public readonly retryAfterS: number | null = null,
	) {
		super(describeStatus(status, detail, retryAfterS));
		this.name = "HttpError";
	}
}

/** A version the plugin does not speak. */
export class VersionMismatch extends Error {
	constructor(public readonly daemon: string, public readonly expected: string) {
		super(`daemon version ${daemon} does not match this plugin (it speaks ${expected}.x): update the plugin or the daemon`);
		this.name = "VersionMismatch";
	}
}

function describeStatus(status: number, detail: string, retryAfterS: number | null): string {
	if (status === 401) return "wrong or missing token: run `vault-agent token` and paste it in the plugin settings";
	if (status === 400 && /host/i.test(detail)) {
		return `the daemon refused the Host of the URL (${detail}): use http://127.0.0.1:PORT or http://localhost:PORT`;
	}
	if (status === 503) return `daemon busy: ${detail}${retryAfterS !== null ? ` (retry in ${retryAfterS} s)` : ""}`;
	if (status >= 500) return `daemon error ${status}: ${detail}`;
	return `${detail} (HTTP ${status})`;
}

/** Worth trying again later (the outbox keeps the item): down, slow, busy, or a server fault. */
export function isTransient(e: unknown): boolean {
	if (e instanceof DaemonDown || e instanceof Timeout) return true;
	return e instanceof HttpError && (e.status === 503 || e.status === 502 || e.status === 504 || e.status === 500 || e.status === 429 || e.status === 408);
}
