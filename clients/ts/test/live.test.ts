/** The live client against a real `protosync dev`. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  backoffDelay,
  type ConnectionState,
  MemoryPersistedCache,
  nextConnectionState,
  ProtosyncClient,
  ProtosyncError,
  type QueryState,
} from "protosync";

import { api, schemaFingerprint } from "./generated/api.js";
import { http, TestServer } from "./support/server.js";
import { until, untilStatus, within } from "./support/wait.js";

let server: TestServer;
const clients: ProtosyncClient[] = [];
let prefix = 0;

function client(options: ConstructorParameters<typeof ProtosyncClient>[1] = {}): ProtosyncClient {
  const c = new ProtosyncClient(server.url, { schemaFingerprint, ...options });
  clients.push(c);
  return c;
}

/** A fresh owner per test, so tests share one server without seeing each other's documents. */
function owner(): string {
  prefix += 1;
  return `owner${prefix}`;
}

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  for (const c of clients) c.close();
  await server.stop();
});

describe("connection state machine", () => {
  test("moves connecting → open → reconnecting → connecting → closed and ignores events that do not apply", () => {
    let s: ConnectionState = { status: "connecting", attempt: 0 };
    assert.equal(nextConnectionState(s, { type: "connect" }), s);
    s = nextConnectionState(s, { type: "welcome", sessionId: "x" });
    assert.deepEqual(s, { status: "open", sessionId: "x" });
    s = nextConnectionState(s, { type: "lost", reason: "gone", retryInMs: 50 });
    assert.deepEqual(s, { status: "reconnecting", attempt: 0, retryInMs: 50, reason: "gone" });
    assert.equal(nextConnectionState(s, { type: "welcome", sessionId: "y" }), s);
    s = nextConnectionState(s, { type: "connect" });
    assert.deepEqual(s, { status: "connecting", attempt: 0 });
    s = nextConnectionState(s, { type: "lost", reason: "refused", retryInMs: 10 });
    assert.equal(s.status === "reconnecting" && s.attempt, 1);
    s = nextConnectionState(s, { type: "close", reason: "bye" });
    assert.deepEqual(s, { status: "closed", reason: "bye" });
    assert.equal(nextConnectionState(s, { type: "connect" }), s);
  });

  test("backoff is full jitter under a doubling bound", () => {
    assert.equal(backoffDelay(0, 100, 10_000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 10_000, () => 0.5), 400);
    assert.equal(backoffDelay(20, 100, 10_000, () => 0.999999), 9_999);
    assert.equal(backoffDelay(5, 100, 10_000, () => 0), 0);
  });

  test("a client reports its states as it connects and closes", async () => {
    const c = client();
    const seen: string[] = [c.connectionState.status];
    c.onConnectionStateChange((s) => seen.push(s.status));
    await untilStatus(c, "open");
    c.close();
    assert.deepEqual(seen, ["connecting", "open", "closed"]);
  });
});

