// Opens e2e/harness.html in headless Chromium (Debian's chromium, driven by playwright-core),
// lets the real view ask the real daemon, screenshots it mid-stream and done, clicks thumbs up and
// a citation, and prints what a user would see as JSON.
// Usage: node e2e/render-check.mjs <harness url with ?url=&token=&q=> <output dir> [screenshot name prefix]
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [harnessUrl, outDir, prefix = "view"] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
	executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
	args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = {};
try {
	const page = await browser.newPage({ viewport: { width: 440, height: 760 } });
	const consoleErrors = [];
	page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
	page.on("pageerror", (e) => consoleErrors.push(String(e)));
	// A MutationObserver sees every render of the streaming answer; polling can miss a short one
	// that streams between two polls.
	await page.addInitScript(() => {
		window.__firstPartial = null;
		new MutationObserver((_, observer) => {
			const text = document.querySelector(".vault-agent-answer.is-streaming")?.textContent ?? "";
			if (text.length > 0) {
				window.__firstPartial = text;
				observer.disconnect();
			}
		}).observe(document, { childList: true, subtree: true, characterData: true, attributes: true });
	});
	await page.goto(harnessUrl);
	await page.waitForFunction(() => window.__firstPartial !== null || window.VA?.done, null, { timeout: 240_000 });
	result.streaming_text = await page.evaluate(() => window.__firstPartial);
	await page.screenshot({ path: join(outDir, `${prefix}-streaming.png`) });
	await page.waitForFunction(() => window.VA?.done, null, { timeout: 240_000 });
	result.done = await page.evaluate(() => window.VA.done);
	result.answer_text = await page.textContent(".vault-agent-answer");
	result.answer_strong = await page.$$eval(".vault-agent-answer strong", (els) => els.map((e) => e.textContent));
	result.answer_list_items = await page.$$eval(".vault-agent-answer li", (els) => els.map((e) => e.textContent));
	result.version_label = await page.textContent(".vault-agent-version").catch(() => null);
	result.snippets = await page.$$eval(".vault-agent-snippet", (els) => els.map((e) => e.textContent));
	result.unlabeled_buttons = await page.$$eval("button", (bs) => bs.filter((b) => !b.getAttribute("aria-label")).map((b) => b.outerHTML));
	result.citations = await page.$$eval(".vault-agent-citation a.internal-link", (as) => as.map((a) => a.textContent));
	result.first_citation_href = await page.$eval(".vault-agent-citation a.internal-link", (a) => a.dataset.href).catch(() => null);
	result.markers = await page.$$eval(".vault-agent-marker", (as) => as.map((a) => a.textContent));
	result.buttons = await page.$$eval(".vault-agent-actions button", (bs) => bs.map((b) => b.getAttribute("aria-label") ?? b.textContent));
	result.stop_disabled = await page.$eval("button:text('Stop')", (b) => b.disabled).catch(() => null);
	await page.screenshot({ path: join(outDir, `${prefix}-answer.png`) });
	await page.click('[aria-label="Good answer"]');
	await page.waitForFunction(() => window.VA.delivered.length > 0, null, { timeout: 30_000 });
	result.delivered = await page.evaluate(() => window.VA.delivered.map((i) => i.body));
	if (result.citations.length) {
		await page.click(".vault-agent-citation a.internal-link");
		result.opened = await page.evaluate(() => window.VA.opened);
	}
	result.thumb_active = await page.$eval('[aria-label="Good answer"]', (b) => b.classList.contains("is-active"));
	result.console_errors = consoleErrors;
} finally {
	await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
