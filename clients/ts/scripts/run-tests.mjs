#!/usr/bin/env node
// The TS suite: build the package, type-check and build the tests (which
// includes the generated code under `tsc --strict` and the @ts-expect-error
// type tests), then run them with node's test runner against the real
// protosync binary (PROTOSYNC_BIN, default target/debug/protosync).
//
// `npm test -- build-test/live.test.js` runs only the files given.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules/typescript/bin/tsc");

function run(command, args, env = {}) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit", env: { ...process.env, ...env } });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

/**
 * The hook tests again, on React 18: a folder whose node_modules links every
 * package of ours except react/react-dom, which point at the react-18 and
 * react-dom-18 aliases, with a copy of the package and the built tests.
 * Node runs it with --preserve-symlinks, so each module resolves its imports
 * from the folder it was linked into (react-dom 18 finds react 18).
 */
function reactEighteen() {
  const farm = join(root, "build-test/react18");
  const modules = join(farm, "node_modules");
  mkdirSync(modules, { recursive: true });
  for (const name of readdirSync(join(root, "node_modules"))) {
    if (name.startsWith(".") || name === "react" || name === "react-dom") continue;
    symlinkSync(join(root, "node_modules", name), join(modules, name));
  }
  symlinkSync(join(root, "node_modules/react-18"), join(modules, "react"));
  symlinkSync(join(root, "node_modules/react-dom-18"), join(modules, "react-dom"));
  mkdirSync(join(modules, "protosync"));
  cpSync(join(root, "package.json"), join(modules, "protosync/package.json"));
  cpSync(join(root, "dist"), join(modules, "protosync/dist"), { recursive: true });
  // Its own package.json, so `protosync` is not a self-reference to this package.
  writeFileSync(join(farm, "package.json"), JSON.stringify({ name: "protosync-react18-tests", private: true, type: "module" }));
  for (const part of ["react.test.js", "support", "generated"]) {
    cpSync(join(root, "build-test", part), join(farm, "test", part), { recursive: true });
  }
  run(process.execPath, ["--preserve-symlinks", "--test", "--test-timeout=120000", join(farm, "test/react.test.js")], {
    NODE_OPTIONS: "--preserve-symlinks",
    PROTOSYNC_EXPECT_REACT: "18",
    PROTOSYNC_REPO: join(root, "../.."),
  });
}

rmSync(join(root, "build-test"), { recursive: true, force: true });
run(process.execPath, [tsc, "-p", "tsconfig.json"]);
run(process.execPath, [tsc, "-p", "test/tsconfig.json"]);
const files = process.argv.slice(2);
// The browser test needs Debian's Chromium; without it, it is left out with
// a note, except under CI=true, where that is a failure.
const chromium = process.env.PROTOSYNC_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(chromium);
if (!haveChromium && files.length === 0) {
  if (process.env.CI === "true") {
    console.error(`run-tests: ${chromium} is missing; the browser test needs it under CI=true (apt-get install chromium)`);
    process.exit(1);
  }
  console.error(`run-tests: ${chromium} is missing; leaving out the browser test (apt-get install chromium to run it)`);
}
const tests =
  files.length > 0
    ? files
    : readdirSync(join(root, "build-test"))
        .filter((f) => f.endsWith(".test.js") && (haveChromium || f !== "browser.test.js"))
        .sort()
        .map((f) => join("build-test", f));
run(process.execPath, ["--test", "--test-timeout=120000", ...tests]);
if (files.length === 0) reactEighteen();