describe("queries", () => {
  test("a subscription gets its first result and then every change", async () => {
    const ann = owner();
    const c = client();
    const feed = api.workItems.byOwnerFeed({ ownerId: ann, important: true }).orderBy("priority", "desc");
    const first = await until(c, feed, () => true, "the first result");
    assert.deepEqual(first, []);
    await http(server, "/v1/mutate", {
      ops: [{ insert: { collection: "work_items", id: `${ann}-a`, doc: { ownerId: ann, title: "A", important: true, priority: 3 } } }],
    });
    const docs = await until(c, feed, (d) => d.length === 1, "the insert");
    assert.equal(docs[0]?.doc.title, "A");
    assert.equal(docs[0]?.version, "1");
    assert.equal(typeof docs[0]?.doc.priority, "number");
  });

  test("an ordered limited window matches the HTTP API's answer after every change", async () => {
    const ann = owner();
    const c = client();
    const window = api.workItems.where({ ownerId: ann }).orderBy("priority", "desc").limit(3);
    const stop = c.watch(window, () => {});
    await until(c, window, () => true, "the first result");
    const id = (x: string): string => `${ann}-${x}`;
    const ops = [
      api.workItems.upsert(id("a"), { ownerId: ann, priority: 1 }),
      api.workItems.upsert(id("b"), { ownerId: ann, priority: 5 }),
      api.workItems.upsert(id("c"), { ownerId: ann, priority: 3 }),
      api.workItems.upsert(id("d"), { ownerId: ann, priority: 4 }),
      api.workItems.patch(id("a"), { priority: 9 }),
      api.workItems.delete(id("b")),
      api.workItems.upsert(id("e"), { ownerId: ann, priority: 4 }),
      api.workItems.patch(id("c"), { ownerId: "someone-else" }),
    ];
    for (const op of ops) {
      // A write outside the window sends this subscription nothing: only our
      // own mutation is sure to move the watermark past it (read-your-writes).
      const { seq } = await c.mutate(op);
      const expected = await http(server, "/v1/query", window.toWire());
      const expectedIds = (expected.body as { documents: { id: string }[] }).documents.map((d) => d.id);
      await within(c.whenWatermark(seq), `seq ${seq}`);
      const seen = c.getQueryState(window);
      assert.ok(seen.status === "ready");
      assert.deepEqual(
        seen.value.map((d) => d.id),
        expectedIds,
        `after ${JSON.stringify(op)}`,
      );
    }
    stop();
  });

  test("identical queries share one subscription, released after the grace period", async () => {
    let onUnsubscribe: (() => void) | undefined;
    const unsubscribed = new Promise<void>((resolve) => (onUnsubscribe = resolve));
    const c = client({
      unsubscribeGraceMs: 50,
      onSend: (message) => {
        if ("unsubscribe" in message) onUnsubscribe?.();
      },
    });
    await untilStatus(c, "open");
    const q = () => api.workItems.get("shared-doc");
    const stopA = c.watch(q(), () => {});
    const stopB = c.watch(q(), () => {});
    await until(c, q(), () => true, "the first result");
    assert.equal(c.stats.subscribesSent, 1);
    stopA();
    stopB();
    await within(unsubscribed, "the unsubscribe after the grace period");
    assert.equal(c.stats.unsubscribesSent, 1);
    assert.equal(c.getQueryState(q()).status, "loading");
  });

  test("one transition updates every affected query in the same tick", async () => {
    const ann = owner();
    const c = client();
    const all = api.workItems.where({ ownerId: ann });
    const one = api.workItems.get(`${ann}-x`);
    await http(server, "/v1/mutate", { ops: [{ insert: { collection: "work_items", id: `${ann}-x`, doc: { ownerId: ann, title: "v1" } } }] });
    await until(c, all, (d) => d.length === 1, "all");
    await until(c, one, (d) => d !== null, "one");
    const torn: string[] = [];
    const check = (): void => {
      const a = c.getQueryState(all);
      const b = c.getQueryState(one);
      if (a.status !== "ready" || b.status !== "ready") return;
      const titleA = a.value[0]?.doc.title;
      const titleB = b.value?.doc.title;
      if (titleA !== titleB) torn.push(`${titleA} vs ${titleB}`);
    };
    const stops = [c.watch(all, check), c.watch(one, check)];
    for (let i = 2; i <= 6; i += 1) {
      await http(server, "/v1/mutate", { ops: [{ patch: { collection: "work_items", id: `${ann}-x`, fields: { title: `v${i}` } } }] });
    }
    await until(c, one, (d) => d?.doc.title === "v6", "the last patch");
    for (const stop of stops) stop();
    assert.deepEqual(torn, []);
  });

  test("a refused subscription shows the server's error with its code", async () => {
    const c = client();
    const bad = api.workItems.filter("priority", ">", "high" as unknown as number);
    const state = await within(
      new Promise<QueryState<unknown>>((resolve) => {
        c.subscribe(bad, (s) => resolve(s));
      }),
      "the error",
    );
    assert.equal(state.status, "error");
    assert.ok(state.status === "error" && state.error instanceof ProtosyncError);
    assert.equal(state.status === "error" && state.error.code, "INVALID_QUERY");
  });
});

