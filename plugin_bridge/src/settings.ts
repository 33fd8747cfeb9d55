// Plugin data (data.json): where the daemon is, its token, and the ratings waiting to be sent.
// `vault-agent plugin install` writes daemonUrl and token into the same file.

import { App, PluginSettingTab, Setting } from "obsidian";
import type { ConnectionReport } from "./api/client";
import type { OutboxItem } from "./api/types";

export interface PluginData {
	daemonUrl: string;
	token: string;
	outbox: OutboxItem[];
}

export const DEFAULT_DATA: PluginData = {
	daemonUrl: "http://127.0.0.1:8765",
	token: "",
	outbox: [],
};

/** What the settings tab needs from the plugin (kept narrow so tests can supply it). */
export interface SettingsHost {
	data: PluginData;
	persist(): Promise<void>;
	testConnection(): Promise<ConnectionReport>;
}

export class VaultAgentSettingTab extends PluginSettingTab {
	constructor(app: App, plugin: import("obsidian").Plugin, private readonly host: SettingsHost) {
		super(app, plugin);
	}

	display(): void {
		const { containerEl } = this;
		containerEl.empty();

		new Setting(containerEl)
			.setName("Daemon URL")
			.setDesc("Where `vault-agent serve` listens (it prints the URL when it starts).")
			.addText((text) =>
				text
					.setPlaceholder(DEFAULT_DATA.daemonUrl)
					.setValue(this.host.data.daemonUrl)
					.onChange(async (value) => {
						this.host.data.daemonUrl = value.trim() || DEFAULT_DATA.daemonUrl;
						await this.host.persist();
					}),
			);

		const token = new Setting(containerEl)
			.setName("Token")
			.addText((text) => {
				text.inputEl.type = "password";
				text.setPlaceholder("Paste the token").setValue(this.host.data.token).onChange(async (value) => {
					this.host.data.token = value.trim();
					await this.host.persist();
				});
			});
		const desc = token.descEl;
		desc.appendText("Run ");
		desc.createEl("code", { text: "vault-agent token" });
		desc.appendText(" in a terminal and paste what it prints. ");
		desc.createEl("code", { text: "vault-agent plugin install" });
		desc.appendText(" fills this in for you.");

		const result = containerEl.createDiv({ cls: "vault-agent-test-result" });
		new Setting(containerEl)
			.setName("Test connection")
			.setDesc("Checks that the daemon runs, accepts the token and speaks this plugin's version.")
			.addButton((button) =>
				button.setButtonText("Test connection").onClick(async () => {
					button.setDisabled(true);
					result.setText("Testing…");
					result.removeClass("is-ok", "is-error");
					try {
						const report = await this.host.testConnection();
						result.setText(report.message);
						result.addClass(report.ok ? "is-ok" : "is-error");
					} finally {
						button.setDisabled(false);
					}
				}),
			);
		// The result line sits under the button.
		containerEl.appendChild(result);
	}
}
