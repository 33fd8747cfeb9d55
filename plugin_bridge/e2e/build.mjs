// Bundles the end-to-end drivers: e2e/run.ts for Node (the plugin's client against a daemon) and
// e2e/harness.ts for the browser (the real view with the obsidian stand-in).
import { fileURLToPath } from "node:url";
import esbuild from "esbuild";

await esbuild.build({
	entryPoints: ["e2e/run.ts"],
	bundle: true,
	platform: "node",
	format: "cjs",
	target: "node18",
	outfile: "e2e/dist/run.cjs",
	logLevel: "warning",
});

await esbuild.build({
	entryPoints: ["e2e/harness.ts"],
	bundle: true,
	platform: "browser",
	format: "iife",
	target: "es2020",
	outfile: "e2e/dist/harness.js",
	alias: { obsidian: fileURLToPath(new URL("../test/obsidian-mock.ts", import.meta.url)) },
	logLevel: "warning",
});
