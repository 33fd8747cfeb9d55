// A small line chart in plain SVG (one series, a handful of points): no chart library at this size.

import type { ChartPoint } from "./learning-data";

const SVG = "http://www.w3.org/2000/svg";

export interface ChartOptions {
	width?: number;
	height?: number;
	/** Fixed y range (accuracy: 0..1); otherwise the points' own range, padded. */
	yRange?: [number, number];
	format?: (v: number) => string;
	title: string;
}

/** Where each point goes, in the SVG's own units (exported for tests). */
export function layout(points: ChartPoint[], o: Required<Pick<ChartOptions, "width" | "height">> & Pick<ChartOptions, "yRange">) {
	const pad = { left: 36, right: 10, top: 10, bottom: 22 };
	const values = points.map((p) => p.value);
	let [lo, hi] = o.yRange ?? [Math.min(...values), Math.max(...values)];
	if (hi - lo < 1e-9) {
		lo -= 0.5;
		hi += 0.5;
	}
	const w = o.width - pad.left - pad.right;
	const h = o.height - pad.top - pad.bottom;
	const x = (i: number) => pad.left + (points.length === 1 ? w / 2 : (i * w) / (points.length - 1));
	const y = (v: number) => pad.top + h - ((v - lo) / (hi - lo)) * h;
	return { pad, lo, hi, xy: points.map((p, i) => [x(i), y(p.value)] as const) };
}

function el<K extends keyof SVGElementTagNameMap>(doc: Document, parent: Element, tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
	const node = doc.createElementNS(SVG, tag);
	for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
	parent.appendChild(node);
	return node;
}

/** Appends the chart to `parent`; each point has a <title> with its version and value. */
export function lineChart(parent: HTMLElement, points: ChartPoint[], options: ChartOptions): SVGSVGElement {
	const doc = parent.ownerDocument;
	const width = options.width ?? 320;
	const height = options.height ?? 140;
	const format = options.format ?? ((v: number) => v.toFixed(2));
	const svg = el(doc, parent, "svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": options.title, class: "vault-agent-chart" });
	el(doc, svg, "title", {}).textContent = options.title;
	if (!points.length) return svg;
	const { pad, lo, hi, xy } = layout(points, { width, height, yRange: options.yRange });
	for (const v of [lo, hi]) {
		const yy = pad.top + (v === hi ? 0 : height - pad.top - pad.bottom);
		el(doc, svg, "line", { x1: pad.left, x2: width - pad.right, y1: yy, y2: yy, class: "vault-agent-chart-grid" });
		el(doc, svg, "text", { x: pad.left - 4, y: yy + 4, "text-anchor": "end", class: "vault-agent-chart-axis" }).textContent = format(v);
	}
	el(doc, svg, "polyline", { points: xy.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "), class: "vault-agent-chart-line", fill: "none" });
	points.forEach((p, i) => {
		const [cx, cy] = xy[i];
		const dot = el(doc, svg, "circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: p.active ? 5 : 3.5, class: `vault-agent-chart-point${p.active ? " is-active" : ""}` });
		dot.dataset.version = p.label;
		el(doc, dot, "title", {}).textContent = `${p.label}: ${format(p.value)}${p.active ? " (active)" : ""}`;
		el(doc, svg, "text", { x: cx.toFixed(1), y: height - 6, "text-anchor": "middle", class: "vault-agent-chart-axis" }).textContent = p.label;
	});
	return svg;
}
