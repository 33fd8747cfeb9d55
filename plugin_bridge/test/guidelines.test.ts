// Obsidian's plugin guidelines, checked on the source so a regression fails here.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..");
const sources = readdirSync(join(root, "src"), { recursive: true })
	.map(String)
	.filter((f) => f.endsWith(".ts"))
	.map((f) => ({ f, text: readFileSync(join(root, "src", f), "utf8") }));

describe("plugin guidelines", () => {
	it("builds DOM with createEl, never innerHTML", () => {
		for (const { f, text } of sources) expect(text, f).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML/);
	});

	it("sets no default hotkeys", () => {
		for (const { f, text } of sources) expect(text, f).not.toMatch(/hotkeys\s*:/);
	});

	it("names commands in sentence case", () => {
		const names = [...sources.map((s) => s.text).join("\n").matchAll(/name:\s*"([^"]+)"/g)].map((m) => m[1]);
		expect(names.length).toBeGreaterThan(3);
		for (const n of names) expect(n.slice(1), n).toBe(n.slice(1).toLowerCase());
	});

	it("colours only with the theme's CSS variables", () => {
		const css = readFileSync(join(root, "styles.css"), "utf8");
		expect(css).not.toMatch(/#[0-9a-f]{3,8}\b|rgba?\(|hsla?\(|(?<![-\w])(white|black|red|green|blue|gr[ae]y)(?![-\w])/i);
	});

	it("is desktop only and versioned like the sample plugin", () => {
		const manifest = JSON.parse(readFileSync(join(root, "manifest.json"), "utf8"));
		const versions = JSON.parse(readFileSync(join(root, "versions.json"), "utf8"));
		const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
		expect(manifest.isDesktopOnly).toBe(true);
		expect(manifest.id).toBe("vault-agent");
		expect(versions[manifest.version]).toBe(manifest.minAppVersion);
		expect(pkg.version).toBe(manifest.version);
	});
});
