/**
 * Randomized, seeded: a service writes over HTTP and the client writes over
 * the socket while the server is killed (SIGKILL) and restarted mid-stream.
 * Every state the client shows must be the store's state at the client's
 * watermark (checked against a model replayed from the commits' seqs), the
 * commits must be gap-free, each client mutation applied exactly once, and
 * the final view must equal the store. Replay with PROTOSYNC_TEST_SEED.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type AnyQuery, type Operation, ProtosyncClient, type ResultOf } from "protosync";
import { mutate } from "protosync/server";

import { api } from "./generated/api.js";
import { TestServer } from "./support/server.js";
import { rng, testSeed, within } from "./support/wait.js";

const STEPS = 160;
const KILLS = 4;
const IDS = 12;
const OWNERS = ["ann", "bob"] as const;

interface ModelDoc {
  version: number;
  ownerId: string;
  priority: number;
  title: string;
}

type Model = Map<string, ModelDoc>;

/** Applies one committed mutation's ops to the model, as the server does. */
function apply(model: Model, ops: readonly Operation[]): void {
  for (const op of ops) {
    const held = model.get(op.id);
    const body = (op.body ?? {}) as { ownerId?: string; priority?: number; title?: string };
    if (op.kind === "upsert") {
      model.set(op.id, {
        version: (held?.version ?? 0) + 1,
        ownerId: body.ownerId ?? "",
        priority: body.priority ?? 0,
        title: body.title ?? "",
      });
    } else if (op.kind === "patch" && held !== undefined) {
      model.set(op.id, { ...held, ...body, version: held.version + 1 });
    } else if (op.kind === "delete") {
      model.delete(op.id);
    }
  }
}

type Shown = readonly (readonly [string, string])[];

const window = api.workItems.where({ ownerId: "ann" }).orderBy("priority", "desc").limit(3);
const range = api.workItems.filter("priority", ">=", 2).orderBy("title").limit(4);
const one = api.workItems.get("w1");

/** The three queries' results in the model: (id, version) in order. */
function expected(model: Model): { window: Shown; range: Shown; one: Shown } {
  const all = [...model.entries()];
  const shown = (docs: [string, ModelDoc][]): Shown => docs.map(([id, d]) => [id, String(d.version)] as const);
  const byPriorityDesc = all
    .filter(([, d]) => d.ownerId === "ann")
    .sort(([a, x], [b, y]) => y.priority - x.priority || (a < b ? 1 : a > b ? -1 : 0));
  const byTitle = all
    .filter(([, d]) => d.priority >= 2)
    .sort(([a, x], [b, y]) => (x.title < y.title ? -1 : x.title > y.title ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const doc = model.get("w1");
  return {
    window: shown(byPriorityDesc.slice(0, 3)),
    range: shown(byTitle.slice(0, 4)),
    one: doc === undefined ? [] : [["w1", String(doc.version)]],
  };
}

function shownOf<Q extends AnyQuery>(value: ResultOf<Q>): Shown {
  const docs = Array.isArray(value) ? value : value === null ? [] : [value];
  return (docs as { id: string; version: string }[]).map((d) => [d.id, d.version] as const);
}

test("kill and restart mid-stream: no update lost, duplicated or reordered", async () => {
  const seed = testSeed("resume");
  const random = rng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const server = await TestServer.start();
  const client = new ProtosyncClient(server.url, { initialBackoffMs: 20, maxBackoffMs: 400 });
  const commits = new Map<bigint, readonly Operation[]>();
  const observed: { watermark: string; query: "window" | "range" | "one"; shown: Shown }[] = [];
  const queries = { window, range, one } as const;
  const stops = (Object.keys(queries) as (keyof typeof queries)[]).map((name) =>
    client.watch(queries[name], () => {
      const state = client.getQueryState(queries[name]);
      if (state.status === "ready") observed.push({ watermark: client.watermark, query: name, shown: shownOf(state.value) });
      else assert.fail(`${name}: ${state.status === "error" ? state.error.message : state.status}`);
    }),
  );
  const randomOps = (): Operation[] => {
    const id = `w${Math.floor(random() * IDS)}`;
    const roll = random();
    if (roll < 0.55) {
      return [api.workItems.upsert(id, { ownerId: pick(OWNERS), priority: Math.floor(random() * 6), title: `t${Math.floor(random() * 5)}` })];
    }
    if (roll < 0.8) return [api.workItems.upsert(id, { ownerId: "ann", priority: Math.floor(random() * 6) })];
    return [api.workItems.delete(id)];
  };
  const clientMutations: Promise<void>[] = [];
  const killAt = new Set(Array.from({ length: KILLS }, (_, i) => Math.floor(((i + 1) * STEPS) / (KILLS + 1))));
  try {
    for (let step = 0; step < STEPS; step += 1) {
      if (killAt.has(step)) await server.restart();
      const ops = randomOps();
      if (random() < 0.3) {
        // Over the socket, not awaited: some are in flight when the server dies.
        clientMutations.push(
          client.mutate(ops).then(
            (r) => void commits.set(BigInt(r.seq), ops),
            (e: unknown) => assert.ok(String(e).includes("NOT_FOUND"), String(e)),
          ),
        );
      } else {
        try {
          const r = await mutate(ops, { url: server.url });
          commits.set(BigInt(r.seq), ops);
        } catch (e) {
          assert.ok(String(e).includes("NOT_FOUND"), String(e));
        }
      }
    }
    await within(Promise.all(clientMutations), "the client's mutations (resent after each restart)", 30_000);
    const last = [api.workItems.upsert("w0", { ownerId: "ann", priority: 1, title: "last" })];
    const final = await within(client.mutate(last), "the final mutation");
    commits.set(BigInt(final.seq), last);

    const head = BigInt(final.seq);
    for (let seq = 1n; seq <= head; seq += 1n) assert.ok(commits.has(seq), `seed ${seed}: seq ${seq} is not a commit we made (a mutation applied twice?)`);
    assert.equal(BigInt(commits.size), head, `seed ${seed}: commits are gap-free and each made once`);

    // Every state shown was the store's state at the watermark it was shown at.
    const model: Model = new Map();
    let at = 0n;
    for (const seen of observed) {
      const watermark = BigInt(seen.watermark);
      assert.ok(watermark >= at, `seed ${seed}: the watermark went back from ${at} to ${watermark}`);
      for (; at < watermark; ) {
        at += 1n;
        apply(model, commits.get(at) ?? []);
      }
      assert.deepEqual(seen.shown, expected(model)[seen.query], `seed ${seed}: ${seen.query} at watermark ${watermark}`);
    }
    for (; at < head; ) {
      at += 1n;
      apply(model, commits.get(at) ?? []);
    }
    for (const name of Object.keys(queries) as (keyof typeof queries)[]) {
      const state = client.getQueryState(queries[name]);
      assert.ok(state.status === "ready");
      assert.deepEqual(shownOf(state.value), expected(model)[name], `seed ${seed}: final ${name}`);
    }
    console.log(
      `resume: ${head} commits, ${clientMutations.length} over the socket, ${observed.length} states checked, ${client.stats.connections} connections, ${client.stats.mutationsSent} mutation sends`,
    );
    assert.ok(client.stats.connections >= KILLS + 1, `reconnected after every kill (${client.stats.connections} connections)`);
  } finally {
    for (const stop of stops) stop();
    client.close();
    await server.stop();
  }
});
