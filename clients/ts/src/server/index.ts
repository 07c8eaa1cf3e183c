/**
 * Server-side reads and writes over the HTTP API (`POST /v1/query`,
 * `GET /v1/collections/…`, `POST /v1/mutate`), for Next.js server components,
 * route handlers and scripts. Same generated queries and operations as the
 * live client; no WebSocket. Authenticates with a user's JWT or a service's
 * API key (`Authorization: Bearer …`). And, for an app's backend, the check
 * of the signed action requests protosync forwards to it
 * ({@link verifyActionRequest}).
 *
 * @module
 */

import {
  type ActionRef,
  type AnyQuery,
  type CollectionTypes,
  type GetQuery,
  type JsonObject,
  type MutationResult,
  type Operation,
  operationToWire,
  ProtosyncError,
  type Query,
} from "../index.js";

export {
  ACTION_REQUEST_TOLERANCE_SECONDS,
  type ActionCaller,
  type ActionRequest,
  verifyActionRequest,
  type VerifyActionRequestOptions,
} from "./action-request.js";

/** Where the server is and who is asking. */
export interface ServerOptions {
  /** The server's base URL: `http://127.0.0.1:4000`. */
  readonly url: string;
  /** A user's JWT or a service's API key (sent as `Authorization: Bearer …`). */
  readonly token?: string;
  /** A fetch implementation (default: the global `fetch`). */
  readonly fetch?: typeof fetch;
}

/** A document as the HTTP API returns it: no per-document `seq` (reads report their own). */
export interface StoredDocument<D> {
  readonly id: string;
  readonly version: string;
  readonly doc: D;
}

/** One page of a query. */
export interface QueryPage<D> {
  readonly documents: readonly StoredDocument<D>[];
  /** Pass to `query.after(cursor)` for the next page; absent on the last page. */
  readonly nextCursor: string | undefined;
  /** The seq the page is consistent at. */
  readonly seq: string;
}

/** What {@link fetchQuery} returns for a query or a get. */
export type ServerResultOf<Q> =
  Q extends Query<infer T> ? readonly StoredDocument<T["doc"]>[] : Q extends GetQuery<infer T> ? StoredDocument<T["doc"]> | null : never;

async function request(options: ServerOptions, method: "GET" | "POST", path: string, body?: unknown): Promise<unknown> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let response: Response;
  try {
    response = await doFetch(new URL(path, options.url), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ProtosyncError("NETWORK_ERROR", `${method} ${path}: ${String(e)}`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new ProtosyncError(response.ok ? "INTERNAL" : "BAD_REQUEST", `${method} ${path}: HTTP ${response.status}: ${text}`, {
      status: response.status,
    });
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string; path?: string } }).error;
    throw new ProtosyncError(error?.code ?? "INTERNAL", error?.message ?? `HTTP ${response.status}`, {
      status: response.status,
      path: error?.path,
    });
  }
  return parsed;
}

interface WireQueryAnswer {
  documents?: { id: string; version?: string; doc?: JsonObject }[];
  nextCursor?: string;
  seq?: string;
}

function stored<D>(d: { id: string; version?: string; doc?: JsonObject }): StoredDocument<D> {
  return { id: d.id, version: d.version ?? "0", doc: (d.doc ?? {}) as D };
}

/** One page of a query (its `limit`, default 100), with the cursor of the next. */
export async function fetchQueryPage<T extends CollectionTypes>(query: Query<T>, options: ServerOptions): Promise<QueryPage<T["doc"]>> {
  const answer = (await request(options, "POST", "/v1/query", query.toWire())) as WireQueryAnswer;
  return {
    documents: (answer.documents ?? []).map((d) => stored<T["doc"]>(d)),
    nextCursor: answer.nextCursor,
    seq: answer.seq ?? "0",
  };
}

/** A query's documents (one page), or a get's document (`null` when absent or not readable). */
export async function fetchQuery<Q extends AnyQuery>(query: Q, options: ServerOptions): Promise<ServerResultOf<Q>> {
  if (query.kind === "query") {
    const page = await fetchQueryPage(query, options);
    return page.documents as ServerResultOf<Q>;
  }
  const path = `/v1/collections/${encodeURIComponent(query.collection)}/docs/${encodeURIComponent(query.id)}`;
  try {
    const answer = (await request(options, "GET", path)) as { id: string; version?: string; doc?: JsonObject };
    return stored(answer) as ServerResultOf<Q>;
  } catch (e) {
    if (e instanceof ProtosyncError && e.code === "NOT_FOUND") return null as ServerResultOf<Q>;
    throw e;
  }
}

/**
 * Applies operations as one atomic commit. Give an `idempotencyKey` to make
 * retries safe (default: a random key, so this call's own retries are).
 */
export async function mutate(
  ops: Operation | readonly Operation[],
  options: ServerOptions & { readonly idempotencyKey?: string },
): Promise<MutationResult> {
  const list: readonly Operation[] = Array.isArray(ops) ? ops : [ops as Operation];
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  const key = options.idempotencyKey ?? Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const answer = (await request(options, "POST", "/v1/mutate", { idempotencyKey: key, ops: list.map(operationToWire) })) as {
    seq?: string;
    results?: { id: string; version?: string }[];
    duplicate?: boolean;
  };
  return {
    seq: answer.seq ?? "0",
    results: (answer.results ?? []).map((r) => ({ id: r.id, version: r.version ?? "0" })),
    duplicate: answer.duplicate ?? false,
  };
}

/** What {@link callAction} resolves with. */
export interface ActionResult<R> {
  readonly result: R;
  /** The seq of the backend's writes (`"0"` when it reported none): pass to a live client's `whenWatermark`. */
  readonly seq: string;
  /** True when this is the recorded result of an earlier call with the same idempotency key. */
  readonly duplicate: boolean;
}

/** Calls an action over HTTP (`POST /v1/actions/{service}/{method}`, docs/actions.md). */
export async function callAction<A, R>(
  ref: ActionRef<A, R>,
  args: A,
  options: ServerOptions & { readonly idempotencyKey?: string },
): Promise<ActionResult<R>> {
  const body: { args: A; idempotencyKey?: string } = { args };
  if (options.idempotencyKey !== undefined) body.idempotencyKey = options.idempotencyKey;
  const answer = (await request(options, "POST", `/v1/actions/${ref.name}`, body)) as { result?: R; seq?: string; duplicate?: boolean };
  return { result: (answer.result ?? {}) as R, seq: answer.seq ?? "0", duplicate: answer.duplicate ?? false };
}

/** The same calls bound to one server and credential. */
export class ProtosyncHttpClient {
  readonly options: ServerOptions;

  constructor(options: ServerOptions) {
    this.options = options;
  }

  fetchQuery<Q extends AnyQuery>(query: Q): Promise<ServerResultOf<Q>> {
    return fetchQuery(query, this.options);
  }

  fetchQueryPage<T extends CollectionTypes>(query: Query<T>): Promise<QueryPage<T["doc"]>> {
    return fetchQueryPage(query, this.options);
  }

  mutate(ops: Operation | readonly Operation[], options: { readonly idempotencyKey?: string } = {}): Promise<MutationResult> {
    return mutate(ops, { ...this.options, ...options });
  }

  callAction<A, R>(ref: ActionRef<A, R>, args: A, options: { readonly idempotencyKey?: string } = {}): Promise<ActionResult<R>> {
    return callAction(ref, args, { ...this.options, ...options });
  }
}
