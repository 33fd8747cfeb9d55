// A small stand-in for the `obsidian` module: just what the plugin uses, with Obsidian's DOM
// helpers (createEl, empty, setText...) installed on HTMLElement the way the app does.
/* eslint-disable @typescript-eslint/no-explicit-any */

type ElInfo = { cls?: string | string[]; text?: string; attr?: Record<string, string>; href?: string; type?: string } | string;

function applyInfo(el: HTMLElement, info?: ElInfo): void {
	if (info === undefined) return;
	if (typeof info === "string") return void el.addClass(info);
	if (info.cls) for (const c of ([] as string[]).concat(info.cls)) c.split(" ").filter(Boolean).forEach((x) => el.classList.add(x));
	if (info.text !== undefined) el.textContent = info.text;
	if (info.href !== undefined) el.setAttribute("href", info.href);
	if (info.type !== undefined) el.setAttribute("type", info.type);
	for (const [k, v] of Object.entries(info.attr ?? {})) el.setAttribute(k, v);
}

export function installDomHelpers(win: any = globalThis): void {
	const proto = win.HTMLElement?.prototype;
	if (!proto || proto.createEl) return;
	const doc = win.document;
	proto.createEl = function (tag: string, info?: ElInfo, cb?: (el: HTMLElement) => void) {
		const el = doc.createElement(tag);
		applyInfo(el, info);
		this.appendChild(el);
		cb?.(el);
		return el;
	};
	proto.createDiv = function (info?: ElInfo, cb?: any) {
		return this.createEl("div", info, cb);
	};
	proto.createSpan = function (info?: ElInfo, cb?: any) {
		return this.createEl("span", info, cb);
	};
	proto.empty = function () {
		while (this.firstChild) this.removeChild(this.firstChild);
	};
	proto.setText = function (text: string) {
		this.textContent = text;
	};
	proto.appendText = function (text: string) {
		this.appendChild(doc.createTextNode(text));
	};
	proto.addClass = function (...cls: string[]) {
		this.classList.add(...cls);
	};
	proto.removeClass = function (...cls: string[]) {
		this.classList.remove(...cls);
	};
	proto.toggleClass = function (cls: string, on: boolean) {
		this.classList.toggle(cls, on);
	};
	proto.hasClass = function (cls: string) {
		return this.classList.contains(cls);
	};
	proto.setAttr = function (k: string, v: string) {
		this.setAttribute(k, v);
	};
	proto.hide = function () {
		this.style.display = "none";
	};
	proto.show = function () {
		this.style.display = "";
	};
	proto.isShown = function () {
		return this.style.display !== "none";
	};
	win.createEl = (tag: string, info?: ElInfo) => {
		const el = doc.createElement(tag);
		applyInfo(el, info);
		return el;
	};
	win.createDiv = (info?: ElInfo) => win.createEl("div", info);
	if (!proto.scrollIntoView) proto.scrollIntoView = function () {};
}

installDomHelpers();

export class Notice {
	static messages: string[] = [];
	constructor(public message: string) {
		Notice.messages.push(message);
	}
	setMessage(m: string) {
		this.message = m;
		return this;
	}
	hide() {}
}

export class Component {
	private cleanups: (() => void)[] = [];
	children: Component[] = [];
	loaded = false;
	load() {
		this.loaded = true;
	}
	unload() {
		this.loaded = false;
		this.children.splice(0).forEach((c) => c.unload());
		this.unloadComponent();
	}
	addChild<T extends Component>(c: T): T {
		this.children.push(c);
		c.load();
		return c;
	}
	removeChild<T extends Component>(c: T): T {
		this.children = this.children.filter((x) => x !== c);
		c.unload();
		return c;
	}
	registerDomEvent(el: EventTarget, type: string, cb: (ev: any) => void) {
		el.addEventListener(type, cb);
		this.cleanups.push(() => el.removeEventListener(type, cb));
	}
	registerEvent() {}
	registerInterval(id: number) {
		this.cleanups.push(() => clearInterval(id));
		return id;
	}
	register(cb: () => void) {
		this.cleanups.push(cb);
	}
	unloadComponent() {
		this.cleanups.splice(0).forEach((c) => c());
	}
}

export class Scope {
	keys = new Map<string, (ev?: any) => any>();
	register(_mods: string[] | null, key: string, fn: (ev?: any) => any) {
		this.keys.set(key, fn);
		return { key };
	}
	/** Test helper: press a key as the app's keymap would. */
	press(key: string) {
		return this.keys.get(key)?.({ key });
	}
}

export class App {
	layoutReady: (() => void)[] = [];
	workspace: any = {
		onLayoutReady: (cb: () => void) => void this.layoutReady.push(cb),
		getLeavesOfType: () => [],
		getActiveFile: () => null,
		getActiveViewOfType: () => null,
		openLinkText: async () => undefined,
	};
}

export class WorkspaceLeaf {
	view: any = null;
}

export class View extends Component {
	containerEl: HTMLElement;
	app: App;
	constructor(public leaf: WorkspaceLeaf) {
		super();
		this.app = new App();
		this.containerEl = (globalThis as any).createDiv();
		this.containerEl.createDiv();
		this.containerEl.createDiv({ cls: "view-content" });
	}
}

