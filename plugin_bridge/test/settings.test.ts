// @vitest-environment happy-dom
import { describe, expect, it } from "vitest";
import { App, Plugin } from "./obsidian-mock";
import type { ConnectionReport } from "../src/api/client";
import { HttpError } from "../src/api/errors";
import type { ModelListing, ModelUsed } from "../src/api/types";
import { DEFAULT_DATA, VaultAgentSettingTab } from "../src/settings";

const MODELS: ModelListing = {
	served: "SmolLM2-135M-Instruct.Q4_1.gguf",
	models: [
		{ name: "bundled", source: "bundled", path: "/b.gguf", architecture: "llama", parameters: 1, quantization: "Q4_1", can: "serve+train", why_not: null, served: true },
		{ name: "qwen2.5:7b", source: "ollama", path: "/q.gguf", architecture: "qwen2", parameters: 7, quantization: "Q4_K_M", can: "serve+train", why_not: null, served: false },
		{ name: "half.gguf", source: "folder", path: "/h.gguf", architecture: null, parameters: null, quantization: null, can: null, why_not: "truncated", served: false },
	],
};

function tab(report: ConnectionReport, useModel: (name: string) => Promise<ModelUsed> = async () => { throw new Error("unused"); }) {
	const host = { data: { ...DEFAULT_DATA, outbox: [] }, saves: 0, persist: async () => void host.saves++, testConnection: async () => report,
		listModels: async () => MODELS, useModel, used: [] as string[] };
	const t = new VaultAgentSettingTab(new App() as never, new Plugin(new App(), {}) as never, host);
	t.display();
	return { t, host };
}

describe("settings tab", () => {
	it("edits the URL and token, and says how to get the token", () => {
		const { t, host } = tab({ ok: true, message: "" });
		const inputs = t.containerEl.querySelectorAll("input");
		expect(inputs[0].value).toBe("http://127.0.0.1:8765");
		expect(inputs[1].type).toBe("password");
		inputs[1].value = "  abc  ";
		inputs[1].dispatchEvent(new Event("input"));
		expect(host.data.token).toBe("abc");
		expect(host.saves).toBe(1);
		expect(t.containerEl.textContent).toContain("vault-agent token");
	});

	it("Test connection shows exactly what is wrong", async () => {
		const { t } = tab({ ok: false, message: "wrong or missing token: run `vault-agent token` and paste it in the plugin settings" });
		const button = Array.from(t.containerEl.querySelectorAll("button")).find((b) => b.textContent === "Test connection")!;
		button.click();
		await new Promise((r) => setTimeout(r, 0));
		const result = t.containerEl.querySelector(".vault-agent-test-result") as HTMLElement;
		expect(result.textContent).toContain("wrong or missing token");
		expect(result.hasClass("is-error")).toBe(true);
	});

	it("lists the servable models in a dropdown, and switching shows the result and the adapter notice", async () => {
		const asked: string[] = [];
		const { t } = tab({ ok: true, message: "" }, async (name) => {
			asked.push(name);
			return { model: { ...MODELS.models[1], served: true }, switch_ms: 2400, notice: "adapter v0003 switched off: trained on another base model", warning: null };
		});
		await new Promise((r) => setTimeout(r, 0));
		const select = t.containerEl.querySelector("select") as HTMLSelectElement;
		expect(Array.from(select.options).map((o) => o.value)).toEqual(["bundled", "qwen2.5:7b"]); // the broken one is left out
		expect(select.value).toBe("bundled");
		select.value = "qwen2.5:7b";
		select.dispatchEvent(new Event("change"));
		await new Promise((r) => setTimeout(r, 0));
		expect(asked).toEqual(["qwen2.5:7b"]);
		const line = t.containerEl.querySelector(".vault-agent-model-result") as HTMLElement;
		expect(line.textContent).toBe("Serving qwen2.5:7b (switched in 2.4 s). adapter v0003 switched off: trained on another base model");
		expect(select.disabled).toBe(false);
	});

	it("a refused switch shows the daemon's reason", async () => {
		const { t } = tab({ ok: true, message: "" }, async () => { throw new HttpError(422, "cannot use x: truncated"); });
		await new Promise((r) => setTimeout(r, 0));
		const select = t.containerEl.querySelector("select") as HTMLSelectElement;
		select.value = "qwen2.5:7b";
		select.dispatchEvent(new Event("change"));
		await new Promise((r) => setTimeout(r, 0));
		const line = t.containerEl.querySelector(".vault-agent-model-result") as HTMLElement;
		expect(line.textContent).toContain("truncated");
		expect(line.hasClass("is-error")).toBe(true);
	});
});
