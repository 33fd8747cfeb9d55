// A server-sent-events parser fed with text chunks as they arrive (they may split anywhere).

export interface SseEvent {
	event: string;
	data: string;
}

export class SseParser {
	private buffer = "";
	private event = "";
	private data: string[] = [];

	/** Feed a chunk; returns the events it completed. */
	push(chunk: string): SseEvent[] {
		this.buffer += chunk;
		const out: SseEvent[] = [];
		let nl: number;
		while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
			const line = this.buffer.slice(0, nl);
			const width = this.buffer.startsWith("\r\n", nl) ? 2 : 1;
			// A lone \r at the very end may be the first half of \r\n: wait for more.
			if (width === 1 && this.buffer[nl] === "\r" && nl === this.buffer.length - 1) break;
			this.buffer = this.buffer.slice(nl + width);
			const done = this.line(line);
			if (done) out.push(done);
		}
		return out;
	}

	private line(line: string): SseEvent | null {
		if (line === "") {
			if (!this.data.length) return (this.event = ""), null;
			const ev = { event: this.event || "message", data: this.data.join("\n") };
			this.event = "";
			this.data = [];
			return ev;
		}
		if (line.startsWith(":")) return null; // comment / keep-alive
		const colon = line.indexOf(":");
		const field = colon < 0 ? line : line.slice(0, colon);
		let value = colon < 0 ? "" : line.slice(colon + 1);
		if (value.startsWith(" ")) value = value.slice(1);
		if (field === "event") this.event = value;
		else if (field === "data") this.data.push(value);
		return null;
	}
}
