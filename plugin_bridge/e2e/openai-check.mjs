// The official `openai` npm package (a client no one here wrote) against a running vault-agent
// daemon: under Node with dangerouslyAllowBrowser and Obsidian's Origin, and from pages in headless
// Chromium (Debian's chromium, driven by playwright-core) on a granted and on a foreign origin, so
// the browser's CORS preflight for the SDK's x-stainless-* headers is the real one.
// Driven by tests/test_openai_api.py:
//   node e2e/openai-check.mjs '<json {url, token, granted, foreign}>'
// where granted/foreign are http origins serving plugin_bridge/ (e2e/openai-page.html). Prints one
// JSON object with what happened.
import { mkdirSync } from "node:fs";
import esbuild from "esbuild";
import OpenAI from "openai";
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const QUESTION = "How often do I water the tomatoes?";

function describe(err) {
	return { name: err?.constructor?.name ?? "Error", status: err?.status ?? null, code: err?.code ?? null, message: String(err?.message ?? err) };
}

async function underNode() {
	const client = new OpenAI({
		baseURL: `${cfg.url}/v1`, apiKey: cfg.token, dangerouslyAllowBrowser: true, maxRetries: 0,
		defaultHeaders: { Origin: "app://obsidian.md" },
	});
	const out = {};
	out.models = (await client.models.list()).data.map((m) => m.id);
	const done = await client.chat.completions.create({ model: "vault-agent", messages: [{ role: "user", content: QUESTION }], max_tokens: 100 });
	out.answer = { content: done.choices[0].message.content, finish_reason: done.choices[0].finish_reason, vault_agent: done.vault_agent };
	const stream = await client.chat.completions.create({ model: "vault-agent-plain", messages: [{ role: "user", content: QUESTION }], max_tokens: 100, stream: true });
	let text = "";
	let last = null;
	for await (const chunk of stream) {
		if (chunk.choices.length) {
			text += chunk.choices[0].delta.content ?? "";
			last = chunk;
		}
	}
	out.stream = { content: text, finish_reason: last?.choices[0].finish_reason, vault_agent: last?.vault_agent };
	const emb = await client.embeddings.create({ model: "any", input: ["tomatoes need water"] });
	out.embedding_length = emb.data[0].embedding.length;
	try {
		await new OpenAI({ baseURL: `${cfg.url}/v1`, apiKey: "not-the-token", maxRetries: 0 }).models.list();
		out.wrong_key = null;
	} catch (err) {
		out.wrong_key = describe(err);
	}
	return out;
}

async function inChromium() {
	mkdirSync("e2e/dist", { recursive: true });
	await esbuild.build({  // the SDK as a browser script that sets window.OpenAI
		stdin: { contents: 'import OpenAI from "openai"; window.OpenAI = OpenAI;', resolveDir: process.cwd() },
		bundle: true, platform: "browser", format: "iife", target: "es2020", outfile: "e2e/dist/openai-browser.js", logLevel: "warning",
	});
	const browser = await chromium.launch({
		executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
		args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
	});
	const out = {};
	try {
		for (const [name, origin] of [["granted", cfg.granted], ["foreign", cfg.foreign]]) {
			const page = await browser.newPage();
			const sent = [];
			page.on("request", (r) => r.url().startsWith(cfg.url) && sent.push({ method: r.method(), headers: Object.keys(r.headers()) }));
			await page.goto(`${origin}/e2e/openai-page.html`);
			out[name] = await page.evaluate(async ({ url, token, question }) => {
				const client = new window.OpenAI({ baseURL: `${url}/v1`, apiKey: token, dangerouslyAllowBrowser: true, maxRetries: 0 });
				try {
					const stream = await client.chat.completions.create({ model: "vault-agent", messages: [{ role: "user", content: question }], max_tokens: 100, stream: true });
					let text = "";
					let last = null;
					for await (const chunk of stream) {
						if (chunk.choices.length) {
							text += chunk.choices[0].delta.content ?? "";
							last = chunk;
						}
					}
					return { ok: true, origin: location.origin, content: text, vault_agent: last?.vault_agent ?? null };
				} catch (err) {
					return { ok: false, origin: location.origin, error: { name: err?.constructor?.name, message: String(err?.message ?? err) } };
				}
			}, { url: cfg.url, token: cfg.token, question: QUESTION });
			out[name].sent = sent;
			await page.close();
		}
	} finally {
		await browser.close();
	}
	return out;
}

try {
	const result = { node: await underNode(), chromium: await inChromium() };
	process.stdout.write(JSON.stringify(result) + "\n");
} catch (err) {
	process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + "\n");
	process.exitCode = 1;
}