describe("mutations", () => {
  test("a mutation resolves only when the view includes it (read-your-writes)", async () => {
    const ann = owner();
    const c = client();
    const mine = api.workItems.where({ ownerId: ann });
    const stop = c.watch(mine, () => {});
    for (let i = 0; i < 20; i += 1) {
      const result = await c.mutate(api.workItems.insert(`${ann}-${i}`, { ownerId: ann, title: `t${i}`, priority: i }));
      assert.ok(BigInt(c.watermark) >= BigInt(result.seq));
      const state = c.getQueryState(mine);
      assert.equal(state.status, "ready");
      assert.ok(state.status === "ready" && state.value.some((d) => d.id === `${ann}-${i}`), `insert ${i} visible at once`);
    }
    stop();
  });

  test("an insert without an id gets a time-ordered id the server makes; server times are the server's", async () => {
    const ann = owner();
    const c = client();
    const forged = "2001-01-01T00:00:00Z";
    const result = await c.mutate([
      api.feedbackEntries.insertNew({ ownerId: ann, workItemId: ann, createdAt: forged }),
      api.feedbackEntries.insertNew({ ownerId: ann, workItemId: ann }),
    ]);
    const [first, second] = result.results.map((r) => r.id);
    const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    assert.match(first ?? "", uuidV7);
    assert.match(second ?? "", uuidV7);
    assert.ok((first ?? "") < (second ?? ""), "ids made later sort later");
    const doc = await until(c, api.feedbackEntries.get(first ?? ""), (d) => d !== null, "the server-made id's document");
    // The read type has the server-time field present: a string, not `string | undefined`.
    const createdAt: string | undefined = doc?.doc.createdAt;
    assert.ok(createdAt !== undefined && createdAt !== forged && createdAt > "2026", createdAt);
  });

  test("refused mutations reject with typed errors carrying the server's code", async () => {
    const ann = owner();
    const c = client();
    await c.mutate(api.workItems.insert(`${ann}-1`, { ownerId: ann }));
    const code = async (p: Promise<unknown>): Promise<ProtosyncError> => {
      const error = await p.then(
        () => assert.fail("expected a rejection"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ProtosyncError);
      return error;
    };
    assert.equal((await code(c.mutate(api.workItems.insert(`${ann}-1`, { ownerId: ann })))).code, "ALREADY_EXISTS");
    assert.equal((await code(c.mutate(api.workItems.patch(`${ann}-1`, { title: "x" }, { expectedVersion: 7 })))).code, "VERSION_CONFLICT");
    assert.equal((await code(c.mutate(api.workItems.delete(`${ann}-nope`)))).code, "NOT_FOUND");
    const invalid = await code(c.mutate(api.workItems.insert(`${ann}-2`, { sender: { email: 5 as unknown as string } })));
    assert.equal(invalid.code, "INVALID_DOCUMENT");
    assert.equal(invalid.path, "sender.email");
  });

  test("an idempotency key makes a resend a duplicate", async () => {
    const ann = owner();
    const c = client();
    const op = api.workItems.insert(`${ann}-1`, { ownerId: ann });
    const first = await c.mutate(op, { idempotencyKey: `${ann}-key` });
    const again = await c.mutate(op, { idempotencyKey: `${ann}-key` });
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, first.seq);
  });

  test("an optimistic update shows at once and is rolled back exactly when the server refuses", async () => {
    const ann = owner();
    const c = client();
    const mine = api.workItems.where({ ownerId: ann }).orderBy("priority");
    await c.mutate([
      api.workItems.insert(`${ann}-1`, { ownerId: ann, title: "one", priority: 1 }),
      api.workItems.insert(`${ann}-2`, { ownerId: ann, title: "two", priority: 2 }),
    ]);
    const before = await until(c, mine, (d) => d.length === 2, "two items");
    const seen: unknown[] = [];
    const stop = c.watch(mine, () => seen.push(c.getQueryState(mine)));
    const refused = c.mutate(api.workItems.patch(`${ann}-1`, { title: "renamed" }, { expectedVersion: 99 }), {
      optimisticUpdate: (local) => {
        local.patchDocument(api.workItems, `${ann}-1`, { title: "renamed" });
        local.deleteDocument(api.workItems, `${ann}-2`);
      },
    });
    const shown = c.getQueryState(mine);
    assert.ok(shown.status === "ready");
    assert.deepEqual(
      shown.value.map((d) => [d.id, d.doc.title]),
      [[`${ann}-1`, "renamed"]],
    );
    await assert.rejects(refused, (e: unknown) => e instanceof ProtosyncError && e.code === "VERSION_CONFLICT");
    const after = c.getQueryState(mine);
    assert.ok(after.status === "ready");
    assert.equal(after.value, before, "the very same result object as before the optimistic update");
    assert.equal(seen.length, 2, "one change to apply, one to roll back");
    stop();
  });

  test("an optimistic update is replaced by the server's transition when the mutation completes", async () => {
    const ann = owner();
    const c = client();
    const one = api.workItems.get(`${ann}-1`);
    await c.mutate(api.workItems.insert(`${ann}-1`, { ownerId: ann, title: "one" }));
    await until(c, one, (d) => d !== null, "the document");
    const done = c.mutate(api.workItems.patch(`${ann}-1`, { title: "server" }), {
      optimisticUpdate: (local) => local.patchDocument(api.workItems, `${ann}-1`, { title: "optimistic" }),
    });
    const shown = c.getQueryState(one);
    assert.ok(shown.status === "ready" && shown.value?.doc.title === "optimistic" && shown.value.version === "1");
    await done;
    const after = c.getQueryState(one);
    assert.ok(after.status === "ready");
    assert.equal(after.value?.doc.title, "server");
    assert.equal(after.value?.version, "2");
  });

  test("without an optimistic update the view changes only with the server's transition", async () => {
    const ann = owner();
    const c = client();
    const one = api.workItems.get(`${ann}-1`);
    await c.mutate(api.workItems.insert(`${ann}-1`, { ownerId: ann, title: "one" }));
    const before = await until(c, one, (d) => d !== null, "the document");
    const done = c.mutate(api.workItems.patch(`${ann}-1`, { title: "two" }));
    const shown = c.getQueryState(one);
    assert.ok(shown.status === "ready" && shown.value === before);
    await done;
  });
});

