/** Tokens on a live connection and the HTTP API's credentials, against `protosync serve` with an HS256 provider. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ProtosyncClient, ProtosyncError } from "protosync";
import { fetchQuery, fetchQueryPage, mutate, ProtosyncHttpClient } from "protosync/server";

import { api } from "./generated/api.js";
import { mintToken, SERVICE_KEY, TestServer } from "./support/server.js";
import { until, untilStatus, within } from "./support/wait.js";

let server: TestServer;
const clients: ProtosyncClient[] = [];

before(async () => {
  server = await TestServer.start({ auth: true });
});

after(async () => {
  for (const c of clients) c.close();
  await server.stop();
});

function client(options: ConstructorParameters<typeof ProtosyncClient>[1] = {}): ProtosyncClient {
  const c = new ProtosyncClient(server.url, options);
  clients.push(c);
  return c;
}

const service = (): ProtosyncHttpClient => new ProtosyncHttpClient({ url: server.url, token: SERVICE_KEY });

test("a token is refreshed before it expires, on the live connection, without dropping subscriptions", async () => {
  const errors: ProtosyncError[] = [];
  const c = client({ onError: (e) => errors.push(e) });
  const calls: boolean[] = [];
  let secondRefresh: (() => void) | undefined;
  const refreshedTwice = new Promise<void>((resolve) => (secondRefresh = resolve));
  c.setAuth(async ({ forceRefresh }) => {
    calls.push(forceRefresh);
    if (calls.filter(Boolean).length === 2) secondRefresh?.();
    return mintToken("ann", 3);
  });
  const mine = api.workItems.where({ ownerId: "ann" });
  const stop = c.watch(mine, () => {});
  await service().mutate(api.workItems.upsert("refresh-1", { ownerId: "ann", title: "before" }));
  await until(c, mine, (d) => d.some((x) => x.id === "refresh-1"), "the first document");
  // By the second refresh the first token (3 s) has expired; updates still flow.
  await within(refreshedTwice, "two refreshes");
  await service().mutate(api.workItems.upsert("refresh-2", { ownerId: "ann", title: "after" }));
  await until(c, mine, (d) => d.some((x) => x.id === "refresh-2"), "a document written after the first token expired");
  stop();
  assert.deepEqual(calls.slice(0, 3), [false, true, true]);
  assert.equal(c.stats.connections, 1, "one connection throughout");
  assert.equal(c.stats.subscribesSent, 1, "the subscription was never re-made");
  assert.ok(c.stats.authenticatesSent >= 2);
  assert.deepEqual(
    errors.map((e) => e.code),
    [],
  );
});

test("TOKEN_EXPIRED pauses the connection; a fresh token resumes it and held mutations go through", async () => {
  let onExpired: (() => void) | undefined;
  const expired = new Promise<void>((resolve) => (onExpired = resolve));
  let duringPause: Promise<unknown> | undefined;
  const c = client({
    tokenRefreshLeadMs: 0,
    onError: (e) => {
      if (e.code !== "TOKEN_EXPIRED") return;
      // Sent while paused: held, and sent once a fresh token is accepted.
      duringPause = c.mutate(api.workItems.upsert("paused-1", { ownerId: "ann", title: "written while paused" }));
      onExpired?.();
    },
  });
  const forced: boolean[] = [];
  c.setAuth(async ({ forceRefresh }) => {
    forced.push(forceRefresh);
    return forceRefresh ? mintToken("ann", 120) : mintToken("ann", 2);
  });
  const mine = api.workItems.where({ ownerId: "ann" });
  const stop = c.watch(mine, () => {});
  await until(c, mine, () => true, "the first result");
  await within(expired, "the server's TOKEN_EXPIRED");
  await service().mutate(api.workItems.upsert("paused-2", { ownerId: "ann", title: "service write during the pause" }));
  await within(duringPause ?? Promise.reject(new Error("no mutation")), "the mutation sent during the pause");
  const docs = await until(
    c,
    mine,
    (d) => d.some((x) => x.id === "paused-1") && d.some((x) => x.id === "paused-2"),
    "both writes after the fresh token",
  );
  assert.ok(docs.length >= 2);
  assert.deepEqual(forced, [false, true]);
  assert.equal(c.stats.connections, 1, "the socket stayed open through the pause");
  stop();
});

test("a refused hello token is replaced by a forced refresh before reconnecting", async () => {
  const forced: boolean[] = [];
  const c = client({ initialBackoffMs: 10 });
  c.setAuth(async ({ forceRefresh }) => {
    forced.push(forceRefresh);
    return forceRefresh ? mintToken("ann", 120) : mintToken("ann", -60);
  });
  await untilStatus(c, "open");
  assert.deepEqual(forced, [false, true]);
  assert.equal(c.stats.connections, 2);
});

test("a write the rules deny rejects with PERMISSION_DENIED", async () => {
  const c = client();
  c.setAuth(async () => mintToken("ann", 120));
  const refused = await c.mutate(api.workItems.upsert("bobs", { ownerId: "bob" })).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(refused instanceof ProtosyncError);
  assert.equal(refused.code, "PERMISSION_DENIED");
});

test("fetchQuery and mutate use the HTTP API with an API key or a user's token", async () => {
  const asService = { url: server.url, token: SERVICE_KEY };
  const written = await mutate(
    [api.workItems.upsert("http-1", { ownerId: "ann", priority: 2 }), api.workItems.upsert("http-2", { ownerId: "bob", priority: 1 })],
    { ...asService, idempotencyKey: "http-test-1" },
  );
  const again = await mutate(
    [api.workItems.upsert("http-1", { ownerId: "ann", priority: 2 }), api.workItems.upsert("http-2", { ownerId: "bob", priority: 1 })],
    { ...asService, idempotencyKey: "http-test-1" },
  );
  assert.equal(again.duplicate, true);
  assert.equal(again.seq, written.seq);
  const all = await fetchQuery(api.workItems.filter("ownerId", "in", ["ann", "bob"]).orderBy("priority").limit(100), asService);
  assert.ok(all.some((d) => d.id === "http-2"));
  const asAnn = { url: server.url, token: mintToken("ann", 120) };
  const annSees = await fetchQuery(api.workItems.filter("ownerId", "in", ["ann", "bob"]), asAnn);
  assert.ok(annSees.every((d) => d.doc.ownerId === "ann"), "rules filter a user's reads");
  assert.equal((await fetchQuery(api.workItems.get("http-1"), asService))?.doc.priority, 2);
  assert.equal(await fetchQuery(api.workItems.get("http-2"), asAnn), null, "unreadable reads as absent");
  const page = await fetchQueryPage(api.workItems.all().limit(1), asService);
  assert.equal(page.documents.length, 1);
  assert.ok(page.nextCursor !== undefined);
  const next = await fetchQueryPage(api.workItems.all().limit(1).after(page.nextCursor), asService);
  assert.notEqual(next.documents[0]?.id, page.documents[0]?.id);
  const denied = await fetchQuery(api.workItems.all(), { url: server.url, token: "psk_not_a_key" }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(denied instanceof ProtosyncError);
  assert.equal(denied.code, "UNAUTHENTICATED");
  assert.equal(denied.status, 401);
  const conflict = await mutate(api.workItems.patch("http-1", { title: "x" }, { expectedVersion: 42 }), asService).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(conflict instanceof ProtosyncError && conflict.code === "VERSION_CONFLICT" && conflict.status === 409);
});

test("a service's API key on the socket sees what the rules would hide from a user", async () => {
  await service().mutate([
    api.workItems.upsert("key-ann", { ownerId: "ann" }),
    api.workItems.upsert("key-bob", { ownerId: "bob" }),
  ]);
  const asService = client();
  const authenticated: boolean[] = [];
  asService.setAuth(async () => SERVICE_KEY, (ok) => authenticated.push(ok));
  const both = api.workItems.filter("ownerId", "in", ["ann", "bob"]).filter("priority", "==", 0);
  const docs = await until(asService, both, (d) => d.some((x) => x.id === "key-bob") && d.some((x) => x.id === "key-ann"), "both owners' documents");
  assert.ok(docs.length >= 2);
  assert.deepEqual(authenticated, [true]);
});
