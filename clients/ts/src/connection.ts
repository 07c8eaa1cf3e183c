/**
 * The connection's state machine. One function, {@link nextConnectionState},
 * decides every change; the client feeds it events and publishes the result.
 *
 * ```text
 *   connecting ── welcome ──► open
 *       │  ▲                    │
 *     lost  └─ retry ─┐       lost
 *       ▼             │         ▼
 *   reconnecting ◄────┴──── (backoff with full jitter)
 *   any ── close / fatal ──► closed
 * ```
 *
 * @module
 */

/** Where the connection is. `attempt` counts failed attempts since the last `open`. */
export type ConnectionState =
  | { readonly status: "connecting"; readonly attempt: number }
  | { readonly status: "open"; readonly sessionId: string }
  | { readonly status: "reconnecting"; readonly attempt: number; readonly retryInMs: number; readonly reason: string }
  | { readonly status: "closed"; readonly reason: string };

/** The name of a state. */
export type ConnectionStatus = ConnectionState["status"];

/** What can happen to a connection. */
export type ConnectionEvent =
  /** The backoff wait is over (or the client starts): open a socket. */
  | { readonly type: "connect" }
  /** The server answered the hello. */
  | { readonly type: "welcome"; readonly sessionId: string }
  /** The socket failed or closed; retry after `retryInMs`. */
  | { readonly type: "lost"; readonly reason: string; readonly retryInMs: number }
  /** The app closed the client, or the server refused it for good (`UPGRADE_REQUIRED`). */
  | { readonly type: "close"; readonly reason: string };

/** The initial state of a client. */
export const INITIAL_CONNECTION_STATE: ConnectionState = { status: "connecting", attempt: 0 };

/**
 * The one transition function. Events that do not apply to a state leave it
 * unchanged (returned as is, so callers can compare by identity).
 */
export function nextConnectionState(state: ConnectionState, event: ConnectionEvent): ConnectionState {
  if (state.status === "closed") return state;
  switch (event.type) {
    case "close":
      return { status: "closed", reason: event.reason };
    case "connect":
      return state.status === "reconnecting" ? { status: "connecting", attempt: state.attempt } : state;
    case "welcome":
      return state.status === "connecting" ? { status: "open", sessionId: event.sessionId } : state;
    case "lost": {
      const attempt = state.status === "open" ? 0 : state.status === "connecting" ? state.attempt + 1 : state.attempt;
      return state.status === "reconnecting"
        ? state
        : { status: "reconnecting", attempt, retryInMs: event.retryInMs, reason: event.reason };
    }
  }
}
