// @vitest-environment happy-dom
import { describe, expect, it } from "vitest";
import { App, Plugin } from "./obsidian-mock";
import type { ConnectionReport } from "../src/api/client";
import { DEFAULT_DATA, VaultAgentSettingTab } from "../src/settings";

function tab(report: ConnectionReport) {
	const host = { data: { ...DEFAULT_DATA, outbox: [] }, saves: 0, persist: async () => void host.saves++, testConnection: async () => report };
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
});
