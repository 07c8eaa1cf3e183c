/**
 * React bindings: a provider and hooks over {@link ProtosyncClient}. Every
 * hook reads through `useSyncExternalStore`, so all components move to a new
 * transition in the same render, and StrictMode's double mount only bumps a
 * reference count (the subscription survives the grace period).
 *
 * @module
 */

import {
  createContext,
  createElement,
  type ReactNode,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
} from "react";

import {
  type AnyQuery,
  type CollectionTypes,
  type ConnectionState,
  type Document,
  type FetchToken,
  type MutateOptions,
  type MutationResult,
  type ActionOptions,
  type ActionRef,
  type Operation,
  type OptimisticLocalStore,
  type PaginationStatus,
  ProtosyncClient,
  type Query,
  type QueryState,
  type ResultOf,
} from "../index.js";

const ClientContext = createContext<ProtosyncClient | null>(null);

/** Props of {@link ProtosyncProvider}. */
export interface ProtosyncProviderProps {
  readonly client: ProtosyncClient;
  /**
   * Authenticate with tokens from your auth (Convex's `ConvexProviderWithAuth`):
   * called now, before each token expires and on `TOKEN_EXPIRED`.
   */
  readonly fetchToken?: FetchToken;
  /** Told whether the server accepted a token. */
  readonly onAuthChange?: (isAuthenticated: boolean) => void;
  readonly children?: ReactNode;
}

/** Makes `client` available to the hooks below it. */
export function ProtosyncProvider(props: ProtosyncProviderProps): ReactNode {
  const { client, fetchToken, onAuthChange } = props;
  // The latest callbacks, so an inline `fetchToken` does not re-authenticate on every render.
  const latestFetch = useRef(fetchToken);
  const latestChange = useRef(onAuthChange);
  latestFetch.current = fetchToken;
  latestChange.current = onAuthChange;
  const withAuth = fetchToken !== undefined;
  useEffect(() => {
    if (!withAuth) return;
    client.setAuth(
      (options) => latestFetch.current?.(options) ?? Promise.resolve(null),
      (isAuthenticated) => latestChange.current?.(isAuthenticated),
    );
    return () => client.clearAuth();
  }, [client, withAuth]);
  return createElement(ClientContext.Provider, { value: client }, props.children);
}

/** The client of the nearest {@link ProtosyncProvider}. */
export function useProtosyncClient(): ProtosyncClient {
  const client = useContext(ClientContext);
  if (client === null) throw new Error("useProtosyncClient: no <ProtosyncProvider> above this component");
  return client;
}

const NO_SUBSCRIPTION = (): (() => void) => () => {};
const SKIPPED: QueryState<never> = { status: "loading" };

/**
 * The full state of a live query: `loading`, `ready` with the value, or
 * `error`. Pass `"skip"` (or `null`) to watch nothing.
 */
export function useQueryState<Q extends AnyQuery>(query: Q | "skip" | null): QueryState<ResultOf<Q>> {
  const client = useProtosyncClient();
  const live = query === "skip" || query === null ? null : query;
  const key = live?.key ?? null;
  // Builders make a new object per render; the key says whether it is the same query.
  const ref = useRef(live);
  if (ref.current?.key !== key) ref.current = live;
  const stable = ref.current;
  const subscribe = useCallback(
    (onChange: () => void) => (stable === null ? NO_SUBSCRIPTION() : client.watch(stable, onChange)),
    [client, stable],
  );
  const getSnapshot = useCallback(
    () => (stable === null ? SKIPPED : client.getQueryState(stable)),
    [client, stable],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot) as QueryState<ResultOf<Q>>;
}

/**
 * A live query's result: the documents (or, for a get, the document or
 * `null`), `undefined` while loading or skipped. Throws the server's
 * {@link ProtosyncError} if it refused the query (use an error boundary).
 *
 * `useQuery(api.workItems.byOwnerFeed({ ownerId }).limit(20))`, or with a
 * query function and its args: `useQuery(importantItems, { ownerId })`.
 */
export function useQuery<Q extends AnyQuery>(query: Q | "skip" | null): ResultOf<Q> | undefined;
export function useQuery<A, Q extends AnyQuery>(query: (args: A) => Q, args: A | "skip"): ResultOf<Q> | undefined;
export function useQuery<A, Q extends AnyQuery>(
  query: Q | ((args: A) => Q) | "skip" | null,
  args?: A | "skip",
): ResultOf<Q> | undefined {
  let target: Q | null = null;
  if (typeof query === "function") target = args === "skip" ? null : query(args as A);
  else if (query !== "skip") target = query;
  const state = useQueryState(target);
  if (state.status === "error") throw state.error;
  return state.status === "ready" ? state.value : undefined;
}

