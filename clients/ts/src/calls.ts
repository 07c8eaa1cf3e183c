/**
 * Action calls on the live connection (docs/actions.md): a typed reference
 * to an action, and the book of calls in flight. A call is sent once: it is
 * never resent after a reconnect (the backend may have run it), so a call
 * that was sent and not answered when the connection dropped rejects with
 * `CALL_INTERRUPTED`; retry it with the same idempotency key. An answered
 * call resolves once the view includes the `seq` of the backend's writes.
 */

import { ProtosyncError } from "./errors.js";
import type { JsonObject } from "./json.js";
import type { WireCall, WireCallResult } from "./wire.js";

/** Unanswered calls per connection when the server's welcome does not say (`Limits.maxInflightCalls`). */
export const DEFAULT_MAX_INFLIGHT_CALLS = 16;

/** A typed reference to an action, `<full service name>/<Method>`; generated code makes these. */
export interface ActionRef<A, R> {
  readonly kind: "action";
  readonly name: string;
  /** Carries the argument and result types only; never set. */
  readonly types?: { readonly args: A; readonly result: R };
}

/** The reference to the action `name` (`inbox.v1.Inbox/Confirm`), with its argument and result types. */
export function actionRef<A, R>(name: string): ActionRef<A, R> {
  return { kind: "action", name };
}

/** Options of a call. */
export interface ActionOptions {
  /** A retry with the same key (same caller, same args) gets the first result; the backend is not called again. */
  readonly idempotencyKey?: string;
}

interface PendingCall {
  readonly wire: WireCall;
  sent: boolean;
  /** The answer, kept until the view reaches its seq. */
  answer: WireCallResult | null;
  readonly resolve: (result: JsonObject) => void;
  readonly reject: (error: ProtosyncError) => void;
}

/** The calls a client has not finished, in the order they were made. */
export class CallBook {
  readonly #calls = new Map<string, PendingCall>();
  #inflight = 0;

  add(wire: WireCall, resolve: (result: JsonObject) => void, reject: (error: ProtosyncError) => void): void {
    this.#calls.set(wire.requestId, { wire, sent: false, answer: null, resolve, reject });
  }

  has(requestId: string): boolean {
    return this.#calls.has(requestId);
  }

  /** The calls to send now, marked sent: those never sent, up to `limit` unanswered. */
  takeUnsent(limit: number): WireCall[] {
    const out: WireCall[] = [];
    for (const call of this.#calls.values()) {
      if (this.#inflight >= limit) break;
      if (call.sent) continue;
      call.sent = true;
      this.#inflight += 1;
      out.push(call.wire);
    }
    return out;
  }

  /** The server's answer: resolves now if the view is at its seq, else when it gets there. */
  answered(result: WireCallResult, watermark: bigint): void {
    const call = this.#calls.get(result.requestId);
    if (call === undefined || !call.sent || call.answer !== null) return;
    this.#inflight = Math.max(0, this.#inflight - 1);
    call.answer = result;
    this.reached(watermark);
  }

  /** The view moved to `watermark`: answered calls whose writes it includes are done. */
  reached(watermark: bigint): void {
    for (const [id, call] of this.#calls) {
      if (call.answer !== null && BigInt(call.answer.seq ?? "0") <= watermark) {
        this.#calls.delete(id);
        call.resolve(call.answer.result ?? {});
      }
    }
  }

  /** The server refused the call. `retry`: nothing ran (a paused connection); send it again later. */
  failed(requestId: string, error: ProtosyncError, retry: boolean): void {
    const call = this.#calls.get(requestId);
    if (call === undefined) return;
    if (call.sent && call.answer === null) this.#inflight = Math.max(0, this.#inflight - 1);
    if (retry) {
      call.sent = false;
      return;
    }
    this.#calls.delete(requestId);
    call.reject(error);
  }

  /** The connection dropped: calls sent and unanswered fail; unsent ones wait for the next connection. */
  interrupted(): void {
    this.#inflight = 0;
    for (const [id, call] of this.#calls) {
      if (call.sent && call.answer === null) {
        this.#calls.delete(id);
        call.reject(new ProtosyncError("CALL_INTERRUPTED", `the connection dropped before ${call.wire.action} answered; retry with the same idempotency key`));
      }
    }
  }

  /** The client closed: every call fails. */
  closeAll(): void {
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    this.#inflight = 0;
    for (const call of calls) call.reject(new ProtosyncError("CLIENT_CLOSED", "the client was closed before the call completed"));
  }
}