export class ItemView extends View {
	get contentEl(): HTMLElement {
		return this.containerEl.children[1] as HTMLElement;
	}
}

export class MarkdownView extends ItemView {
	editor = { getSelection: () => "" };
}

export class Modal {
	static opened: Modal[] = [];
	contentEl: HTMLElement = (globalThis as any).createDiv();
	titleEl: HTMLElement = (globalThis as any).createDiv();
	scope = new Scope();
	constructor(public app: App) {}
	setTitle(t: string) {
		this.titleEl.setText(t);
		return this;
	}
	open() {
		Modal.opened.push(this);
		return (this as any).onOpen?.();
	}
	close() {
		Modal.opened = Modal.opened.filter((m) => m !== this);
		(this as any).onClose?.();
	}
}

class ButtonComponent {
	buttonEl: HTMLButtonElement;
	constructor(parent: HTMLElement) {
		this.buttonEl = parent.createEl("button");
	}
	setButtonText(t: string) {
		this.buttonEl.setText(t);
		return this;
	}
	setCta() {
		this.buttonEl.addClass("mod-cta");
		return this;
	}
	setDisabled(d: boolean) {
		this.buttonEl.disabled = d;
		return this;
	}
	onClick(cb: () => any) {
		this.buttonEl.addEventListener("click", cb);
		return this;
	}
}

class TextComponent {
	inputEl: HTMLInputElement;
	constructor(parent: HTMLElement) {
		this.inputEl = parent.createEl("input", { type: "text" });
	}
	setPlaceholder(p: string) {
		this.inputEl.placeholder = p;
		return this;
	}
	setValue(v: string) {
		this.inputEl.value = v;
		return this;
	}
	getValue() {
		return this.inputEl.value;
	}
	onChange(cb: (v: string) => any) {
		this.inputEl.addEventListener("input", () => cb(this.inputEl.value));
		return this;
	}
}

class DropdownComponent {
	selectEl: HTMLSelectElement;
	constructor(parent: HTMLElement) {
		this.selectEl = parent.createEl("select");
	}
	addOption(value: string, display: string) {
		const option = this.selectEl.createEl("option", { text: display });
		option.value = value;
		return this;
	}
	setValue(v: string) {
		this.selectEl.value = v;
		return this;
	}
	getValue() {
		return this.selectEl.value;
	}
	setDisabled(d: boolean) {
		this.selectEl.disabled = d;
		return this;
	}
	onChange(cb: (v: string) => any) {
		this.selectEl.addEventListener("change", () => cb(this.selectEl.value));
		return this;
	}
}

export class Setting {
	settingEl: HTMLElement;
	nameEl: HTMLElement;
	descEl: HTMLElement;
	controlEl: HTMLElement;
	constructor(container: HTMLElement) {
		this.settingEl = container.createDiv({ cls: "setting-item" });
		this.nameEl = this.settingEl.createDiv({ cls: "setting-item-name" });
		this.descEl = this.settingEl.createDiv({ cls: "setting-item-description" });
		this.controlEl = this.settingEl.createDiv({ cls: "setting-item-control" });
	}
	setName(n: string) {
		this.nameEl.setText(n);
		return this;
	}
	setDesc(d: string) {
		this.descEl.setText(d);
		return this;
	}
	addText(cb: (t: TextComponent) => any) {
		cb(new TextComponent(this.controlEl));
		return this;
	}
	addButton(cb: (b: ButtonComponent) => any) {
		cb(new ButtonComponent(this.controlEl));
		return this;
	}
	addDropdown(cb: (d: DropdownComponent) => any) {
		cb(new DropdownComponent(this.controlEl));
		return this;
	}
}

export class Plugin extends Component {
	saved: unknown = null;
	commands: any[] = [];
	views = new Map<string, (leaf: WorkspaceLeaf) => any>();
	statusBar: HTMLElement[] = [];
	settingTabs: any[] = [];
	constructor(public app: App, public manifest: any) {
		super();
	}
	async loadData() {
		return this.saved === null ? null : JSON.parse(JSON.stringify(this.saved));
	}
	async saveData(data: unknown) {
		this.saved = JSON.parse(JSON.stringify(data));
	}
	addCommand(c: any) {
		this.commands.push(c);
		return c;
	}
	registerView(type: string, make: (leaf: WorkspaceLeaf) => any) {
		this.views.set(type, make);
	}
	addRibbonIcon(icon: string, title: string, cb: () => void) {
		const el = (globalThis as any).createDiv({ attr: { "aria-label": title, "data-icon": icon } });
		el.addEventListener("click", cb);
		return el;
	}
	addSettingTab(tab: any) {
		this.settingTabs.push(tab);
	}
	addStatusBarItem() {
		const el = (globalThis as any).createDiv();
		this.statusBar.push(el);
		return el;
	}
}

export class PluginSettingTab {
	containerEl: HTMLElement = (globalThis as any).createDiv();
	constructor(public app: App, public plugin: Plugin) {}
}

