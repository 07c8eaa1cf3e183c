#!/usr/bin/env node
// Before `npm run dev` and `npm test`: the protosync binary (cargo; a no-op
// when it is up to date, skipped when PROTOSYNC_BIN names one) and the
// TypeScript SDK this app depends on (clients/ts, built once), then this
// app's own TypeScript (server/, test/) into build/.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const example = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(example, "../..");
const sdk = join(repo, "clients/ts");

function run(command, args, cwd) {
  const result = spawnSync(command, args, { cwd, stdio: "inherit" });
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (process.env.PROTOSYNC_BIN === undefined) run("cargo", ["build", "-p", "protosync", "--locked", "--quiet"], repo);
if (!existsSync(join(sdk, "dist/index.js"))) {
  if (!existsSync(join(sdk, "node_modules"))) run("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], sdk);
  run("npm", ["run", "build", "--silent"], sdk);
}
run(process.execPath, [join(example, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.node.json"], example);
