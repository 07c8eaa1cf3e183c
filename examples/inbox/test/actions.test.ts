/**
 * The backend's actions over real HTTP, signed as protosync signs forwarded
 * calls (docs/actions.md), against the real stack (protosync, fake Gmail):
 * respond redrafts deterministically, confirm sends exactly once under
 * concurrent calls and retries, and what is refused. No browser.
 */
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { api } from "../web/src/protosync/api.js";
import { draftReply } from "../server/agent.js";
import { DEMO_MESSAGES } from "../server/demo-messages.js";
import { DEMO_USER, startStack, type Stack } from "../server/stack.js";

/** Replay a failure with PROTOSYNC_TEST_SEED. */
const SEED = Number(process.env.PROTOSYNC_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`actions.test: seed ${SEED} (PROTOSYNC_TEST_SEED)`);

let stack: Stack;
let dataDir: string;
let owner: string;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "inbox-actions-"));
  stack = await startStack({ dataDir, seedMessages: DEMO_MESSAGES });
  const mailboxes = await stack.service.fetchQuery(api.mailboxes.all());
  owner = mailboxes.find((m) => m.doc.email === DEMO_USER.email)!.doc.ownerId;
});

after(async () => {
  await stack?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A small deterministic generator (mulberry32), so a seed replays a run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Answer {
  status: number;
  body: { result?: Record<string, string>; seq?: string; error?: { code: string; message: string } };
}

/** Calls an action on the backend as protosync would forward it. */
async function call(method: string, args: object, options: { sub?: string; key?: string; secret?: string } = {}): Promise<Answer> {
  const body = JSON.stringify({
    action: `inbox.v1.Inbox/${method}`,
    args,
    auth: { sub: options.sub ?? owner, iss: stack.auth.url, aud: stack.auth.url },
    caller: "client",
    requestId: randomBytes(16).toString("hex"),
    idempotencyKey: options.key ?? null,
  });
  const timestamp = String(Math.floor(Date.now() / 1000));
  const signature = createHmac("sha256", options.secret ?? stack.backendSecret).update(`${timestamp}.${body}`).digest("hex");
  const response = await fetch(`${stack.backend.url}/inbox.v1.Inbox/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "protosync-timestamp": timestamp, "protosync-signature": `v1=${signature}` },
    body,
  });
  return { status: response.status, body: (await response.json()) as Answer["body"] };
}

async function replies() {
  const actions = await stack.service.fetchQuery(api.proposedActions.all().limit(1000));
  return actions.filter((a) => a.doc.kind === "KIND_SEND_EMAIL");
}

test("respond redrafts the preview with each follow-up and adds both turns to the conversation", async () => {
  const action = (await replies())[0]!;
  const item = (await stack.service.fetchQuery(api.workItems.get(action.doc.workItemId)))!;
  const first = await call("Respond", { actionId: action.id, followUp: "Propose a call on Friday" });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const expected = draftReply({ from: item.doc.sender!, subject: item.doc.subject }, ["Propose a call on Friday"]);
  assert.equal(first.body.result?.preview, expected);
  assert.match(expected, /Propose a call on Friday\./);
  const second = await call("Respond", { actionId: action.id, followUp: "and copy Marta" });
  assert.equal(second.body.result?.preview, draftReply({ from: item.doc.sender!, subject: item.doc.subject }, ["Propose a call on Friday", "and copy Marta"]));

  const stored = (await stack.service.fetchQuery(api.proposedActions.get(action.id)))!;
  assert.equal(stored.doc.status, "STATUS_RESPONDED");
  assert.equal(stored.doc.preview, second.body.result?.preview);
  const turns = await stack.service.fetchQuery(api.commandTurns.byAction({ actionId: action.id }).orderBy("at", "asc"));
  assert.deepEqual(
    turns.map((t) => t.doc.role),
    ["ROLE_AGENT", "ROLE_USER", "ROLE_AGENT", "ROLE_USER", "ROLE_AGENT"],
  );
  assert.ok(Number(second.body.seq) > Number(first.body.seq), "each respond answers the seq of its writes");
});

test("confirm sends exactly once per proposal under concurrent calls and retries", async () => {
  const next = random(SEED);
  const candidates = (await replies()).filter((a) => a.doc.status === "STATUS_PREVIEW");
  assert.ok(candidates.length >= 3, "enough replies to confirm");
  for (const action of candidates.slice(0, 3)) {
    const concurrent = 2 + Math.floor(next() * 6);
    const key = next() < 0.5 ? `confirm:${action.id}` : undefined;
    const answers = await Promise.all(Array.from({ length: concurrent }, () => call("Confirm", { actionId: action.id }, { key })));
    // Then retries, one after another, some with a fresh key.
    for (let retry = 0; retry < 1 + Math.floor(next() * 3); retry += 1) {
      answers.push(await call("Confirm", { actionId: action.id }, { key: next() < 0.5 ? key : randomBytes(8).toString("hex") }));
    }
    const sends = stack.gmail.sends.filter((s) => s.subject === action.doc.replySubject);
    assert.equal(sends.length, 1, `one send for ${action.id} after ${answers.length} calls (seed ${SEED})`);
    const ok = answers.filter((a) => a.status === 200);
    assert.ok(ok.length >= 1 + answers.length - concurrent, "every sequential retry succeeds");
    assert.deepEqual(new Set(ok.map((a) => a.body.result?.sentMessageId)), new Set([sends[0]!.id]));
    for (const refused of answers.filter((a) => a.status !== 200)) assert.equal(refused.body.error?.code, "CONFIRM_IN_PROGRESS");
    const stored = (await stack.service.fetchQuery(api.proposedActions.get(action.id)))!;
    assert.equal(stored.doc.status, "STATUS_CONFIRMED");
    assert.equal(stored.doc.resultRef, sends[0]!.id);
    assert.equal(sends[0]!.body, action.doc.preview);
  }
});

test("refused: a bad signature, another user's proposal, a dismissed one, an empty follow-up", async () => {
  const [action, other] = (await replies()).filter((a) => a.doc.status === "STATUS_PREVIEW");
  const sendsBefore = stack.gmail.sends.length;
  const forged = await call("Confirm", { actionId: action!.id }, { secret: "not-the-secret" });
  assert.equal(forged.status, 401);
  assert.equal(forged.body.error?.code, "BAD_SIGNATURE");
  const stranger = await call("Confirm", { actionId: action!.id }, { sub: "someone-else" });
  assert.equal(stranger.status, 404);
  assert.equal(stranger.body.error?.code, "NOT_FOUND");
  const empty = await call("Respond", { actionId: action!.id, followUp: "  " });
  assert.equal(empty.body.error?.code, "INVALID_FOLLOW_UP");
  await stack.service.mutate(api.proposedActions.patch(other!.id, { status: "STATUS_DISMISSED" }));
  const dismissed = await call("Confirm", { actionId: other!.id });
  assert.equal(dismissed.status, 409);
  assert.equal(dismissed.body.error?.code, "NOT_OPEN");
  assert.equal(stack.gmail.sends.length, sendsBefore, "nothing was sent");
  const ingestByUser = await call("Ingest", {});
  assert.equal(ingestByUser.status, 403);
  assert.equal(ingestByUser.body.error?.code, "SERVICES_ONLY");
});

test("ingestion through protosync: once per tick key, and end users are denied it", async () => {
  stack.gmail.deliver({ to: DEMO_USER.email, from: { name: "Tess Ng", email: "tess@contoso.test" }, subject: "Urgent: tick test", body: "Hi." });
  const key = `ingest:${randomBytes(6).toString("hex")}`;
  const first = await stack.service.callAction(api.inbox.ingest, {}, { idempotencyKey: key });
  assert.equal(first.result.added, 1);
  stack.gmail.deliver({ to: DEMO_USER.email, from: { name: "Tess Ng", email: "tess@contoso.test" }, subject: "Urgent: next tick", body: "Hi." });
  // The same tick again: protosync answers from its record; the new mail waits for the next tick.
  const again = await stack.service.callAction(api.inbox.ingest, {}, { idempotencyKey: key });
  assert.deepEqual([again.duplicate, again.result.added], [true, 1]);
  const items = await stack.service.fetchQuery(api.workItems.byOwnerFeed({ ownerId: owner, important: true }).limit(100));
  assert.ok(!items.some((d) => d.doc.subject === "Urgent: next tick"));
  const next = await stack.service.callAction(api.inbox.ingest, {}, { idempotencyKey: `${key}-next` });
  assert.equal(next.result.added, 1);
  const user = await fetch(`${stack.protosync.url}/v1/actions/inbox.v1.Inbox/Ingest`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"args": {}}' });
  assert.equal(((await user.json()) as { error: { code: string } }).error.code, "ACTION_DENIED");
});
