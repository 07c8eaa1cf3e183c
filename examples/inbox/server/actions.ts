/**
 * The backend's actions: what protosync forwards when the app calls
 * `inbox.v1.Inbox/Respond` or `inbox.v1.Inbox/Confirm`, and the backend's
 * clock calls `inbox.v1.Inbox/Ingest` (docs/actions.md).
 * Each request is verified (signature, timestamp) before anything runs;
 * writes go through protosync's HTTP API with the backend's API key, and the
 * answer carries their `seq`, so the caller's call resolves once its view
 * shows them.
 *
 * Confirm sends the email exactly once per proposal, however often it is
 * called or retried, and concurrently too: one call claims the proposal
 * (STATUS_SENDING, written with the version it read, so only one claim can
 * win), sends, then records the sent message id (STATUS_CONFIRMED). Calls
 * that find it confirmed answer with that id and send nothing; calls that
 * find it claimed answer CONFIRM_IN_PROGRESS.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { type JsonObject, ProtosyncError } from "protosync";
import { type ActionRequest, type ProtosyncHttpClient, type StoredDocument, verifyActionRequest } from "protosync/server";

import { api, type ConfirmRequest, type ProposedAction, type RespondRequest } from "../web/src/protosync/api.js";
import { draftReply } from "./agent.js";
import { readBody } from "./http-body.js";
import { ids } from "./ingest.js";

/** The path prefix protosync's `[backends.inbox] url` points at. */
export const ACTIONS_PATH = "/protosync";
/** The longest follow-up accepted, in characters. */
export const MAX_FOLLOW_UP_CHARS = 2_000;
/** Turns of one conversation read to redraft (the fake agent keeps them all). */
const MAX_TURNS = 200;
/** Confirm re-reads a proposal that changed under it at most this often before giving up. */
const MAX_CLAIM_ATTEMPTS = 3;

/** An answer: 2xx with a result (and the seq of the writes), or an error. */
type Answer = { ok: true; status: 200; result: JsonObject; seq?: string } | { ok: false; status: number; code: string; message: string };

class ActionError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ActionServerOptions {
  readonly port: number;
  /** The secret of `[backends.inbox]` in protosync's config. */
  readonly secret: string;
  readonly protosync: ProtosyncHttpClient;
  readonly gmailUrl: string;
  /** Runs one ingestion (after the one in flight); resolves with how many messages were new. */
  readonly ingest: () => Promise<number>;
}

export interface ActionServer {
  /** What `[backends.inbox] url` is set to. */
  readonly url: string;
  close(): Promise<void>;
}

