// Plugin data (data.json): where the daemon is, its token, and the ratings waiting to be sent.
// `vault-agent plugin install` writes daemonUrl and token into the same file.

import { App, PluginSettingTab, Setting } from "obsidian";
import type { ConnectionReport } from "./api/client";
import type { ModelListing, ModelUsed, OutboxItem } from "./api/types";
import { describeError } from "./describe";

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
	listModels(): Promise<ModelListing>;
	useModel(name: string): Promise<ModelUsed>;
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
		this.modelSetting(containerEl);
	}

	/** A dropdown of the models the daemon found (GET /models); choosing one switches the daemon to it. */
	private modelSetting(containerEl: HTMLElement): void {
		const line = containerEl.createDiv({ cls: "vault-agent-model-result" });
		const setting = new Setting(containerEl)
			.setName("Model")
			.setDesc("The GGUF chat model the daemon serves: models found in Ollama, LM Studio, the Hugging Face cache and llm.model_dirs. Adapters trained on another model are switched off.");
		containerEl.appendChild(line);
		setting.addDropdown((dropdown) => {
			dropdown.addOption("", "Loading…").setDisabled(true);
			void this.host.listModels().then(
				(listing) => {
					dropdown.selectEl.empty();
					for (const m of listing.models) {
						if (m.can === null) continue; // broken or not a chat model: `vault-agent models list` says why
						const size = m.quantization ? `, ${m.quantization}` : "";
						dropdown.addOption(m.name, `${m.name} (${m.source}${size}, ${m.can})`);
					}
					const served = listing.models.find((m) => m.served);
					if (served) dropdown.setValue(served.name);
					dropdown.setDisabled(false);
				},
				(e) => line.setText(`Cannot list models: ${describeError(e)}`),
			);
			dropdown.onChange(async (name) => {
				if (!name) return;
				dropdown.setDisabled(true);
				line.removeClass("is-ok", "is-error");
				line.setText(`Loading ${name}…`);
				try {
					const used = await this.host.useModel(name);
					const notes = [used.notice, used.warning].filter(Boolean).join(" ");
					line.setText(`Serving ${used.model.name} (switched in ${(used.switch_ms / 1000).toFixed(1)} s).${notes ? " " + notes : ""}`);
					line.addClass("is-ok");
				} catch (e) {
					line.setText(describeError(e));
					line.addClass("is-error");
				} finally {
					dropdown.setDisabled(false);
				}
			});
		});
	}
}
