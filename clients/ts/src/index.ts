/**
 * protosync's TypeScript client: live queries over one WebSocket, mutations
 * with read-your-writes, optimistic updates, token refresh, pagination.
 * Types come from your `.proto` schema through `protosync codegen ts`.
 *
 * ```ts
 * import { ProtosyncClient } from "protosync";
 * import { api } from "./protosync/api.js"; // generated
 *
 * const client = new ProtosyncClient("http://127.0.0.1:4000");
 * client.subscribe(api.workItems.byOwnerFeed({ ownerId: "ann", important: true }).orderBy("priority", "desc").limit(20),
 *   (state) => console.log(state));
 * await client.mutate(api.workItems.patch("w1", { important: false }));
 * ```
 *
 * @module
 */

export {
  ProtosyncClient,
  PaginatedQuery,
  syncUrl,
  type ClientOptions,
  type ClientStats,
  type FetchToken,
  type MutateOptions,
  type MutationResult,
  type OptimisticLocalStore,
  type PaginatedSnapshot,
  type PaginationStatus,
  type QueryState,
} from "./client.js";
export {
  INITIAL_CONNECTION_STATE,
  nextConnectionState,
  type ConnectionEvent,
  type ConnectionState,
  type ConnectionStatus,
} from "./connection.js";
export { actionRef, DEFAULT_MAX_INFLIGHT_CALLS, type ActionOptions, type ActionRef } from "./calls.js";
export { ProtosyncError, type ErrorCode } from "./errors.js";
export type { JsonObject, JsonValue, ProtoDouble } from "./json.js";
export { MemoryPersistedCache, type PersistedCache, type PersistedMutation, type PersistedState, type PersistedSubscription } from "./persist.js";
export {
  collection,
  GetQuery,
  MAX_QUERY_LIMIT,
  operationToWire,
  Query,
  type AnyQuery,
  type CollectionApi,
  type CollectionOptions,
  type CollectionTypes,
  type ComparisonOp,
  type Direction,
  type Document,
  type Equalities,
  type FieldOf,
  type Operation,
  type OperationKind,
  type ResultOf,
  type WriteOptions,
} from "./query.js";
export {
  backoffDelay,
  CONNECT_TIMEOUT_MS,
  DEAD_AFTER_HEARTBEATS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  INITIAL_BACKOFF_MS,
  MAX_BACKOFF_MS,
  PING_INTERVAL_MS,
  TOKEN_REFRESH_LEAD_MS,
  UNSUBSCRIBE_GRACE_MS,
} from "./timing.js";
export type { WebSocketConstructor, WebSocketLike } from "./websocket.js";
export type * as wire from "./wire.js";