export function setIcon(el: HTMLElement, icon: string): void {
	el.setAttr("data-icon", icon);
	// Obsidian draws a lucide SVG; a plain square stands in, so the icon has a size in screenshots.
	const svg = el.ownerDocument.createElementNS("http://www.w3.org/2000/svg", "svg");
	svg.setAttribute("class", `svg-icon lucide-${icon}`);
	svg.setAttribute("viewBox", "0 0 24 24");
	svg.setAttribute("width", "16");
	svg.setAttribute("height", "16");
	svg.innerHTML = ICONS[icon] ?? '<rect x="4" y="4" width="16" height="16" rx="3" fill="none" stroke="currentColor" stroke-width="2"/>';
	el.replaceChildren(svg);
}

const ICONS: Record<string, string> = {
	"thumbs-up": '<path d="M7 10v12M15 5.9 14 10h5.8a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.4 22H4a2 2 0 0 1-2-2v-8a2 2 0 0 1 2-2h2.8a2 2 0 0 0 1.8-1.1L12 2a3.1 3.1 0 0 1 3 3.9Z" fill="none" stroke="currentColor" stroke-width="2"/>',
	"thumbs-down": '<path d="M17 14V2M9 18.1 10 14H4.2a2 2 0 0 1-2-2.3l1.4-8A2 2 0 0 1 5.6 2H20a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-2.8a2 2 0 0 0-1.8 1.1L12 22a3.1 3.1 0 0 1-3-3.9Z" fill="none" stroke="currentColor" stroke-width="2"/>',
	pencil: '<path d="M17 3a2.8 2.8 0 1 1 4 4L7.5 20.5 2 22l1.5-5.5Z" fill="none" stroke="currentColor" stroke-width="2"/>',
	"refresh-cw": '<path d="M3 12a9 9 0 0 1 15-6.7L21 8M21 3v5h-5M21 12a9 9 0 0 1-15 6.7L3 16M3 21v-5h5" fill="none" stroke="currentColor" stroke-width="2"/>',
	play: '<path d="M6 3l14 9-14 9Z" fill="none" stroke="currentColor" stroke-width="2"/>',
	check: '<path d="M20 6 9 17l-5-5" fill="none" stroke="currentColor" stroke-width="2"/>',
	"undo-2": '<path d="M9 14 4 9l5-5M4 9h10.5a5.5 5.5 0 0 1 0 11H11" fill="none" stroke="currentColor" stroke-width="2"/>',
	"power-off": '<path d="M18.4 6.6a9 9 0 1 1-12.8 0M12 2v10" fill="none" stroke="currentColor" stroke-width="2"/>',
	"columns-2": '<rect x="3" y="3" width="18" height="18" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M12 3v18" stroke="currentColor" stroke-width="2"/>',
};

/**
 * Stand-in for Obsidian's MarkdownRenderer: headings, paragraphs, lists, bold, italics, code and
 * wiki links, built as DOM nodes (never innerHTML). The app renders with its own, richer one.
 */
export class MarkdownRenderer {
	static rendered: string[] = [];
	static async render(_app: App, markdown: string, el: HTMLElement, _sourcePath: string, _component: Component): Promise<void> {
		MarkdownRenderer.rendered.push(markdown);
		const doc = el.ownerDocument;
		let list: HTMLElement | null = null;
		let para: HTMLElement | null = null;
		for (const raw of markdown.split(/\r?\n/)) {
			const line = raw.trimEnd();
			const heading = /^(#{1,6})\s+(.*)$/.exec(line);
			const item = /^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/.exec(line);
			if (!line.trim()) {
				list = para = null;
			} else if (heading) {
				list = para = null;
				inline(el.createEl(`h${heading[1].length}` as "h1"), heading[2]);
			} else if (item) {
				para = null;
				const tag = item[1] ? "ol" : "ul";
				if (!list || list.tagName.toLowerCase() !== tag) list = el.createEl(tag);
				inline(list.createEl("li"), item[2]);
			} else {
				list = null;
				if (para) para.appendChild(doc.createElement("br"));
				else para = el.createEl("p");
				inline(para, line);
			}
		}
	}
}

function inline(el: HTMLElement, text: string): void {
	const doc = el.ownerDocument;
	const pattern = /(\*\*|__)(.+?)\1|(\*|_)(?=\S)(.+?)\3|`([^`]+)`|\[\[([^\]|]+)(?:\|([^\]]+))?\]\]/g;
	let last = 0;
	for (const m of text.matchAll(pattern)) {
		el.appendChild(doc.createTextNode(text.slice(last, m.index)));
		if (m[2] !== undefined) inline(el.createEl("strong"), m[2]);
		else if (m[4] !== undefined) inline(el.createEl("em"), m[4]);
		else if (m[5] !== undefined) el.createEl("code", { text: m[5] });
		else {
			const a = el.createEl("a", { text: m[7] ?? m[6], cls: "internal-link", href: m[6] });
			a.dataset.href = m[6];
		}
		last = (m.index ?? 0) + m[0].length;
	}
	el.appendChild(doc.createTextNode(text.slice(last)));
}

export function requestUrl(): never {
	throw new Error("requestUrl is not available in tests: inject a request function");
}