export async function startActionServer(options: ActionServerOptions): Promise<ActionServer> {
  const handlers: Record<string, (call: ActionRequest) => Promise<Answer>> = {
    "inbox.v1.Inbox/Respond": (call) => respond(options, call),
    "inbox.v1.Inbox/Confirm": (call) => confirm(options, call),
    "inbox.v1.Inbox/Ingest": async (call) => {
      // protosync lets only services call it (no allow rule); refuse anyone else here too.
      if (call.caller === "client") throw new ActionError(403, "SERVICES_ONLY", "ingestion runs on protosync's schedule");
      return { ok: true, status: 200, result: { added: await options.ingest() } };
    },
  };
  const server = createServer((request, response) => {
    handle(request, response).catch((e: unknown) => reply(response, { ok: false, status: 500, code: "INTERNAL", message: String(e) }));
  });
  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const name = request.url?.startsWith(`${ACTIONS_PATH}/`) ? decodeURIComponent(request.url.slice(ACTIONS_PATH.length + 1)) : "";
    const handler = handlers[name];
    if (request.method !== "POST" || handler === undefined) return reply(response, { ok: false, status: 404, code: "UNKNOWN_ACTION", message: `no action ${name}` });
    let call: ActionRequest;
    try {
      call = await verifyActionRequest({ secret: options.secret, headers: request.headers, body: await readBody(request) });
    } catch (e) {
      return reply(response, { ok: false, status: 401, code: "BAD_SIGNATURE", message: e instanceof Error ? e.message : String(e) });
    }
    if (call.action !== name) return reply(response, { ok: false, status: 400, code: "WRONG_ACTION", message: `signed for ${call.action}, sent to ${name}` });
    try {
      reply(response, await handler(call));
    } catch (e) {
      if (e instanceof ActionError) return reply(response, { ok: false, status: e.status, code: e.code, message: e.message });
      throw e;
    }
  }
  await new Promise<void>((resolve) => server.listen(options.port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${ACTIONS_PATH}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** `Respond { actionId, followUp }` → `{ preview }`: the agent redrafts with every follow-up so far. */
async function respond({ protosync }: ActionServerOptions, call: ActionRequest): Promise<Answer> {
  const args = call.args as unknown as RespondRequest;
  const followUp = String(args.followUp ?? "").trim();
  if (followUp === "" || followUp.length > MAX_FOLLOW_UP_CHARS) {
    throw new ActionError(400, "INVALID_FOLLOW_UP", `a follow-up has 1 to ${MAX_FOLLOW_UP_CHARS} characters`);
  }
  const action = await openReply(protosync, call);
  const item = await protosync.fetchQuery(api.workItems.get(action.doc.workItemId));
  if (item === null) throw new ActionError(404, "NOT_FOUND", `work item ${action.doc.workItemId} is gone`);
  const turns = await protosync.fetchQuery(api.commandTurns.byAction({ actionId: action.id }).orderBy("at", "asc").limit(MAX_TURNS));
  const followUps = [...turns.filter((t) => t.doc.role === "ROLE_USER").map((t) => t.doc.text), followUp];
  const preview = draftReply({ from: item.doc.sender ?? { name: "", email: "" }, subject: item.doc.subject }, followUps);
  const now = new Date().toISOString();
  try {
    const written = await protosync.mutate(
      [
        api.proposedActions.patch(action.id, { preview, status: "STATUS_RESPONDED", updatedAt: now }, { expectedVersion: action.version }),
        api.commandTurns.insert(ids.turn(action.id, turns.length), { ownerId: action.doc.ownerId, actionId: action.id, role: "ROLE_USER", text: followUp, at: now }),
        api.commandTurns.insert(ids.turn(action.id, turns.length + 1), { ownerId: action.doc.ownerId, actionId: action.id, role: "ROLE_AGENT", text: preview, at: now }),
      ],
      keyed(call, "respond"),
    );
    return { ok: true, status: 200, result: { preview }, seq: written.seq };
  } catch (e) {
    // A retry of a call whose writes were made (its answer was lost): they stand.
    if (e instanceof ProtosyncError && e.code === "IDEMPOTENCY_KEY_REUSED") return { ok: true, status: 200, result: { preview: action.doc.preview } };
    if (e instanceof ProtosyncError && (e.code === "VERSION_CONFLICT" || e.code === "ALREADY_EXISTS")) {
      throw new ActionError(409, "CONFLICT", "the proposal changed meanwhile; try again");
    }
    throw e;
  }
}

/** `Confirm { actionId }` → `{ sentMessageId }`: sends the draft, once. */
async function confirm(options: ActionServerOptions, call: ActionRequest, attempt = 1): Promise<Answer> {
  const { protosync, gmailUrl } = options;
  const action = await ownAction(protosync, call);
  if (action.doc.kind !== "KIND_SEND_EMAIL") throw new ActionError(409, "NOT_A_REPLY", "only a reply is confirmed; approve the others");
  if (action.doc.status === "STATUS_CONFIRMED") return { ok: true, status: 200, result: { sentMessageId: action.doc.resultRef } };
  if (action.doc.status === "STATUS_SENDING") throw new ActionError(409, "CONFIRM_IN_PROGRESS", "another confirm is sending this reply; ask again in a moment");
  requireOpen(action);
  // The claim: only one writer can move this version on.
  let claimed: string;
  try {
    const result = await protosync.mutate(api.proposedActions.patch(action.id, { status: "STATUS_SENDING" }, { expectedVersion: action.version }));
    claimed = result.results[0]?.version ?? "0";
  } catch (e) {
    if (e instanceof ProtosyncError && e.code === "VERSION_CONFLICT" && attempt < MAX_CLAIM_ATTEMPTS) {
      return confirm(options, call, attempt + 1);
    }
    throw e;
  }
  const mailbox = await protosync.fetchQuery(api.mailboxes.get(action.doc.ownerId));
  const sent = await fetch(`${gmailUrl}/gmail/v1/users/${encodeURIComponent(mailbox?.doc.email ?? "")}/messages/send`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ to: action.doc.replyTo, subject: action.doc.replySubject, body: action.doc.preview }),
  }).catch((e: unknown) => new Response(String(e), { status: 599 }));
  if (!sent.ok) {
    // Nothing went out: release the claim so the user can confirm again.
    await protosync.mutate(api.proposedActions.patch(action.id, { status: action.doc.status }, { expectedVersion: claimed }));
    throw new ActionError(502, "SEND_FAILED", `Gmail answered HTTP ${sent.status}`);
  }
  const { id: sentMessageId } = (await sent.json()) as { id: string };
  const now = new Date().toISOString();
  const written = await protosync.mutate([
    api.proposedActions.patch(action.id, { status: "STATUS_CONFIRMED", resultRef: sentMessageId, updatedAt: now }, { expectedVersion: claimed }),
    api.commandTurns.insert(ids.turn(action.id, "sent"), { ownerId: action.doc.ownerId, actionId: action.id, role: "ROLE_AGENT", text: `Sent to ${action.doc.replyTo}.`, at: now }),
    api.workItems.patch(action.doc.workItemId, { state: "STATE_DONE" }),
  ]);
  return { ok: true, status: 200, result: { sentMessageId }, seq: written.seq };
}

