// @vitest-environment happy-dom
// The rendering helpers: snippets as plain text, [n] markers after markdown, throttled re-renders.
import { afterEach, describe, expect, it, vi } from "vitest";
import "./obsidian-mock";
import { ThrottledRender, answeredBy, linkMarkers, plainSnippet } from "../src/render";
import type { Citation } from "../src/api/types";

const cite = (n: number): Citation => ({ n, path: "N.md", heading: null, link: "[[N]]", uri: "obsidian://x", snippet: "", explicit: true });

describe("plainSnippet", () => {
	it.each([
		["**deeply twice a week**", "deeply twice a week"],
		["- one\n- two\n  - three", "one · two · three"],
		["# Tomatoes\nWater *daily* in `July`.", "Tomatoes · Water daily in July."],
		["See [[Garden/Soil#Loam]] and [[Garden/Soil|the soil]] or [docs](https://x.y).", "See Loam and the soil or docs."],
		["> quoted ==mark== ~~gone~~", "quoted mark gone"],
		["1. first\n2) second\n- [x] done", "first · second · done"],
		["snake_case_name stays, _this_ goes, __and this__", "snake_case_name stays, this goes, and this"],
		["a\n\n---\n\nb", "a · b"],
		["leaves invite blight. - The drip line: - [ ] check it ## Soil Loam", "leaves invite blight. · The drip line: · check it · Soil Loam"],
		["rinsed until clear - 800 ml water - 1 tsp turmeric - 1 tsp salt", "rinsed until clear · 800 ml water · 1 tsp turmeric · 1 tsp salt"],
		["Loam holds water - but drains.", "Loam holds water - but drains."],
	])("%j -> %j", (md, plain) => {
		expect(plainSnippet(md)).toBe(plain);
	});
});

describe("linkMarkers", () => {
	it("links known markers in text, leaves unknown ones and code alone", () => {
		const el = createDiv();
		el.createEl("p", { text: "Yes [1] and [7]." });
		el.createEl("code", { text: "arr[1]" });
		const jumped: number[] = [];
		linkMarkers(el, [cite(1)], (n) => jumped.push(n));
		const markers = el.querySelectorAll(".vault-agent-marker");
		expect(markers).toHaveLength(1);
		expect(el.textContent).toBe("Yes [1] and [7].arr[1]");
		(markers[0] as HTMLElement).click();
		expect(jumped).toEqual([1]);
	});
});

describe("answeredBy", () => {
	it("names the version or the base model", () => {
		expect(answeredBy("v0003")).toBe("answered by v0003");
		expect(answeredBy(null)).toBe("answered by the base model");
		expect(answeredBy(undefined)).toBe("answered by the base model");
	});
});

describe("ThrottledRender", () => {
	afterEach(() => vi.useRealTimers());

	it("re-renders a stream of 100 tokens over 2 s at most every 250 ms, and ends on the full text", async () => {
		vi.useFakeTimers();
		const drawn: string[] = [];
		const live = new ThrottledRender(async (t) => void drawn.push(t), 250, () => Date.now());
		let text = "";
		for (let i = 0; i < 100; i++) {
			text += `w${i} `;
			live.push(text);
			await vi.advanceTimersByTimeAsync(20);
		}
		await live.flush();
		expect(drawn.length).toBeLessThanOrEqual(1 + 2000 / 250 + 1);
		expect(drawn.length).toBeGreaterThan(3);
		expect(drawn.at(-1)).toBe(text);
	});
});
