#!/usr/bin/env node
// The TS suite: build the package, type-check and build the tests (which
// includes the generated code under `tsc --strict` and the @ts-expect-error
// type tests), then run them with node's test runner against the real
// protosync binary (PROTOSYNC_BIN, default target/debug/protosync).
//
// `npm test -- build-test/live.test.js` runs only the files given.
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules/typescript/bin/tsc");

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

rmSync(join(root, "build-test"), { recursive: true, force: true });
run(process.execPath, [tsc, "-p", "tsconfig.json"]);
run(process.execPath, [tsc, "-p", "test/tsconfig.json"]);
const files = process.argv.slice(2);
const tests =
  files.length > 0
    ? files
    : readdirSync(join(root, "build-test"))
        .filter((f) => f.endsWith(".test.js"))
        .sort()
        .map((f) => join("build-test", f));
run(process.execPath, ["--test", "--test-timeout=120000", ...tests]);