describe("large results", () => {
  test("a transition split into chunks is assembled before anything shows", async () => {
    const big = owner();
    const c = client();
    // 6 × 100 kB: more than one 256 KiB chunk.
    const body = "x".repeat(100_000);
    await c.mutate(Array.from({ length: 6 }, (_, i) => api.workItems.insert(`${big}-${i}`, { ownerId: big, snippet: body, priority: i })));
    const seen: number[] = [];
    const q = api.workItems.where({ ownerId: big }).orderBy("priority");
    const stop = c.watch(q, () => {
      const s = c.getQueryState(q);
      if (s.status === "ready") seen.push(s.value.length);
    });
    const docs = await until(c, q, (d) => d.length === 6, "all six documents");
    assert.ok(docs.every((d) => d.doc.snippet.length === 100_000));
    assert.deepEqual(seen, [6], "one change, with everything: never a partial result");
    assert.ok(c.stats.chunkedTransitions >= 1, "the server split it into chunks");
    stop();
  });
});

describe("pagination", () => {
  test("loadMore grows the window and every page stays live", async () => {
    const ann = owner();
    const c = client();
    await c.mutate(Array.from({ length: 7 }, (_, i) => api.workItems.insert(`${ann}-${i}`, { ownerId: ann, priority: i })));
    const pages = c.paginate(api.workItems.where({ ownerId: ann }).orderBy("priority"), { initialNumItems: 3 });
    const untilPage = (predicate: () => boolean, what: string): Promise<void> => {
      let stop: (() => void) | undefined;
      const waiting = new Promise<void>((resolve) => {
        stop = pages.subscribe(() => {
          if (predicate()) resolve();
        });
        if (predicate()) resolve();
      });
      return within(waiting, what).finally(() => stop?.());
    };
    const stop = pages.subscribe(() => {});
    await untilPage(() => pages.getSnapshot().status === "CanLoadMore", "the first page");
    assert.deepEqual(
      pages.getSnapshot().results.map((d) => d.doc.priority),
      [0, 1, 2],
    );
    assert.equal(pages.loadMore(3), true);
    assert.equal(pages.getSnapshot().status, "LoadingMore");
    assert.equal(pages.getSnapshot().results.length, 3, "the first page shows until the larger window arrives");
    await untilPage(() => pages.getSnapshot().results.length === 6, "the second page");
    assert.equal(pages.getSnapshot().status, "CanLoadMore");
    assert.equal(pages.loadMore(3), true);
    await untilPage(() => pages.getSnapshot().status === "Exhausted", "the last page");
    assert.equal(pages.getSnapshot().results.length, 7);
    assert.equal(pages.loadMore(3), false);
    await c.mutate(api.workItems.patch(`${ann}-0`, { priority: 100 }));
    await untilPage(() => pages.getSnapshot().results.at(-1)?.id === `${ann}-0`, "a live change across pages");
    await c.mutate(api.workItems.insert(`${ann}-new`, { ownerId: ann, priority: -1 }));
    await untilPage(() => pages.getSnapshot().results[0]?.id === `${ann}-new`, "an insert on the first page");
    assert.equal(pages.getSnapshot().results.length, 8);
    stop();
  });
});

describe("persisted cache", () => {
  test("a restarted client shows its saved view at once and resumes it", async () => {
    const ann = owner();
    const cache = new MemoryPersistedCache();
    const q = api.workItems.where({ ownerId: ann });
    const first = client({ persistedCache: cache });
    await first.mutate(api.workItems.insert(`${ann}-1`, { ownerId: ann, title: "saved" }));
    await until(first, q, (d) => d.length === 1, "the first client's view");
    first.close();
    assert.ok(cache.current !== null && cache.current.subscriptions.length >= 1);
    await http(server, "/v1/mutate", { ops: [{ insert: { collection: "work_items", id: `${ann}-2`, doc: { ownerId: ann } } }] });
    const second = client({ persistedCache: cache });
    const restored = await until(second, q, () => true, "the restored view");
    assert.deepEqual(
      restored.map((d) => d.id),
      [`${ann}-1`],
      "shown before the server answers",
    );
    await until(second, q, (d) => d.length === 2, "the resumed difference");
    assert.equal(second.stats.subscribesSent, 0, "resumed, not subscribed afresh");
  });
});
