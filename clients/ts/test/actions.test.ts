/**
 * Action calls from the live client and over HTTP, against `protosync serve`
 * forwarding to a real backend (a Node HTTP server here) that verifies each
 * request with verifyActionRequest and writes through the HTTP API.
 */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { join } from "node:path";

import { actionRef, ProtosyncClient, ProtosyncError } from "protosync";
import { callAction, mutate, verifyActionRequest } from "protosync/server";

import { type AddRequest, api } from "./generated/calls/api.js";
import { mintToken, REPO, SERVICE_KEY, TestServer } from "./support/server.js";
import { within } from "./support/wait.js";

const add = api.noteTaker.add;
const SECRET = "a-backend-secret-for-the-sdk-tests";

let server: TestServer;
let backend: Server;
let calls = 0;
/** Answers of "hold" calls, released by the test; `onHold` hears of each. */
const held: (() => void)[] = [];
let onHold: () => void = () => {};
const clients: ProtosyncClient[] = [];

async function body(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

before(async () => {
  backend = createServer((request, response) => {
    void (async () => {
      const call = await verifyActionRequest({ secret: SECRET, headers: request.headers, body: await body(request) });
      calls += 1;
      const args = call.args as unknown as AddRequest;
      if (args.mode === "fail") {
        response.writeHead(422, { "content-type": "application/json" }).end(JSON.stringify({ error: { code: "NOTE_REFUSED", message: "no" } }));
        return;
      }
      if (args.mode === "hold") {
        await new Promise<void>((resolve) => {
          held.push(resolve);
          onHold();
        });
      }
      const id = `n${calls}`;
      const written = await mutate(api.notes.insert(id, { text: args.text }), { url: server.url, token: SERVICE_KEY });
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ result: { id, calls }, seq: written.seq }));
    })().catch((e: unknown) => response.writeHead(401).end(JSON.stringify({ error: { code: "BAD_SIGNATURE", message: String(e) } })));
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  server = await TestServer.start({ auth: true, schema: join(REPO, "clients/ts/test/calls-schema"), backends: { notes: { url, secret: SECRET } } });
});

after(async () => {
  for (const c of clients) c.close();
  for (const release of held) release();
  await server.stop();
  backend.close();
});

function client(): ProtosyncClient {
  const c = new ProtosyncClient(server.url);
  c.setAuth(async () => mintToken("ann", 600));
  clients.push(c);
  return c;
}

test("a call resolves with the result once the view shows the backend's writes", async () => {
  const c = client();
  let seen: readonly string[] = [];
  c.subscribe(api.notes.all(), (state) => {
    if (state.status === "ready") seen = state.value.map((d) => d.doc.text);
  });
  const result = await c.action(add, { text: "first" });
  assert.equal(result.id, `n${result.calls}`);
  // Read-your-writes: the note is in the live query the moment the call resolves.
  assert.ok(seen.includes("first"), `seen: ${seen}`);
});

test("a retry with the same idempotency key gets the first result without calling the backend again", async () => {
  const c = client();
  const first = await c.action(add, { text: "once" }, { idempotencyKey: "add-once" });
  const before = calls;
  const again = await c.action(add, { text: "once" }, { idempotencyKey: "add-once" });
  assert.deepEqual(again, first);
  assert.equal(calls, before);
  const overHttp = await callAction(add, { text: "once" }, { url: server.url, token: mintToken("ann", 600), idempotencyKey: "add-once" });
  assert.deepEqual(overHttp.result, first);
  assert.equal(overHttp.duplicate, true);
});

test("a backend error, a denied call and an unknown action reject with the server's code", async () => {
  const c = client();
  await assert.rejects(c.action(add, { text: "x", mode: "fail" }), (e: unknown) => e instanceof ProtosyncError && e.code === "ACTION_FAILED" && /no/.test(e.message));
  await assert.rejects(c.action(add, { text: "x", mode: "denied" }), (e: unknown) => e instanceof ProtosyncError && e.code === "ACTION_DENIED");
  await assert.rejects(c.action(actionRef("calls.v1.NoteTaker/Nope"), {}), (e: unknown) => e instanceof ProtosyncError && e.code === "UNKNOWN_ACTION");
});

test("a call in flight when the connection drops rejects with CALL_INTERRUPTED and is not resent", async () => {
  const c = client();
  await c.action(add, { text: "warm up" });
  const before = calls;
  const arrived = new Promise<void>((resolve) => (onHold = resolve));
  const pending = c.action(add, { text: "held", mode: "hold" });
  await within(arrived, "the held call at the backend");
  c.reconnect();
  await assert.rejects(pending, (e: unknown) => e instanceof ProtosyncError && e.code === "CALL_INTERRUPTED");
  held.shift()?.();
  // The next call goes out on the new connection; the interrupted one was not sent again.
  const next = await c.action(add, { text: "after" });
  assert.equal(next.calls, before + 2);
});