/** A mutation function with an optional optimistic update attached. */
export interface ReactMutation<A> {
  (args: A): Promise<MutationResult>;
  /** The same mutation, showing `update` at once (undone exactly if the server refuses it). */
  withOptimisticUpdate(update: (local: OptimisticLocalStore, args: A) => void): ReactMutation<A>;
}

/**
 * A stable function that runs a mutation. With `makeOps`, it takes your args
 * (`useMutation((id: string) => api.workItems.patch(id, { important: false }))`);
 * without, it takes operations.
 */
export function useMutation(): ReactMutation<Operation | readonly Operation[]>;
export function useMutation<A>(makeOps: (args: A) => Operation | readonly Operation[]): ReactMutation<A>;
export function useMutation<A>(makeOps?: (args: A) => Operation | readonly Operation[]): ReactMutation<A> {
  const client = useProtosyncClient();
  const latest = useRef(makeOps);
  latest.current = makeOps;
  return useMemo(() => {
    const build = (update?: (local: OptimisticLocalStore, args: A) => void): ReactMutation<A> => {
      const run = (args: A): Promise<MutationResult> => {
        const ops = latest.current === undefined ? (args as Operation | readonly Operation[]) : latest.current(args);
        const options: MutateOptions = update === undefined ? {} : { optimisticUpdate: (local) => update(local, args) };
        return client.mutate(ops, options);
      };
      return Object.assign(run, { withOptimisticUpdate: build });
    };
    return build();
  }, [client]);
}

/** What {@link usePaginatedQuery} returns (Convex's shape). */
export interface UsePaginatedQueryResult<D> {
  readonly results: readonly Document<D>[];
  readonly status: PaginationStatus;
  readonly isLoading: boolean;
  /** Asks for `n` more; does nothing unless `status` is `CanLoadMore`. */
  readonly loadMore: (n: number) => void;
}

/** A live query that grows by `loadMore(n)`. `"skip"` watches nothing. */
export function usePaginatedQuery<T extends CollectionTypes>(
  query: Query<T> | "skip",
  options: { readonly initialNumItems: number },
): UsePaginatedQueryResult<T["doc"]> {
  const client = useProtosyncClient();
  const key = query === "skip" ? null : query.key;
  const paginated = useMemo(
    () => (query === "skip" ? null : client.paginate(query, options)),
    // The query is identified by its key; a new builder object per render is the same query.
    [client, key, options.initialNumItems],
  );
  const subscribe = useCallback((onChange: () => void) => (paginated === null ? () => {} : paginated.subscribe(onChange)), [paginated]);
  const getSnapshot = useCallback(() => paginated?.getSnapshot() ?? null, [paginated]);
  const snapshot = useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
  const loadMore = useCallback((n: number) => void paginated?.loadMore(n), [paginated]);
  if (snapshot?.error !== undefined) throw snapshot.error;
  const status = snapshot?.status ?? "LoadingFirstPage";
  return {
    results: snapshot?.results ?? [],
    status,
    isLoading: status === "LoadingFirstPage" || status === "LoadingMore",
    loadMore,
  };
}

/**
 * A stable function that calls an action (Convex's `useAction`):
 * `const confirm = useAction(api.inbox.confirm); await confirm({ actionId }, { idempotencyKey })`.
 * Resolves once the view includes the backend's writes; see `client.action`.
 */
export function useAction<A, R>(ref: ActionRef<A, R>): (args: A, options?: ActionOptions) => Promise<R> {
  const client = useProtosyncClient();
  // A ref is identified by its name: a new ref object per render is the same action.
  const latest = useRef(ref);
  latest.current = ref;
  return useCallback((args: A, options?: ActionOptions) => client.action(latest.current, args, options), [client, ref.name]);
}

/** The connection's state (`connecting`, `open`, `reconnecting`, `closed`), live. */
export function useConnectionState(): ConnectionState {
  const client = useProtosyncClient();
  const subscribe = useCallback((onChange: () => void) => client.onConnectionStateChange(onChange), [client]);
  const getSnapshot = useCallback(() => client.connectionState, [client]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}
