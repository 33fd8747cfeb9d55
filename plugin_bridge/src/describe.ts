// One sentence for a Notice, whatever went wrong.

import { Aborted, DaemonDown, HttpError, Timeout } from "./api/errors";

export function describeError(e: unknown): string {
	if (e instanceof DaemonDown || e instanceof Timeout || e instanceof HttpError) return `vault-agent: ${e.message}`;
	if (e instanceof Aborted) return "vault-agent: stopped";
	return `vault-agent: ${e instanceof Error ? e.message : String(e)}`;
}
