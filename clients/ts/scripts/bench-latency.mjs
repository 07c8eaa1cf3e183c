#!/usr/bin/env node
// Latency of a mutation made by one Node client until another Node client
// shows it: client B mutates (over its WebSocket), client A holds a live
// `get` of the same document; each sample is from B's `mutate()` call to A's
// listener seeing the new value. Mutations are paced at one per
// PACE_MS so the server's per-connection rate limit (100/s) never applies
// and samples do not queue behind each other.
//
//   npm run build && node scripts/bench-latency.mjs [count]
//
// Starts `protosync dev` itself (PROTOSYNC_BIN, default target/debug/protosync)
// on 127.0.0.1 with a free port and a temp data dir.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { collection, ProtosyncClient } from "../dist/index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const binary = process.env.PROTOSYNC_BIN ?? resolve(root, "../../target/debug/protosync");
const COUNT = Number(process.argv[2] ?? 1000);
const WARMUP = 50;
/** ms between mutations: 80/s, under the 100/s per-connection limit. */
const PACE_MS = 12;

const dataDir = mkdtempSync(join(tmpdir(), "protosync-bench-"));
const server = spawn(binary, ["dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, PROTOSYNC_LOG: "warn" },
});
const url = await new Promise((resolveUrl, reject) => {
  let out = "";
  server.once("exit", (code) => reject(new Error(`protosync exited with ${code}`)));
  server.stdout.on("data", (chunk) => {
    out += chunk;
    const match = /listening: (http:\/\/\S+)/.exec(out);
    if (match) resolveUrl(match[1]);
  });
});

// The runtime's untyped entry point; apps use the generated `api` instead.
const runs = collection({ name: "run_summary", message: "example.runtime.v1.RunSummary", idField: "runId", indexes: {} });
const reader = new ProtosyncClient(url);
const writer = new ProtosyncClient(url);
const doc = runs.get("bench");

const sentAt = new Map();
const samples = [];
const resolved = [];
let onSeen;
reader.subscribe(doc, (state) => {
  if (state.status !== "ready" || state.value === null) return;
  const n = Number(state.value.doc.eventCount);
  const t0 = sentAt.get(n);
  if (t0 !== undefined) {
    sentAt.delete(n);
    if (n > WARMUP) samples.push(performance.now() - t0);
    onSeen?.(n);
  }
});
await reader.query(doc);

const pace = () => new Promise((r) => setTimeout(r, PACE_MS));
for (let n = 1; n <= COUNT + WARMUP; n += 1) {
  const seen = new Promise((r) => (onSeen = (m) => m === n && r()));
  sentAt.set(n, performance.now());
  const t0 = performance.now();
  const done = writer.mutate(runs.upsert("bench", { eventCount: String(n) })).then(() => {
    if (n > WARMUP) resolved.push(performance.now() - t0);
  });
  await Promise.all([done, seen]);
  await pace();
}

reader.close();
writer.close();
server.kill("SIGTERM");
rmSync(dataDir, { recursive: true, force: true });

const report = (name, values) => {
  values.sort((a, b) => a - b);
  const at = (p) => values[Math.min(values.length - 1, Math.floor((p / 100) * values.length))].toFixed(2);
  console.log(`${name}: p50 ${at(50)} ms, p90 ${at(90)} ms, p99 ${at(99)} ms, max ${values.at(-1).toFixed(2)} ms`);
};
console.log(`${samples.length} mutations (after ${WARMUP} warm-up), binary ${binary}`);
report("seen by the other client", samples);
report("mutate() resolved in the writer (read-your-writes)", resolved);
