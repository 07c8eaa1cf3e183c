#!/usr/bin/env node
// Bundle size of the SDK's entry points as an app's bundler would ship
// them: esbuild, ESM, minified, for browsers, with the peer dependencies
// (react, @tanstack/react-query, ws) left out; then gzip -9.
//
// Run after `npm run build`: node scripts/bundle-size.mjs
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
// Each entry re-exports everything of the modules an app of that kind
// imports, so nothing is shaken out: these are upper bounds.
const entries = [
  ["protosync (core)", 'export * from "./dist/index.js";'],
  ["protosync + protosync/react", 'export * from "./dist/index.js"; export * from "./dist/react/index.js";'],
  ["protosync + protosync/tanstack", 'export * from "./dist/index.js"; export * from "./dist/tanstack/index.js";'],
  ["protosync/server (with the query builders)", 'export * from "./dist/server/index.js"; export { collection } from "./dist/index.js";'],
];
console.log("| entry | minified | minified + gzip |");
console.log("|---|---:|---:|");
for (const [name, entry] of entries) {
  const result = await build({
    stdin: { contents: entry, resolveDir: root, loader: "js" },
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    external: ["react", "react-dom", "@tanstack/react-query", "ws"],
    logLevel: "silent",
  });
  const bytes = result.outputFiles[0].contents;
  const gz = gzipSync(bytes, { level: 9 });
  const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log(`| \`${name}\` | ${kib(bytes.length)} | ${kib(gz.length)} |`);
}
