/**
 * The error codes the server sends (docs/protocol.md, docs/http-api.md,
 * docs/auth.md), plus the client's own. A code not listed here is still
 * passed through as a string.
 */
export type ErrorCode =
  | "BAD_FRAME"
  | "BAD_REQUEST"
  | "UNEXPECTED_HELLO"
  | "UPGRADE_REQUIRED"
  | "UNKNOWN_COLLECTION"
  | "INVALID_QUERY"
  | "INVALID_CURSOR"
  | "INVALID_DOCUMENT"
  | "DUPLICATE_SUBSCRIPTION"
  | "UNKNOWN_SUBSCRIPTION"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "VERSION_CONFLICT"
  | "PERMISSION_DENIED"
  | "IDEMPOTENCY_KEY_REUSED"
  | "LIMIT_EXCEEDED"
  | "RATE_LIMITED"
  | "UNAVAILABLE"
  | "INTERNAL"
  | "UNAUTHENTICATED"
  | "METHOD_NOT_ALLOWED"
  | "ORIGIN_NOT_ALLOWED"
  | "TOKEN_INVALID"
  | "TOKEN_EXPIRED"
  | "TOKEN_NOT_YET_VALID"
  | "TOKEN_INVALID_ISSUER"
  | "TOKEN_INVALID_AUDIENCE"
  | "TOKEN_INVALID_SIGNATURE"
  | "TOKEN_MISSING_CLAIM"
  | "TOKEN_TOO_OLD"
  | "TOKEN_UNKNOWN_KEY"
  | "TOKEN_REVOKED"
  /** The client was closed before the operation finished. */
  | "CLIENT_CLOSED"
  /** The server broke the protocol (the client reconnects). */
  | "PROTOCOL_ERROR"
  /** The HTTP request could not be sent or its answer read. */
  | "NETWORK_ERROR"
  /** An action call was sent and the connection dropped before its answer (calls are not resent). */
  | "CALL_INTERRUPTED"
  /** `verifyActionRequest`: a forwarded action request whose headers, signature or body do not check out. */
  | "ACTION_REQUEST_INVALID";

/** An error with the server's stable code (or the client's own, see {@link ErrorCode}). */
export class ProtosyncError extends Error {
  /** Stable and machine-readable: branch on this, not on `message`. */
  readonly code: ErrorCode | (string & {});
  /** With `INVALID_DOCUMENT`: the offending field (`sender.email`). */
  readonly path: string | undefined;
  /** The HTTP status, for errors of the HTTP API (`./server`). */
  readonly status: number | undefined;

  constructor(code: ErrorCode | (string & {}), message: string, details: { path?: string; status?: number } = {}) {
    super(`${code}: ${message}`);
    this.name = "ProtosyncError";
    this.code = code;
    this.path = details.path || undefined;
    this.status = details.status;
  }
}

/** Codes that pause a live connection until a fresh token is presented. */
export const PAUSE_CODES: ReadonlySet<string> = new Set(["TOKEN_EXPIRED", "TOKEN_REVOKED"]);
