/**
 * A stand-in for the Gmail API, on a local port: mailboxes of messages with
 * increasing history ids (what ingestion reads), and a `send` endpoint that
 * records every send (what the test counts). It has no notion of
 * idempotency, like the real one: sending exactly once is the backend's job.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { readJson } from "./http-body.js";

/** A message as the fake Gmail lists it. */
export interface GmailMessage {
  readonly id: string;
  readonly historyId: number;
  readonly to: string;
  readonly from: { readonly name: string; readonly email: string };
  readonly subject: string;
  readonly body: string;
  /** RFC 3339. */
  readonly receivedAt: string;
}

/** A message sent through the fake Gmail. */
export interface GmailSend {
  readonly id: string;
  readonly from: string;
  readonly to: string;
  readonly subject: string;
  readonly body: string;
}

/** What a new message needs; the rest is filled in. */
export type NewMessage = Pick<GmailMessage, "to" | "from" | "subject" | "body">;

/** Messages listed per request: the ingestion pages through more. */
export const LIST_PAGE_SIZE = 50;

export interface FakeGmail {
  readonly url: string;
  /** Puts a message into a mailbox (as if it had arrived). */
  deliver(message: NewMessage): GmailMessage;
  /** Every send so far, oldest first. */
  readonly sends: readonly GmailSend[];
  close(): Promise<void>;
}

/**
 * Starts the fake Gmail on `port` (0: a free one). HTTP routes:
 * - `GET /gmail/v1/users/{email}/messages?afterHistoryId=N`: `{ messages }`, oldest first;
 * - `POST /gmail/v1/users/{email}/messages/send` with `{ to, subject, body }`: `{ id }`;
 * - `POST /gmail/v1/deliver` with a `NewMessage`: the stored message (for demos and tests);
 * - `GET /gmail/v1/sends`: `{ sends }`.
 */
export async function startFakeGmail(port: number): Promise<FakeGmail> {
  const messages: GmailMessage[] = [];
  const sends: GmailSend[] = [];
  let historyId = 0;

  const deliver = (message: NewMessage): GmailMessage => {
    historyId += 1;
    const stored = { ...message, id: `msg-${historyId}`, historyId, receivedAt: new Date().toISOString() };
    messages.push(stored);
    return stored;
  };

  const server = createServer((request, response) => {
    route(request, response).catch((e: unknown) => reply(response, 500, { error: { code: "INTERNAL", message: String(e) } }));
  });

  async function route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://gmail.invalid");
    const mailbox = /^\/gmail\/v1\/users\/([^/]+)\/messages(\/send)?$/.exec(url.pathname);
    if (request.method === "GET" && mailbox !== null && mailbox[2] === undefined) {
      const email = decodeURIComponent(mailbox[1] ?? "");
      const after = Number(url.searchParams.get("afterHistoryId") ?? "0");
      const page = messages.filter((m) => m.to === email && m.historyId > after).slice(0, LIST_PAGE_SIZE);
      return reply(response, 200, { messages: page });
    }
    if (request.method === "POST" && mailbox !== null && mailbox[2] === "/send") {
      const body = (await readJson(request)) as Partial<GmailSend>;
      if (typeof body.to !== "string" || typeof body.subject !== "string" || typeof body.body !== "string") {
        return reply(response, 400, { error: { code: "INVALID_ARGUMENT", message: "send needs to, subject and body" } });
      }
      const sent = { id: `sent-${sends.length + 1}`, from: decodeURIComponent(mailbox[1] ?? ""), to: body.to, subject: body.subject, body: body.body };
      sends.push(sent);
      return reply(response, 200, { id: sent.id });
    }
    if (request.method === "POST" && url.pathname === "/gmail/v1/deliver") {
      return reply(response, 200, deliver((await readJson(request)) as NewMessage));
    }
    if (request.method === "GET" && url.pathname === "/gmail/v1/sends") return reply(response, 200, { sends });
    reply(response, 404, { error: { code: "NOT_FOUND", message: `no route ${request.method} ${url.pathname}` } });
  }

  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    deliver,
    sends,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
