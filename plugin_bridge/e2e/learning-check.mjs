// Opens the learning view (e2e/harness.html?view=learning) in headless Chromium against a real
// daemon, screenshots it, opens the training curve, clicks "Roll back", then "Retrain now", and
// prints what a user would see as JSON.
// Usage: node e2e/learning-check.mjs <harness url with ?view=learning&url=&token=> <output dir>
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [harnessUrl, outDir] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
	executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
	args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = {};
const activeRow = () => document.querySelector("tr.is-active")?.getAttribute("data-version") ?? null;
try {
	const page = await browser.newPage({ viewport: { width: 440, height: 1100 } });
	const consoleErrors = [];
	page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
	page.on("pageerror", (e) => consoleErrors.push(String(e)));
	await page.goto(harnessUrl);
	await page.waitForFunction(() => window.VA?.done, null, { timeout: 60_000 });
	result.done = await page.evaluate(() => window.VA.done);
	result.waiting = await page.textContent(".vault-agent-waiting");
	result.schedule = await page.textContent(".vault-agent-schedule");
	result.last_run = await page.textContent(".vault-agent-last-run").catch(() => null);
	result.serving = await page.textContent(".vault-agent-serving");
	result.rows = await page.$$eval("tr[data-version]", (trs) => trs.map((tr) => Array.from(tr.querySelectorAll("td")).map((td) => td.textContent)));
	result.active_before = await page.evaluate(activeRow);
	result.chart_points = await page.$$eval("svg.vault-agent-chart circle title", (ts) => ts.map((t) => t.textContent));
	await page.waitForSelector(".vault-agent-plot", { timeout: 15_000 });
	await page.click(".vault-agent-plot summary");
	await page.waitForFunction(() => document.querySelector(".vault-agent-plot img")?.naturalWidth > 0, null, { timeout: 15_000 });
	result.plot_size = await page.$eval(".vault-agent-plot img", (img) => [img.naturalWidth, img.naturalHeight]);
	result.unlabeled_buttons = await page.$$eval("button", (bs) => bs.filter((b) => !b.getAttribute("aria-label")).map((b) => b.outerHTML));
	await page.screenshot({ path: join(outDir, "learning-view.png"), fullPage: true });

	await page.click('[aria-label="Serve the version served before this one"]');
	await page.waitForFunction((before) => document.querySelector("tr.is-active")?.getAttribute("data-version") !== before, result.active_before, { timeout: 30_000 });
	result.active_after_rollback = await page.evaluate(activeRow);
	result.serving_after_rollback = await page.textContent(".vault-agent-serving");

	await page.click('[aria-label="Start the nightly retrain now"]');
	await page.waitForFunction(() => /Not due/.test(document.querySelector(".vault-agent-last-run")?.textContent ?? ""), null, { timeout: 60_000 });
	result.last_run_after_retrain = await page.textContent(".vault-agent-last-run");
	await page.screenshot({ path: join(outDir, "learning-view-after.png"), fullPage: true });
	result.console_errors = consoleErrors;
} finally {
	await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