/** The caller's proposal: a user may act on their own only (a service on any). */
async function ownAction(protosync: ProtosyncHttpClient, call: ActionRequest): Promise<StoredDocument<ProposedAction>> {
  const actionId = String((call.args as unknown as ConfirmRequest | RespondRequest).actionId ?? "");
  const action = actionId === "" ? null : await protosync.fetchQuery(api.proposedActions.get(actionId));
  const caller = call.auth?.sub;
  if (action === null || (call.caller === "client" && action.doc.ownerId !== caller)) {
    throw new ActionError(404, "NOT_FOUND", `no proposal ${JSON.stringify(actionId)}`);
  }
  return action;
}

async function openReply(protosync: ProtosyncHttpClient, call: ActionRequest): Promise<StoredDocument<ProposedAction>> {
  const action = await ownAction(protosync, call);
  if (action.doc.kind !== "KIND_SEND_EMAIL") throw new ActionError(409, "NOT_A_REPLY", "only a reply has a draft to respond to");
  requireOpen(action);
  return action;
}

function requireOpen(action: StoredDocument<ProposedAction>): void {
  if (action.doc.status !== "STATUS_PREVIEW" && action.doc.status !== "STATUS_RESPONDED") {
    throw new ActionError(409, "NOT_OPEN", `the proposal is ${action.doc.status.replace("STATUS_", "").toLowerCase()}`);
  }
}

/** The caller's idempotency key, scoped to this effect, for the writes it makes. */
function keyed(call: ActionRequest, effect: string): { idempotencyKey?: string } {
  return call.idempotencyKey === null ? {} : { idempotencyKey: `${effect}:${call.idempotencyKey}` };
}

function reply(response: ServerResponse, answer: Answer): void {
  const body = answer.ok ? { result: answer.result, seq: answer.seq } : { error: { code: answer.code, message: answer.message } };
  response.writeHead(answer.status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
