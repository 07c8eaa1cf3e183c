/**
 * Checks the signed requests protosync forwards to an app's backend when an
 * action is called (docs/actions.md, "Signing"): the HMAC-SHA256 of
 * `"<timestamp>.<raw body>"` under the backend's secret, and a timestamp
 * near the receiver's clock. Web Crypto only, so it runs on Node ≥ 20, Deno,
 * Bun and edge runtimes alike.
 *
 * @module
 */

import { type JsonObject, ProtosyncError } from "../index.js";

/** How far a request's timestamp may be from the receiver's clock, in seconds (docs/actions.md). */
export const ACTION_REQUEST_TOLERANCE_SECONDS = 300;

/** Who made an action call: an end user or anonymous caller, a service, the clock or a commit. */
export type ActionCaller = "client" | "service" | "schedule" | "trigger";

/** A verified action request, as protosync sent it. */
export interface ActionRequest {
  /** `<full service name>/<Method>`, e.g. `inbox.v1.Inbox/Confirm`. */
  readonly action: string;
  /** The validated arguments, canonical proto3 JSON. */
  readonly args: JsonObject;
  /** The caller's verified token claims; `null` for services and anonymous callers. */
  readonly auth: JsonObject | null;
  readonly caller: ActionCaller;
  readonly requestId: string;
  /** The caller's idempotency key: store it with the effect so a retry does not repeat it. */
  readonly idempotencyKey: string | null;
}

/** What {@link verifyActionRequest} checks. */
export interface VerifyActionRequestOptions {
  /** The backend's secret, as in the server's `[backends.NAME]`. */
  readonly secret: string;
  /** The request's headers: a `Headers`, or Node's `IncomingHttpHeaders`. */
  readonly headers: Headers | Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The raw body, exactly as received (before any JSON parsing). */
  readonly body: string | Uint8Array;
  /** Default {@link ACTION_REQUEST_TOLERANCE_SECONDS}. */
  readonly toleranceSeconds?: number;
  /** The receiver's clock in unix seconds (default: now). */
  readonly now?: number;
}

const CALLERS: readonly ActionCaller[] = ["client", "service", "schedule", "trigger"];

function header(headers: VerifyActionRequestOptions["headers"], name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined;
  const value = (headers as Record<string, string | readonly string[] | undefined>)[name];
  return typeof value === "string" ? value : undefined;
}

function invalid(message: string): ProtosyncError {
  return new ProtosyncError("ACTION_REQUEST_INVALID", message);
}

/**
 * Verifies an action request and returns what it says; throws a
 * `ProtosyncError` with code `ACTION_REQUEST_INVALID` when a header is
 * missing, the timestamp is too far from `now`, the signature does not match
 * (compared in constant time by Web Crypto) or the body is not an action
 * request. Answer such a request with a 401 and do nothing.
 */
export async function verifyActionRequest(options: VerifyActionRequestOptions): Promise<ActionRequest> {
  const timestamp = header(options.headers, "protosync-timestamp");
  const signature = header(options.headers, "protosync-signature");
  if (timestamp === undefined || !/^\d{1,12}$/.test(timestamp)) throw invalid("missing or malformed protosync-timestamp header");
  if (signature === undefined || !/^v1=[0-9a-f]{64}$/.test(signature)) throw invalid("missing or malformed protosync-signature header (v1=<64 hex digits>)");
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? ACTION_REQUEST_TOLERANCE_SECONDS;
  if (Math.abs(now - Number(timestamp)) > tolerance) throw invalid(`protosync-timestamp ${timestamp} is more than ${tolerance} s from this clock (${now})`);

  const encoder = new TextEncoder();
  const body = typeof options.body === "string" ? encoder.encode(options.body) : options.body;
  const signed = new Uint8Array(timestamp.length + 1 + body.length);
  signed.set(encoder.encode(`${timestamp}.`));
  signed.set(body, timestamp.length + 1);
  const key = await globalThis.crypto.subtle.importKey("raw", encoder.encode(options.secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const mac = Uint8Array.from(signature.slice(3).match(/../g) ?? [], (pair) => Number.parseInt(pair, 16));
  if (!(await globalThis.crypto.subtle.verify("HMAC", key, mac, signed))) throw invalid("the signature does not match the body (wrong secret, or the body was changed)");

  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw invalid("the body is not JSON");
  }
  const call = parsed as Partial<Record<keyof ActionRequest, unknown>>;
  if (typeof call !== "object" || call === null || typeof call.action !== "string" || typeof call.args !== "object" || call.args === null) {
    throw invalid("the body is not an action request (action, args)");
  }
  return {
    action: call.action,
    args: call.args as JsonObject,
    auth: typeof call.auth === "object" && call.auth !== null ? (call.auth as JsonObject) : null,
    caller: CALLERS.includes(call.caller as ActionCaller) ? (call.caller as ActionCaller) : "client",
    requestId: typeof call.requestId === "string" ? call.requestId : "",
    idempotencyKey: typeof call.idempotencyKey === "string" && call.idempotencyKey !== "" ? call.idempotencyKey : null,
  };
}
