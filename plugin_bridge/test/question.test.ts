import { describe, expect, it } from "vitest";
import { MAX_PASSAGE_CHARS, noteQuestion } from "../src/question";

describe("ask about the current note", () => {
	it("names the note in the question", () => {
		expect(noteQuestion("what is left to do?", "Projects/Heron.md")).toBe("About the note [[Projects/Heron]]. what is left to do?");
	});

	it("quotes the selection, trimmed to a bounded length", () => {
		const q = noteQuestion("why?", "Heron.md", "  cutover   moved\n to May ");
		expect(q).toBe('About this passage of the note [[Heron]]: "cutover moved to May". why?');
		expect(noteQuestion("why?", "Heron.md", "x".repeat(10_000)).length).toBeLessThan(MAX_PASSAGE_CHARS + 100);
	});
});
