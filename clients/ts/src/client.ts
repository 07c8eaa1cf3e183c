/**
 * The live client: one WebSocket, a query cache, mutations, auth.
 *
 * It owns the connection (through the state machine in `connection.ts`),
 * the view (applied whole, transition by transition) and the pending
 * mutations. It never shows a state the server did not have at some seq,
 * except for the optimistic layers an app asks for, which it removes exactly
 * when their mutation completes or fails.
 *
 * @module
 */

import {
  type ConnectionEvent,
  type ConnectionState,
  INITIAL_CONNECTION_STATE,
  nextConnectionState,
} from "./connection.js";
import { type ActionOptions, type ActionRef, CallBook, DEFAULT_MAX_INFLIGHT_CALLS } from "./calls.js";
import { PAUSE_CODES, ProtosyncError } from "./errors.js";
import type { JsonObject } from "./json.js";
import type { PersistedCache, PersistedState } from "./persist.js";
import {
  type AnyQuery,
  type CollectionTypes,
  type Document,
  MAX_QUERY_LIMIT,
  type Operation,
  type Query,
  type ResultOf,
  operationToWire,
} from "./query.js";
import {
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
import { applyTransition, EMPTY_VIEW, heldOf, ProtocolViolation, type SubscriptionView, u64, type View } from "./view.js";
import { defaultWebSocket, type WebSocketConstructor, type WebSocketLike, WS_OPEN } from "./websocket.js";
import {
  type ClientMessage,
  JSON_SUBPROTOCOL,
  PROTOCOL_VERSION,
  type ServerMessage,
  type WireCall,
  type WireDocument,
  type WireError,
  type WireHello,
  type WireMutate,
  type WireMutationResult,
  type WireTarget,
  type WireTransition,
  type WireWelcome,
} from "./wire.js";

/** Options of {@link ProtosyncClient}. Every one has a default. */
export interface ClientOptions {
  /** The WebSocket constructor (default: the platform's, else the `ws` package's). */
  readonly WebSocket?: WebSocketConstructor;
  /** First reconnect delay bound in ms (default {@link INITIAL_BACKOFF_MS}). */
  readonly initialBackoffMs?: number;
  /** Largest reconnect delay bound in ms (default {@link MAX_BACKOFF_MS}). */
  readonly maxBackoffMs?: number;
  /** How long an unwatched query stays subscribed, in ms (default {@link UNSUBSCRIBE_GRACE_MS}). */
  readonly unsubscribeGraceMs?: number;
  /**
   * How long before a token expires a fresh one is fetched, in ms (default
   * {@link TOKEN_REFRESH_LEAD_MS}). `0`: only when the server reports `TOKEN_EXPIRED`.
   */
  readonly tokenRefreshLeadMs?: number;
  /** Where to keep the view and pending mutations across restarts (default: nowhere). */
  readonly persistedCache?: PersistedCache;
  /** The fingerprint of the generated code (`schemaFingerprint` from `api.ts`), sent in the hello. */
  readonly schemaFingerprint?: string;
  /** Errors that belong to no call: refused tokens, refused subscriptions, protocol violations. */
  readonly onError?: (error: ProtosyncError) => void;
  /** Called with every message the client sends (for logging and tests). */
  readonly onSend?: (message: ClientMessage) => void;
}

/** What a watched query shows. Objects are replaced, never mutated, so `===` tells a change. */
export type QueryState<R> =
  | { readonly status: "loading" }
  | { readonly status: "ready"; readonly value: R }
  | { readonly status: "error"; readonly error: ProtosyncError };

/** The outcome of a completed mutation. */
export interface MutationResult {
  /** The commit's seq. The client's view includes it when the promise resolves. */
  readonly seq: string;
  /** Per op, in op order: the document id and its version after the commit. */
  readonly results: readonly { readonly id: string; readonly version: string }[];
  /** True when an earlier send with the same idempotency key had committed it. */
  readonly duplicate: boolean;
}

/**
 * What an optimistic update may change. Changes apply to the view shown to
 * the app until the mutation completes (then the server's state, which
 * includes the write, replaces them) or fails (then they are undone exactly).
 */
export interface OptimisticLocalStore {
  /** A watched query's current result, or `undefined` when not watched or still loading. */
  getQuery<Q extends AnyQuery>(query: Q): ResultOf<Q> | undefined;
  /** Replaces a watched query's result. */
  setQuery<Q extends AnyQuery>(query: Q, result: ResultOf<Q>): void;
  /** Merges top-level fields into a document wherever a watched query holds it. */
  patchDocument<T extends CollectionTypes>(collection: { readonly name: T["name"] }, id: string, fields: Partial<T["doc"]>): void;
  /** Removes a document from every watched query that holds it. */
  deleteDocument(collection: { readonly name: string }, id: string): void;
}

/** Options of {@link ProtosyncClient.mutate}. */
export interface MutateOptions {
  /** A local change to show at once; undone exactly if the server refuses the mutation. */
  readonly optimisticUpdate?: (local: OptimisticLocalStore) => void;
  /** The idempotency key (default: 128 random bits). Resends always reuse it. */
  readonly idempotencyKey?: string;
}

/** Asks the app for a token. `forceRefresh`: the last one expired or was refused. `null`: signed out. */
export type FetchToken = (options: { forceRefresh: boolean }) => Promise<string | null | undefined>;

/** Counters for tests and diagnostics. */
export interface ClientStats {
  connections: number;
  subscribesSent: number;
  unsubscribesSent: number;
  mutationsSent: number;
  transitionsApplied: number;
  /** Transitions that came in more than one chunk. */
  chunkedTransitions: number;
  authenticatesSent: number;
}

type Result = readonly Document<JsonObject>[] | Document<JsonObject> | null;

interface Entry {
  readonly key: string;
  readonly target: WireTarget;
  readonly collection: string;
  readonly subscriptionId: string;
  refs: number;
  readonly listeners: Set<() => void>;
  graceTimer: ReturnType<typeof setTimeout> | undefined;
  /** The connection generation it was subscribed on, or -1. */
  sentOn: number;
  /** The server's state. */
  base: QueryState<Result>;
  /** What the app sees: `base` with the optimistic layers on top. */
  state: QueryState<Result>;
}

interface Pending {
  readonly wire: WireMutate;
  sent: boolean;
  result: WireMutationResult | null;
  readonly optimistic: ((local: OptimisticLocalStore) => void) | undefined;
  readonly resolve: (result: MutationResult) => void;
  readonly reject: (error: ProtosyncError) => void;
}

const LOADING: QueryState<never> = { status: "loading" };

/** Converted documents keep their identity while the server's document does. */
const converted = new WeakMap<WireDocument, Document<JsonObject>>();
function toDocument(wire: WireDocument): Document<JsonObject> {
  let doc = converted.get(wire);
  if (doc === undefined) {
    doc = { id: wire.id, version: wire.version ?? "0", seq: wire.seq ?? "0", doc: wire.doc ?? {} };
    converted.set(wire, doc);
  }
  return doc;
}

function randomKey(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `http://host:4000` → `ws://host:4000/v1/sync`; a `ws(s)://` URL is used as given. */
export function syncUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/v1/sync";
  return parsed.toString();
}

/**
 * A live connection to a protosync server. It connects at once and keeps
 * reconnecting (with backoff and full jitter, resuming its view) until
 * {@link ProtosyncClient.close}.
 */
export class ProtosyncClient {
  /** The sync endpoint (`ws://…/v1/sync`). */
  readonly url: string;
  /** Counters for tests and diagnostics. */
  readonly stats: ClientStats = {
    connections: 0,
    subscribesSent: 0,
    unsubscribesSent: 0,
    mutationsSent: 0,
    transitionsApplied: 0,
    chunkedTransitions: 0,
    authenticatesSent: 0,
  };

  readonly #options: ClientOptions;
  #state: ConnectionState = INITIAL_CONNECTION_STATE;
  readonly #stateListeners = new Set<(state: ConnectionState) => void>();
  #socket: WebSocketLike | null = null;
  /** Bumped whenever a socket is abandoned, so its late events are ignored. */
  #generation = 0;
  #welcome: WireWelcome | null = null;
  #sessionId = "";
  #view: View = EMPTY_VIEW;
  readonly #entries = new Map<string, Entry>();
  readonly #bySubscription = new Map<string, Entry>();
  readonly #pending = new Map<string, Pending>();
  readonly #calls = new CallBook();
  #inflight = 0;
  #nextRequest = 0;
  #nextSubscription = 0;
  #chunks: WireTransition[] = [];
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #livenessTimer: ReturnType<typeof setTimeout> | undefined;
  #backoffTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #fetchToken: FetchToken | null = null;
  #onAuthChange: ((isAuthenticated: boolean) => void) | undefined;
  #token: string | null = null;
  #helloToken: string | null = null;
  #authReady: Promise<void> | null = null;
  #paused = false;
  #persistScheduled = false;
  #watermarkWaiters: { readonly seq: bigint; readonly resolve: () => void }[] = [];
  #headSeq: string | undefined;
  readonly #ready: Promise<void>;

  /** Connects to `url` (`http://127.0.0.1:4000` or `ws://…/v1/sync`). */
  constructor(url: string, options: ClientOptions = {}) {
    this.url = syncUrl(url);
    this.#options = options;
    this.#ready = this.#restore();
    void this.#ready.then(() => this.#connect());
  }

  // ------------------------------------------------------------ connection state

  /** Where the connection is now. */
  get connectionState(): ConnectionState {
    return this.#state;
  }

  /** Calls `listener` on every change of {@link connectionState}; returns a function that stops it. */
  onConnectionStateChange(listener: (state: ConnectionState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** The seq the whole view is consistent at, as a decimal string. */
  get watermark(): string {
    return String(this.#view.watermark);
  }

  /**
   * The newest seq the server had read at its last heartbeat (servers that
   * send `Heartbeat.headSeq`), or `undefined` before one. The view is
   * `headSeq - watermark` commits behind the head as of that heartbeat.
   */
  get headSeq(): string | undefined {
    return this.#headSeq;
  }

  /**
   * Resolves once the view includes commit `seq` (for example one made over
   * the HTTP API), so everything written up to it shows in every query.
   * The watermark moves with changes to watched queries, with this client's
   * own mutations, and otherwise with the server's keepalive (at most one
   * heartbeat interval, 15 s, behind).
   */
  whenWatermark(seq: string): Promise<void> {
    const target = u64(seq);
    if (this.#view.watermark >= target) return Promise.resolve();
    return new Promise((resolve) => this.#watermarkWaiters.push({ seq: target, resolve }));
  }

  #dispatch(event: ConnectionEvent): void {
    const next = nextConnectionState(this.#state, event);
    if (next === this.#state) return;
    this.#state = next;
    for (const listener of [...this.#stateListeners]) listener(next);
  }

  // ------------------------------------------------------------ queries

  /**
   * Watches a query: subscribes (or shares the subscription of an identical
   * query) and calls `onChange` whenever {@link getQueryState} changes.
   * Returns the function that stops watching; the subscription ends after
   * the grace period unless someone watches it again.
   */
  watch(query: AnyQuery, onChange: () => void): () => void {
    const entry = this.#acquire(query);
    entry.listeners.add(onChange);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.listeners.delete(onChange);
      this.#release(entry);
    };
  }

  /** What a query shows now (`loading` when nobody watches it). */
  getQueryState<Q extends AnyQuery>(query: Q): QueryState<ResultOf<Q>> {
    const entry = this.#entries.get(query.key);
    return (entry?.state ?? LOADING) as QueryState<ResultOf<Q>>;
  }

  /** Watches a query and calls `listener` with every new state; returns the function that stops it. */
  subscribe<Q extends AnyQuery>(query: Q, listener: (state: QueryState<ResultOf<Q>>) => void): () => void {
    const stop = this.watch(query, () => listener(this.getQueryState(query)));
    const now = this.getQueryState(query);
    if (now.status !== "loading") listener(now);
    return stop;
  }

  /** The query's first result (live-consistent, then released). Rejects with the server's error. */
  query<Q extends AnyQuery>(query: Q): Promise<ResultOf<Q>> {
    return new Promise((resolve, reject) => {
      let stop: (() => void) | undefined;
      let done = false;
      const check = (): void => {
        const state = this.getQueryState(query);
        if (done || state.status === "loading") return;
        done = true;
        queueMicrotask(() => stop?.());
        if (state.status === "ready") resolve(state.value);
        else reject(state.error);
      };
      stop = this.watch(query, check);
      check();
    });
  }

  /** A query that grows page by page (`loadMore`) and stays live; see {@link PaginatedQuery}. */
  paginate<T extends CollectionTypes>(query: Query<T>, options: { readonly initialNumItems: number }): PaginatedQuery<T> {
    return new PaginatedQuery(this, query, options.initialNumItems);
  }

  #acquire(query: AnyQuery): Entry {
    const key = query.key;
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = this.#newEntry(key, query.target(), query.collection);
      this.#subscribeEntry(entry);
    }
    entry.refs += 1;
    if (entry.graceTimer !== undefined) {
      clearTimeout(entry.graceTimer);
      entry.graceTimer = undefined;
    }
    return entry;
  }

  #newEntry(key: string, target: WireTarget, collection: string): Entry {
    this.#nextSubscription += 1;
    const entry: Entry = {
      key,
      target,
      collection,
      subscriptionId: `s${this.#nextSubscription}`,
      refs: 0,
      listeners: new Set(),
      graceTimer: undefined,
      sentOn: -1,
      base: LOADING,
      state: LOADING,
    };
    this.#entries.set(key, entry);
    this.#bySubscription.set(entry.subscriptionId, entry);
    return entry;
  }

  #release(entry: Entry): void {
    entry.refs -= 1;
    if (entry.refs > 0 || this.#entries.get(entry.key) !== entry) return;
    entry.graceTimer = setTimeout(() => this.#dropEntry(entry), this.#options.unsubscribeGraceMs ?? UNSUBSCRIBE_GRACE_MS);
  }

  #dropEntry(entry: Entry): void {
    entry.graceTimer = undefined;
    if (entry.refs > 0 || this.#entries.get(entry.key) !== entry) return;
    this.#entries.delete(entry.key);
    this.#bySubscription.delete(entry.subscriptionId);
    this.#forgetView(entry.subscriptionId);
    if (entry.sentOn === this.#generation && this.#isOpen()) {
      this.#send({ unsubscribe: { subscriptionId: entry.subscriptionId } });
      this.stats.unsubscribesSent += 1;
    }
    this.#schedulePersist();
  }

  #forgetView(subscriptionId: string): void {
    if (!this.#view.subscriptions.has(subscriptionId)) return;
    const subscriptions = new Map(this.#view.subscriptions);
    subscriptions.delete(subscriptionId);
    this.#view = { watermark: this.#view.watermark, subscriptions };
  }

  #subscribeEntry(entry: Entry): void {
    if (!this.#isOpen() || entry.sentOn === this.#generation) return;
    entry.sentOn = this.#generation;
    this.#send({ subscribe: { subscriptionId: entry.subscriptionId, ...entry.target } });
    this.stats.subscribesSent += 1;
  }

  #resultOf(entry: Entry): Result {
    const sub = this.#view.subscriptions.get(entry.subscriptionId);
    const docs = sub === undefined ? [] : sub.order.map((id) => toDocument(sub.docs.get(id) as WireDocument));
    return "get" in entry.target ? (docs[0] ?? null) : docs;
  }

  // ------------------------------------------------------------ mutations

  /**
   * Sends a mutation (one or more operations, applied atomically). Resolves
   * when the server committed it **and** this client's view includes the
   * commit; rejects with a {@link ProtosyncError} carrying the server's code.
   * Survives reconnects: it is resent with the same idempotency key.
   */
  mutate(ops: Operation | readonly Operation[], options: MutateOptions = {}): Promise<MutationResult> {
    const list: readonly Operation[] = Array.isArray(ops) ? ops : [ops as Operation];
    if (this.#state.status === "closed") {
      return Promise.reject(new ProtosyncError("CLIENT_CLOSED", "the client is closed"));
    }
    if (list.length === 0) return Promise.reject(new ProtosyncError("BAD_REQUEST", "a mutation needs at least one operation"));
    this.#nextRequest += 1;
    // Zero-padded, so resends (in map order) go out in the order sent.
    const requestId = `m${String(this.#nextRequest).padStart(12, "0")}`;
    const wire: WireMutate = {
      requestId,
      idempotencyKey: options.idempotencyKey ?? randomKey(),
      ops: list.map(operationToWire),
    };
    return new Promise((resolve, reject) => {
      this.#pending.set(requestId, { wire, sent: false, result: null, optimistic: options.optimisticUpdate, resolve, reject });
      if (options.optimisticUpdate !== undefined) this.#recompute(new Set(), true);
      this.#pumpMutations();
      this.#schedulePersist();
    });
  }

  /** Sends what waits to be sent: mutations, then action calls, each up to the server's in-flight limit. */
  #pumpMutations(): void {
    if (!this.#isOpen() || this.#paused) return;
    const limit = this.#welcome?.limits?.maxInflightMutations ?? 32;
    for (const pending of this.#pending.values()) {
      if (this.#inflight >= limit) break;
      if (pending.sent || pending.result !== null) continue;
      pending.sent = true;
      this.#inflight += 1;
      this.#send({ mutate: pending.wire });
      this.stats.mutationsSent += 1;
    }
    for (const call of this.#calls.takeUnsent(this.#welcome?.limits?.maxInflightCalls ?? DEFAULT_MAX_INFLIGHT_CALLS)) {
      this.#send({ call });
    }
  }

  // ------------------------------------------------------------ actions

  /**
   * Calls an action (docs/actions.md): `client.action(api.inbox.confirm,
   * { actionId }, { idempotencyKey })`. Resolves with the action's result
   * once this client's view includes the backend's writes; rejects with a
   * {@link ProtosyncError} (`ACTION_DENIED`, `ACTION_FAILED`, … the server's
   * code). Sent once: if the connection drops before the answer it rejects
   * with `CALL_INTERRUPTED` (retry with the same idempotency key); a call made
   * while disconnected waits for the connection.
   */
  action<A, R>(ref: ActionRef<A, R>, args: A, options: ActionOptions = {}): Promise<R> {
    if (this.#state.status === "closed") return Promise.reject(new ProtosyncError("CLIENT_CLOSED", "the client is closed"));
    this.#nextRequest += 1;
    const wire: WireCall = { requestId: `c${String(this.#nextRequest).padStart(12, "0")}`, action: ref.name, args: args as JsonObject };
    if (options.idempotencyKey !== undefined) wire.idempotencyKey = options.idempotencyKey;
    return new Promise<R>((resolve, reject) => {
      this.#calls.add(wire, (result) => resolve(result as R), reject);
      this.#pumpMutations();
    });
  }

  #finish(pending: Pending, outcome: { result: WireMutationResult } | { error: ProtosyncError }): void {
    this.#pending.delete(pending.wire.requestId);
    if ("result" in outcome) {
      const r = outcome.result;
      pending.resolve({
        seq: r.seq ?? "0",
        results: (r.results ?? []).map((o) => ({ id: o.id, version: o.version ?? "0" })),
        duplicate: r.duplicate ?? false,
      });
    } else {
      pending.reject(outcome.error);
    }
  }

  // ------------------------------------------------------------ auth

  /**
   * Authenticates with tokens from `fetchToken`, now and on every reconnect;
   * refreshes before each token expires and when the server reports
   * `TOKEN_EXPIRED`, on the live connection, without dropping subscriptions.
   * `onChange(true)` after the server accepted a token, `(false)` when there is none.
   */
  setAuth(fetchToken: FetchToken, onChange?: (isAuthenticated: boolean) => void): void {
    this.#fetchToken = fetchToken;
    this.#onAuthChange = onChange;
    this.#authReady = this.#refreshToken(false);
  }

  /** Stops authenticating; the connection is re-made without a token. */
  clearAuth(): void {
    const hadToken = this.#token !== null || this.#helloToken !== null;
    this.#fetchToken = null;
    this.#onAuthChange = undefined;
    this.#token = null;
    this.#authReady = null;
    clearTimeout(this.#refreshTimer);
    // A connection cannot drop its identity: make a new one, without a token.
    if (hadToken && this.#socket !== null) this.#lost("auth cleared", 0);
  }

  async #refreshToken(forceRefresh: boolean): Promise<void> {
    const fetchToken = this.#fetchToken;
    if (fetchToken === null) return;
    let token: string | null | undefined = null;
    try {
      token = await fetchToken({ forceRefresh });
    } catch (e) {
      this.#reportError(new ProtosyncError("UNAUTHENTICATED", `fetchToken failed: ${String(e)}`));
    }
    if (fetchToken !== this.#fetchToken) return;
    if (token === null || token === undefined || token === "") {
      this.#token = null;
      this.#onAuthChange?.(false);
      return;
    }
    const changed = token !== this.#token;
    this.#token = token;
    if (this.#isOpen() && (changed || this.#paused)) {
      this.#send({ authenticate: { token } });
      this.stats.authenticatesSent += 1;
    }
  }

  #onAuthOk(expiresAt: string | undefined): void {
    this.#paused = false;
    this.#onAuthChange?.(true);
    clearTimeout(this.#refreshTimer);
    const lead = this.#options.tokenRefreshLeadMs ?? TOKEN_REFRESH_LEAD_MS;
    const expMs = Number(u64(expiresAt)) * 1000;
    if (expMs > 0 && lead > 0 && this.#fetchToken !== null) {
      const left = expMs - Date.now();
      const delay = Math.max(0, left - Math.min(lead, left / 2));
      this.#refreshTimer = setTimeout(() => void this.#refreshToken(true), delay);
    }
    this.#pumpMutations();
  }

  // ------------------------------------------------------------ socket

  #isClosed(): boolean {
    return this.#state.status === "closed";
  }

  #isOpen(): boolean {
    return this.#state.status === "open" && this.#socket !== null;
  }

  async #connect(): Promise<void> {
    if (this.#state.status === "closed") return;
    this.#dispatch({ type: "connect" });
    const generation = ++this.#generation;
    let Socket: WebSocketConstructor;
    try {
      Socket = this.#options.WebSocket ?? (await defaultWebSocket());
    } catch (e) {
      this.#dispatch({ type: "close", reason: String(e) });
      this.#reportError(new ProtosyncError("NETWORK_ERROR", String(e)));
      return;
    }
    // close() may have run while the constructor was loading.
    if (generation !== this.#generation || this.#isClosed()) return;
    let socket: WebSocketLike;
    try {
      socket = new Socket(this.url, JSON_SUBPROTOCOL) as WebSocketLike;
    } catch (e) {
      this.#lost(`cannot open a WebSocket: ${String(e)}`, 0);
      return;
    }
    this.#socket = socket;
    this.stats.connections += 1;
    this.#connectTimer = setTimeout(() => {
      if (generation === this.#generation) this.#lost("no welcome in time", 0);
    }, CONNECT_TIMEOUT_MS);
    socket.onopen = () => {
      void (async () => {
        if (this.#authReady !== null) await this.#authReady;
        if (generation === this.#generation) this.#sendHello();
      })();
    };
    socket.onmessage = (event) => {
      if (generation === this.#generation) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (generation === this.#generation) this.#onClose(event.code, event.reason);
    };
    socket.onerror = () => {
      // A close event follows; it decides what happens next.
    };
  }

  #send(message: ClientMessage): void {
    const socket = this.#socket;
    if (socket === null || socket.readyState !== WS_OPEN) return;
    socket.send(JSON.stringify(message));
    this.#options.onSend?.(message);
  }

  #sendHello(): void {
    const hello: WireHello = { protocolVersion: PROTOCOL_VERSION };
    if (this.#options.schemaFingerprint !== undefined) hello.schemaFingerprint = this.#options.schemaFingerprint;
    if (this.#token !== null) hello.token = this.#token;
    this.#helloToken = this.#token;
    const resumed: Entry[] = [];
    for (const entry of this.#entries.values()) {
      if (this.#view.subscriptions.has(entry.subscriptionId)) resumed.push(entry);
    }
    if (this.#view.watermark > 0n || resumed.length > 0) {
      hello.resume = {
        sessionId: this.#sessionId,
        watermark: String(this.#view.watermark),
        subscriptions: resumed.map((entry) => ({
          subscriptionId: entry.subscriptionId,
          ...entry.target,
          held: heldOf(this.#view.subscriptions.get(entry.subscriptionId) as SubscriptionView),
        })),
      };
    }
    for (const entry of resumed) entry.sentOn = this.#generation;
    this.#send({ hello });
  }

  #onFrame(data: unknown): void {
    this.#armLiveness();
    if (typeof data !== "string") {
      this.#protocolError("a binary frame on a JSON connection");
      return;
    }
    let message: ServerMessage;
    try {
      message = JSON.parse(data) as ServerMessage;
    } catch {
      this.#protocolError("a frame that is not JSON");
      return;
    }
    if (message.welcome !== undefined) this.#onWelcome(message.welcome);
    else if (message.transition !== undefined) this.#onTransitionChunk(message.transition);
    else if (message.mutationResult !== undefined) this.#onMutationResult(message.mutationResult);
    else if (message.callResult !== undefined) {
      this.#calls.answered(message.callResult, this.#view.watermark);
      this.#pumpMutations();
    }
    else if (message.error !== undefined) this.#onError(message.error);
    else if (message.authOk !== undefined) this.#onAuthOk(message.authOk.expiresAt);
    else if (message.heartbeat !== undefined) this.#headSeq = message.heartbeat.headSeq ?? this.#headSeq;
    // pong and members this client does not know: liveness only.
  }

  #onWelcome(welcome: WireWelcome): void {
    clearTimeout(this.#connectTimer);
    this.#welcome = welcome;
    this.#sessionId = welcome.sessionId ?? "";
    const watermark = u64(welcome.watermark);
    if (watermark !== this.#view.watermark) {
      // The server did not take our watermark: every resumed subscription is reset.
      this.#view = { watermark, subscriptions: this.#view.subscriptions };
    }
    this.#dispatch({ type: "welcome", sessionId: this.#sessionId });
    const idle = welcome.limits?.idleTimeoutMs;
    const ping = Math.min(PING_INTERVAL_MS, idle !== undefined && idle > 0 ? idle / 3 : PING_INTERVAL_MS);
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => this.#send({ ping: { nonce: "" } }), ping);
    for (const entry of this.#entries.values()) {
      if (entry.base.status !== "error") this.#subscribeEntry(entry);
    }
    if (this.#token !== null && this.#token !== this.#helloToken) {
      this.#send({ authenticate: { token: this.#token } });
      this.stats.authenticatesSent += 1;
    }
    this.#pumpMutations();
  }

  #armLiveness(): void {
    clearTimeout(this.#livenessTimer);
    const interval = this.#welcome?.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    const generation = this.#generation;
    this.#livenessTimer = setTimeout(() => {
      if (generation === this.#generation) this.#lost("no frame for two heartbeat intervals", 0);
    }, interval * DEAD_AFTER_HEARTBEATS + 1_000);
  }

  #onTransitionChunk(chunk: WireTransition): void {
    const chunks = chunk.chunks ?? 1;
    if (chunks <= 1) {
      this.#onTransition(chunk);
      return;
    }
    const index = chunk.chunk ?? 0;
    const first = this.#chunks[0];
    if (
      index !== this.#chunks.length ||
      (first !== undefined && (first.fromWatermark !== chunk.fromWatermark || first.toWatermark !== chunk.toWatermark))
    ) {
      this.#protocolError(`chunk ${index} of ${chunks} out of order`);
      return;
    }
    this.#chunks.push(chunk);
    if (this.#chunks.length < chunks) return;
    const whole: WireTransition = {
      fromWatermark: chunk.fromWatermark,
      toWatermark: chunk.toWatermark,
      updates: this.#chunks.flatMap((c) => c.updates ?? []),
    };
    this.#chunks = [];
    this.stats.chunkedTransitions += 1;
    this.#onTransition(whole);
  }

  #onTransition(transition: WireTransition): void {
    let applied: { view: View; touched: Set<string> };
    try {
      applied = applyTransition(this.#view, transition, (id) => this.#bySubscription.has(id));
    } catch (e) {
      if (e instanceof ProtocolViolation) {
        this.#protocolError(e.message);
        return;
      }
      throw e;
    }
    this.#view = applied.view;
    this.stats.transitionsApplied += 1;
    const changed = new Set<Entry>();
    for (const id of applied.touched) {
      const entry = this.#bySubscription.get(id);
      if (entry === undefined) continue;
      entry.base = { status: "ready", value: this.#resultOf(entry) };
      changed.add(entry);
    }
    // Read-your-writes: mutations whose commit the view now includes are done,
    // and their optimistic layers give way to the server's state in this same tick.
    const done: Pending[] = [];
    for (const pending of this.#pending.values()) {
      if (pending.result !== null && u64(pending.result.seq) <= this.#view.watermark) done.push(pending);
    }
    for (const pending of done) this.#pending.delete(pending.wire.requestId);
    this.#recompute(
      changed,
      done.some((p) => p.optimistic !== undefined),
    );
    for (const pending of done) this.#finish(pending, { result: pending.result as WireMutationResult });
    const watermark = this.#view.watermark;
    const reached = this.#watermarkWaiters.filter((w) => w.seq <= watermark);
    this.#watermarkWaiters = this.#watermarkWaiters.filter((w) => w.seq > watermark);
    for (const waiter of reached) waiter.resolve();
    this.#calls.reached(watermark);
    this.#schedulePersist();
  }

  #onMutationResult(result: WireMutationResult): void {
    const pending = this.#pending.get(result.requestId);
    if (pending === undefined || !pending.sent) return;
    this.#inflight = Math.max(0, this.#inflight - 1);
    if (u64(result.seq) <= this.#view.watermark) {
      this.#pending.delete(result.requestId);
      if (pending.optimistic !== undefined) this.#recompute(new Set(), true);
      this.#finish(pending, { result });
    } else {
      pending.result = result;
    }
    this.#pumpMutations();
    this.#schedulePersist();
  }

  #onError(error: WireError): void {
    const code = error.code;
    const problem = new ProtosyncError(code, error.message ?? "", { path: error.path });
    if (error.requestId && this.#calls.has(error.requestId)) {
      // A paused connection ran nothing: the call goes out again after the fresh token.
      if (PAUSE_CODES.has(code)) this.#paused = true;
      this.#calls.failed(error.requestId, problem, PAUSE_CODES.has(code));
      this.#pumpMutations();
      return;
    }
    if (error.requestId) {
      const pending = this.#pending.get(error.requestId);
      if (pending === undefined) return;
      this.#inflight = Math.max(0, this.#inflight - 1);
      if (PAUSE_CODES.has(code)) {
        // Nothing was written: send it again once a fresh token is accepted.
        pending.sent = false;
        this.#paused = true;
        return;
      }
      this.#pending.delete(error.requestId);
      if (pending.optimistic !== undefined) this.#recompute(new Set(), true);
      this.#finish(pending, { error: problem });
      this.#pumpMutations();
      this.#schedulePersist();
      return;
    }
    if (error.subscriptionId) {
      const entry = this.#bySubscription.get(error.subscriptionId);
      if (entry !== undefined && code !== "DUPLICATE_SUBSCRIPTION") {
        // The server holds no subscription under this id any more.
        this.#bySubscription.delete(entry.subscriptionId);
        this.#forgetView(entry.subscriptionId);
        entry.sentOn = -1;
        entry.base = { status: "error", error: problem };
        this.#recompute(new Set([entry]), false);
      }
      this.#reportError(problem);
      return;
    }
    if (!this.#isOpen()) {
      // Before the welcome: the hello was refused; the close that follows
      // (4003 for a token) decides what happens next.
    } else if (PAUSE_CODES.has(code)) {
      this.#paused = true;
      void this.#refreshToken(true);
    } else if (code.startsWith("TOKEN_")) {
      this.#onAuthChange?.(false);
    }
    if (code === "UPGRADE_REQUIRED") {
      this.#reportError(problem);
      this.close();
      return;
    }
    this.#reportError(problem);
  }

  #onClose(code: number, reason: string): void {
    if (code === 4010) {
      this.#reportError(new ProtosyncError("UPGRADE_REQUIRED", `the server closed the connection: ${reason}`));
      this.close();
      return;
    }
    if (code === 4003) {
      // The hello's token was refused: the same token would be refused again.
      this.#authReady = this.#refreshToken(true);
    }
    this.#lost(`closed ${code}${reason ? ` (${reason})` : ""}`, code);
  }

  #protocolError(message: string): void {
    this.#reportError(new ProtosyncError("PROTOCOL_ERROR", message));
    this.#lost(`protocol error: ${message}`, 0);
  }

  /** Abandons the socket and schedules the next attempt. */
  #lost(reason: string, _code: number): void {
    const socket = this.#socket;
    this.#socket = null;
    this.#generation += 1;
    this.#chunks = [];
    this.#inflight = 0;
    this.#welcome = null;
    // A pause belongs to a connection; the next hello carries the newest token.
    this.#paused = false;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#livenessTimer);
    clearTimeout(this.#connectTimer);
    for (const entry of this.#entries.values()) entry.sentOn = -1;
    for (const pending of this.#pending.values()) pending.sent = false;
    this.#calls.interrupted();
    if (socket !== null) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {
        // Closing a socket that never opened may throw; it is gone either way.
      }
    }
    if (this.#state.status === "closed") return;
    const attempt = this.#state.status === "connecting" ? this.#state.attempt : 0;
    const delay = backoffDelay(
      attempt,
      this.#options.initialBackoffMs ?? INITIAL_BACKOFF_MS,
      this.#options.maxBackoffMs ?? MAX_BACKOFF_MS,
    );
    this.#dispatch({ type: "lost", reason, retryInMs: delay });
    clearTimeout(this.#backoffTimer);
    this.#backoffTimer = setTimeout(() => void this.#connect(), delay);
  }

  /** Drops the connection as a network failure would; the client reconnects and resumes. */
  reconnect(): void {
    if (this.#socket !== null) this.#lost("reconnect requested", 0);
  }

  /** Closes the connection for good; pending mutations reject with `CLIENT_CLOSED`. */
  close(): void {
    if (this.#state.status === "closed") return;
    this.#dispatch({ type: "close", reason: "closed by the app" });
    const socket = this.#socket;
    this.#socket = null;
    this.#generation += 1;
    for (const timer of [this.#livenessTimer, this.#backoffTimer, this.#connectTimer, this.#refreshTimer]) clearTimeout(timer);
    clearInterval(this.#pingTimer);
    for (const entry of this.#entries.values()) clearTimeout(entry.graceTimer);
    if (socket !== null) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, "closed by the app");
      } catch {
        // Already gone.
      }
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(new ProtosyncError("CLIENT_CLOSED", "the client was closed before the mutation completed"));
    this.#calls.closeAll();
  }

  #reportError(error: ProtosyncError): void {
    this.#options.onError?.(error);
  }

  // ------------------------------------------------------------ optimistic layers and notification

  /**
   * Recomputes what the app sees and notifies, in one synchronous loop, every
   * watcher whose state changed, so all queries move together.
   */
  #recompute(changed: Set<Entry>, layersChanged: boolean): void {
    const layers = [...this.#pending.values()].filter((p) => p.optimistic !== undefined);
    if (layers.length === 0 && !layersChanged) {
      for (const entry of changed) entry.state = entry.base;
    } else {
      const local = new LocalStore(this.#entries);
      for (const layer of layers) {
        try {
          layer.optimistic?.(local);
        } catch (e) {
          this.#reportError(new ProtosyncError("INTERNAL", `an optimistic update threw: ${String(e)}`));
        }
      }
      for (const entry of this.#entries.values()) {
        const next = local.stateFor(entry);
        if (next !== entry.state) {
          entry.state = next;
          changed.add(entry);
        }
      }
    }
    const listeners: (() => void)[] = [];
    for (const entry of changed) listeners.push(...entry.listeners);
    for (const listener of listeners) listener();
  }

  // ------------------------------------------------------------ persistence

  async #restore(): Promise<void> {
    const cache = this.#options.persistedCache;
    if (cache === undefined) return;
    let state: PersistedState | null = null;
    try {
      state = await cache.load();
    } catch (e) {
      this.#reportError(new ProtosyncError("INTERNAL", `persistedCache.load failed: ${String(e)}`));
    }
    if (state === null || state.version !== 1) return;
    const subscriptions = new Map<string, SubscriptionView>();
    for (const saved of state.subscriptions) {
      const collection = "query" in saved.target ? saved.target.query.collection : saved.target.get.collection;
      // The app may have started watching before the load finished.
      const entry = this.#entries.get(saved.key) ?? this.#newEntry(saved.key, saved.target, collection);
      subscriptions.set(entry.subscriptionId, {
        docs: new Map(saved.documents.map((d) => [d.id, d])),
        order: saved.documents.map((d) => d.id),
      });
      if (entry.refs === 0) {
        entry.graceTimer = setTimeout(() => this.#dropEntry(entry), this.#options.unsubscribeGraceMs ?? UNSUBSCRIBE_GRACE_MS);
      }
    }
    this.#view = { watermark: u64(state.watermark), subscriptions };
    this.#sessionId = state.sessionId;
    const restored = new Set<Entry>();
    for (const entry of this.#entries.values()) {
      if (!subscriptions.has(entry.subscriptionId)) continue;
      entry.base = { status: "ready", value: this.#resultOf(entry) };
      restored.add(entry);
    }
    this.#recompute(restored, false);
    for (const saved of state.pendingMutations) {
      this.#nextRequest += 1;
      const requestId = `m${String(this.#nextRequest).padStart(12, "0")}`;
      const ignore = (): void => {};
      this.#pending.set(requestId, {
        wire: { requestId, idempotencyKey: saved.idempotencyKey, ops: [...saved.ops] },
        sent: false,
        result: null,
        optimistic: undefined,
        resolve: ignore,
        reject: ignore,
      });
    }
  }

  #schedulePersist(): void {
    const cache = this.#options.persistedCache;
    if (cache === undefined || this.#persistScheduled) return;
    this.#persistScheduled = true;
    queueMicrotask(() => {
      this.#persistScheduled = false;
      const state: PersistedState = {
        version: 1,
        watermark: String(this.#view.watermark),
        sessionId: this.#sessionId,
        subscriptions: [...this.#entries.values()].flatMap((entry) => {
          const sub = this.#view.subscriptions.get(entry.subscriptionId);
          if (sub === undefined) return [];
          return [{ key: entry.key, target: entry.target, documents: sub.order.map((id) => sub.docs.get(id) as WireDocument) }];
        }),
        pendingMutations: [...this.#pending.values()]
          .filter((p) => p.result === null)
          .map((p) => ({ requestId: p.wire.requestId, idempotencyKey: p.wire.idempotencyKey, ops: p.wire.ops })),
      };
      void Promise.resolve()
        .then(() => cache.save(state))
        .catch((e: unknown) => this.#reportError(new ProtosyncError("INTERNAL", `persistedCache.save failed: ${String(e)}`)));
    });
  }
}

/** The optimistic layers' working copy of every watched query's result. */
class LocalStore implements OptimisticLocalStore {
  readonly #entries: ReadonlyMap<string, Entry>;
  readonly #values = new Map<Entry, Result>();

  constructor(entries: ReadonlyMap<string, Entry>) {
    this.#entries = entries;
  }

  #current(entry: Entry): Result | undefined {
    if (this.#values.has(entry)) return this.#values.get(entry);
    return entry.base.status === "ready" ? entry.base.value : undefined;
  }

  getQuery<Q extends AnyQuery>(query: Q): ResultOf<Q> | undefined {
    const entry = this.#entries.get(query.key);
    return entry === undefined ? undefined : (this.#current(entry) as ResultOf<Q> | undefined);
  }

  setQuery<Q extends AnyQuery>(query: Q, result: ResultOf<Q>): void {
    const entry = this.#entries.get(query.key);
    if (entry !== undefined) this.#values.set(entry, result as Result);
  }

  patchDocument<T extends CollectionTypes>(collection: { readonly name: T["name"] }, id: string, fields: Partial<T["doc"]>): void {
    this.#eachHolding(collection.name, id, (doc) => {
      const body: JsonObject = { ...doc.doc };
      for (const [key, value] of Object.entries(fields as object)) {
        if (value === null || value === undefined) delete body[key];
        else body[key] = value as JsonObject[string];
      }
      return { ...doc, doc: body };
    });
  }

  deleteDocument(collection: { readonly name: string }, id: string): void {
    this.#eachHolding(collection.name, id, () => null);
  }

  #eachHolding(collection: string, id: string, change: (doc: Document<JsonObject>) => Document<JsonObject> | null): void {
    for (const entry of this.#entries.values()) {
      if (entry.collection !== collection) continue;
      const current = this.#current(entry);
      if (current === undefined || current === null) continue;
      if (Array.isArray(current)) {
        const docs = current as readonly Document<JsonObject>[];
        if (!docs.some((d) => d.id === id)) continue;
        const next: Document<JsonObject>[] = [];
        for (const d of docs) {
          if (d.id !== id) next.push(d);
          else {
            const changed = change(d);
            if (changed !== null) next.push(changed);
          }
        }
        this.#values.set(entry, next);
      } else {
        const doc = current as Document<JsonObject>;
        if (doc.id === id) this.#values.set(entry, change(doc));
      }
    }
  }

  /** The state to show for `entry`: its server state, unless a layer changed it. */
  stateFor(entry: Entry): QueryState<Result> {
    if (!this.#values.has(entry)) return entry.base;
    return { status: "ready", value: this.#values.get(entry) as Result };
  }
}

/** The status of a paginated query, in the words Convex users know. */
export type PaginationStatus = "LoadingFirstPage" | "CanLoadMore" | "LoadingMore" | "Exhausted";

/** What a paginated query shows. Replaced, never mutated. */
export interface PaginatedSnapshot<D> {
  readonly results: readonly Document<D>[];
  readonly status: PaginationStatus;
  /** Set when the server refused the query. */
  readonly error: ProtosyncError | undefined;
}

/**
 * A query whose window grows by `loadMore(n)`, live across all pages: one
 * subscription to the first `n` results; each `loadMore` replaces it with a
 * larger window (the old one shows until the new one's first result). A
 * window holds at most {@link MAX_QUERY_LIMIT} documents.
 */
export class PaginatedQuery<T extends CollectionTypes> {
  readonly #client: ProtosyncClient;
  readonly #query: Query<T>;
  #size: number;
  #pendingSize: number | null = null;
  readonly #listeners = new Set<() => void>();
  #stopCurrent: (() => void) | null = null;
  #stopNext: (() => void) | null = null;
  #snapshot: PaginatedSnapshot<T["doc"]> = { results: [], status: "LoadingFirstPage", error: undefined };

  constructor(client: ProtosyncClient, query: Query<T>, initialNumItems: number) {
    this.#client = client;
    this.#query = query;
    this.#size = Math.min(Math.max(1, Math.floor(initialNumItems)), MAX_QUERY_LIMIT);
  }

  /** Starts watching (on the first listener); returns the function that stops it. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    if (this.#stopCurrent === null) {
      this.#stopCurrent = this.#client.watch(this.#window(this.#size), () => this.#update());
      if (this.#pendingSize !== null) this.#stopNext = this.#client.watch(this.#window(this.#pendingSize), () => this.#update());
      this.#update();
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) {
        this.#stopCurrent?.();
        this.#stopNext?.();
        this.#stopCurrent = this.#stopNext = null;
      }
    };
  }

  /** What it shows now. */
  getSnapshot(): PaginatedSnapshot<T["doc"]> {
    return this.#snapshot;
  }

  /** Asks for `n` more results. Returns false when there is nothing to load (or the window is at its limit). */
  loadMore(n: number): boolean {
    if (this.#snapshot.status !== "CanLoadMore") return false;
    const size = Math.min(this.#size + Math.max(1, Math.floor(n)), MAX_QUERY_LIMIT);
    if (size === this.#size) return false;
    this.#pendingSize = size;
    if (this.#stopCurrent !== null) this.#stopNext = this.#client.watch(this.#window(size), () => this.#update());
    this.#update();
    return true;
  }

  #window(size: number): Query<T> {
    return this.#query.limit(size);
  }

  #update(): void {
    if (this.#pendingSize !== null) {
      const next = this.#client.getQueryState(this.#window(this.#pendingSize));
      if (next.status !== "loading") {
        // The larger window has arrived: it replaces the smaller one.
        this.#stopCurrent?.();
        this.#stopCurrent = this.#stopNext;
        this.#stopNext = null;
        this.#size = this.#pendingSize;
        this.#pendingSize = null;
      }
    }
    const state = this.#client.getQueryState(this.#window(this.#size));
    let next: PaginatedSnapshot<T["doc"]>;
    if (state.status === "loading") next = { results: [], status: "LoadingFirstPage", error: undefined };
    else if (state.status === "error") next = { results: [], status: "Exhausted", error: state.error };
    else {
      const results = state.value;
      const status: PaginationStatus =
        this.#pendingSize !== null ? "LoadingMore" : results.length < this.#size || this.#size >= MAX_QUERY_LIMIT ? "Exhausted" : "CanLoadMore";
      next = { results, status, error: undefined };
    }
    const previous = this.#snapshot;
    if (previous.results === next.results && previous.status === next.status && previous.error === next.error) return;
    this.#snapshot = next;
    for (const listener of [...this.#listeners]) listener();
  }
}
