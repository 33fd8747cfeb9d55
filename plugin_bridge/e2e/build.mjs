// Bundles the end-to-end driver (e2e/run.ts + the plugin's client code) for Node.
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
