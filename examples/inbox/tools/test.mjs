#!/usr/bin/env node
// Checks the generated client is fresh and the web app type-checks, then
// runs the tests: the backend's actions over HTTP (build/test/actions.test.js)
// and the browser test (build/test/inbox.test.js) in Debian's Chromium
// (PROTOSYNC_CHROMIUM, default /usr/bin/chromium). Without Chromium the
// browser test is skipped with a note, except under CI=true, where that is a
// failure.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const example = join(dirname(fileURLToPath(import.meta.url)), "..");
const chromium = process.env.PROTOSYNC_CHROMIUM ?? "/usr/bin/chromium";
const tests = [join(example, "build/test/actions.test.js")];
if (existsSync(chromium)) {
  tests.push(join(example, "build/test/inbox.test.js"));
} else {
  const why = `no Chromium at ${chromium} (apt-get install chromium, or set PROTOSYNC_CHROMIUM)`;
  if (process.env.CI === "true") {
    console.error(`examples/inbox: ${why}`);
    process.exit(1);
  }
  console.error(`examples/inbox: ${why}; skipping the browser test (it fails under CI=true)`);
}
const repo = join(example, "../..");
const binary = process.env.PROTOSYNC_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug/protosync");
function run(command, args) {
  const result = spawnSync(command, args, { cwd: example, stdio: "inherit" });
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) process.exit(result.status ?? 1);
}
// The generated client matches the schema, and the web app type-checks against it.
run(binary, ["codegen", "ts", "--schema", "schema", "--out", "web/src/protosync", "--check"]);
run(process.execPath, [join(example, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"]);

const result = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=120000", ...tests], {
  cwd: example,
  stdio: "inherit",
});
process.exit(result.status ?? 1);
