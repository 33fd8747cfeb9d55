// The transport the client is given: Obsidian's requestUrl in the app, fetch under Node and
// in tests. Kept free of Obsidian imports so vitest and the end-to-end script can use it.

export interface HttpRequest {
	url: string;
	method: "GET" | "POST";
	headers: Record<string, string>;
	body?: string;
}

export interface HttpResponse {
	status: number;
	headers: Record<string, string>;
	text: string;
}

/** Must resolve for every HTTP status (4xx/5xx included) and reject only when nothing answered. */
export type RequestFn = (req: HttpRequest) => Promise<HttpResponse>;

/** The fetch API, for streaming (and for JSON calls outside Obsidian). */
export type FetchFn = (url: string, init: RequestInit) => Promise<Response>;

/** A RequestFn over fetch (Node, browsers, tests). */
export function fetchRequest(fetchImpl: FetchFn): RequestFn {
	return async (req) => {
		const r = await fetchImpl(req.url, { method: req.method, headers: req.headers, body: req.body });
		const headers: Record<string, string> = {};
		r.headers.forEach((v, k) => (headers[k.toLowerCase()] = v));
		return { status: r.status, headers, text: await r.text() };
	};
}

export function header(headers: Record<string, string>, name: string): string | undefined {
	const want = name.toLowerCase();
	for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === want) return v;
	return undefined;
}

/** Retry-After in seconds (delta-seconds or an HTTP date); null when absent or unreadable. */
export function retryAfterSeconds(value: string | undefined, now: number = Date.now()): number | null {
	if (!value) return null;
	const trimmed = value.trim();
	if (/^\d+$/.test(trimmed)) return Number(trimmed);
	const when = Date.parse(trimmed);
	return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - now) / 1000));
}
