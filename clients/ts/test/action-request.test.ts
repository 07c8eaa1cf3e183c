/** verifyActionRequest against docs/actions.md's test vector, and what it refuses. */

import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { test } from "node:test";

import { ProtosyncError } from "protosync";
import { verifyActionRequest } from "protosync/server";

const SECRET = "whsec_test_0123456789";
const sign = (secret: string, timestamp: string, body: string) => `v1=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;

async function refused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => e instanceof ProtosyncError && e.code === "ACTION_REQUEST_INVALID" && pattern.test(e.message));
}

test("the documented test vector verifies", async () => {
  const body = '{"action":"inbox.v1.Inbox/Confirm","args":{}}';
  const signature = sign(SECRET, "1700000000", '{"action":"inbox.v1.Inbox/Confirm"}');
  assert.equal(signature, "v1=6e8db3d724d9dcaed344e68c935558797a69727b063b2bf7420b21d991b4c55b");
  const call = await verifyActionRequest({
    secret: SECRET,
    headers: new Headers({ "protosync-timestamp": "1700000000", "protosync-signature": sign(SECRET, "1700000000", body) }),
    body,
    now: 1700000000,
  });
  assert.deepEqual(call, { action: "inbox.v1.Inbox/Confirm", args: {}, auth: null, caller: "client", requestId: "", idempotencyKey: null });
});

test("a signed request returns its fields; any changed byte, another secret or a stale timestamp is refused", async () => {
  const now = Math.floor(Date.now() / 1000);
  for (let round = 0; round < 50; round += 1) {
    const body = JSON.stringify({
      action: "inbox.v1.Inbox/Respond",
      args: { actionId: randomBytes(6).toString("hex"), followUp: "Mention Friday" },
      auth: { sub: "u1" },
      caller: "service",
      requestId: randomBytes(16).toString("hex"),
      idempotencyKey: `k-${round}`,
    });
    const timestamp = String(now);
    const headers = { "protosync-timestamp": timestamp, "protosync-signature": sign(SECRET, timestamp, body) };
    const call = await verifyActionRequest({ secret: SECRET, headers, body: new TextEncoder().encode(body) });
    assert.equal(call.idempotencyKey, `k-${round}`);
    assert.deepEqual(call.auth, { sub: "u1" });
    assert.equal(call.caller, "service");

    const at = Math.floor(Math.random() * body.length);
    const changed = body.slice(0, at) + String.fromCharCode(body.charCodeAt(at) ^ 1) + body.slice(at + 1);
    await refused(verifyActionRequest({ secret: SECRET, headers, body: changed }), /signature does not match/);
    await refused(verifyActionRequest({ secret: `${SECRET}x`, headers, body }), /signature does not match/);
    await refused(verifyActionRequest({ secret: SECRET, headers, body, now: now + 301 }), /more than 300 s/);
  }
});

test("missing headers and a body that is not an action request are refused", async () => {
  const body = "[1, 2]";
  const timestamp = String(Math.floor(Date.now() / 1000));
  await refused(verifyActionRequest({ secret: SECRET, headers: {}, body }), /protosync-timestamp/);
  await refused(verifyActionRequest({ secret: SECRET, headers: { "protosync-timestamp": timestamp }, body }), /protosync-signature/);
  await refused(
    verifyActionRequest({ secret: SECRET, headers: { "protosync-timestamp": timestamp, "protosync-signature": sign(SECRET, timestamp, body) }, body }),
    /not an action request/,
  );
});
