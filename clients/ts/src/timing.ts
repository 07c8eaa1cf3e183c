/**
 * Every timer of the client, with its unit and why it has this value.
 * Client options override some of them; the server's `Welcome` sets others.
 *
 * @module
 */

/** First reconnect delay bound, in ms; doubles per failed attempt (the reference client's value). */
export const INITIAL_BACKOFF_MS = 100;

/** Largest reconnect delay bound, in ms: clients that lost a server come back within 10 s. */
export const MAX_BACKOFF_MS = 10_000;

/**
 * How often to ping an otherwise quiet connection, in ms. The server closes
 * connections silent for `idleTimeoutMs` (60 s): a ping at a third of it
 * leaves room for two lost ones. Lowered to `idleTimeoutMs / 3` if the server
 * says so in `Welcome`.
 */
export const PING_INTERVAL_MS = 20_000;

/** Heartbeat interval assumed until the `Welcome` says otherwise, in ms (the server's 15 s). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 15_000;

/**
 * A connection that has sent nothing for this many heartbeat intervals is
 * taken for dead and replaced (the protocol suggests about two).
 */
export const DEAD_AFTER_HEARTBEATS = 2;

/** How long the socket may take to open and answer the hello, in ms, before it is dropped and retried. */
export const CONNECT_TIMEOUT_MS = 15_000;

/**
 * How long a query nobody watches stays subscribed, in ms: long enough that a
 * React StrictMode remount, a route change that re-mounts the same list, or a
 * quick back-and-forth keep one subscription instead of resubscribing.
 */
export const UNSUBSCRIBE_GRACE_MS = 2_000;

/**
 * How long before a token's `exp` the client fetches a fresh one, in ms
 * (at most half the token's remaining life, so short tokens refresh too).
 */
export const TOKEN_REFRESH_LEAD_MS = 60_000;

/** The full-jitter backoff delay for a failed attempt (0-based), in ms: uniform in [0, bound]. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const bound = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * bound);
}
