/**
 * A TanStack Query (v5) adapter: keep `useQuery(...)` and get live pushes
 * into the QueryClient's cache instead of invalidation and refetch.
 *
 * ```ts
 * const live = new ProtosyncQueryClient(client);
 * live.connect(queryClient);
 * const { data } = useQuery(protosyncQuery(api.workItems.byOwnerFeed({ ownerId }).limit(20)));
 * const { mutate } = useMutation({ mutationFn: protosyncMutationFn(client, (id: string) => api.workItems.delete(id)) });
 * ```
 *
 * Each protosync query in the cache holds one live subscription; every
 * transition is written with `setQueryData`. The subscription is released
 * when TanStack garbage-collects the query (`gcTime` after its last observer).
 *
 * @module
 */

import type { QueryClient, QueryFunctionContext } from "@tanstack/react-query";

import { type AnyQuery, type MutateOptions, type MutationResult, type Operation, type ProtosyncClient, type ResultOf } from "../index.js";

/** The first element of every protosync query key. */
export const QUERY_KEY_PREFIX = "protosync";

/** A protosync query's TanStack key: the prefix and the query's cache key. */
export type ProtosyncQueryKey = readonly [typeof QUERY_KEY_PREFIX, string];

const adapters = new WeakMap<QueryClient, ProtosyncQueryClient>();

interface Live {
  readonly stop: () => void;
  first: Promise<unknown>;
  started: boolean;
}

/** Connects a {@link ProtosyncClient} to TanStack QueryClients. */
export class ProtosyncQueryClient {
  readonly client: ProtosyncClient;
  readonly #live = new Map<string, Live>();
  #queryClient: QueryClient | null = null;

  constructor(client: ProtosyncClient) {
    this.client = client;
  }

  /** Serves `queryClient`'s protosync queries from now on; returns the function that disconnects. */
  connect(queryClient: QueryClient): () => void {
    this.#queryClient = queryClient;
    adapters.set(queryClient, this);
    const stopCache = queryClient.getQueryCache().subscribe((event) => {
      if (event.type !== "removed") return;
      const key = event.query.queryKey;
      if (key[0] === QUERY_KEY_PREFIX && typeof key[1] === "string") this.#release(key[1]);
    });
    return () => {
      stopCache();
      adapters.delete(queryClient);
      for (const key of [...this.#live.keys()]) this.#release(key);
      this.#queryClient = null;
    };
  }

  /** How many protosync queries hold a live subscription now. */
  get liveQueries(): number {
    return this.#live.size;
  }

  /** The `queryFn` of a protosync query: its first result, then pushes. */
  fetch<Q extends AnyQuery>(query: Q): Promise<ResultOf<Q>> {
    const key = query.key;
    let live = this.#live.get(key);
    if (live === undefined) {
      let settle: { resolve: (v: unknown) => void; reject: (e: unknown) => void } | undefined;
      const first = new Promise<unknown>((resolve, reject) => (settle = { resolve, reject }));
      const entry: Live = {
        stop: () => {},
        first,
        started: false,
      };
      const onChange = (): void => {
        const state = this.client.getQueryState(query);
        if (state.status === "loading") return;
        if (!entry.started) {
          entry.started = true;
          if (state.status === "ready") settle?.resolve(state.value);
          else settle?.reject(state.error);
          return;
        }
        if (state.status === "ready") this.#queryClient?.setQueryData(protosyncQueryKey(query), state.value);
        else entry.first = Promise.reject(state.error);
      };
      const stop = this.client.watch(query, onChange);
      live = Object.assign(entry, { stop });
      this.#live.set(key, live);
      onChange();
    }
    const current = this.client.getQueryState(query);
    if (current.status === "ready") return Promise.resolve(current.value);
    return live.first as Promise<ResultOf<Q>>;
  }

  #release(key: string): void {
    const live = this.#live.get(key);
    if (live === undefined) return;
    this.#live.delete(key);
    live.stop();
  }
}

/** The TanStack key of a protosync query. */
export function protosyncQueryKey(query: AnyQuery): ProtosyncQueryKey {
  return [QUERY_KEY_PREFIX, query.key];
}

/** Options for TanStack's `useQuery` / `useSuspenseQuery` / `prefetchQuery`. */
export interface ProtosyncQueryOptions<Q extends AnyQuery> {
  readonly queryKey: ProtosyncQueryKey;
  readonly queryFn: (context: QueryFunctionContext<ProtosyncQueryKey>) => Promise<ResultOf<Q>>;
  /** Pushed data is never stale: it is replaced by the next transition. */
  readonly staleTime: number;
  readonly refetchOnWindowFocus: false;
  readonly refetchOnReconnect: false;
  readonly retry: false;
}

/**
 * `useQuery(protosyncQuery(query))`: the query's live result in TanStack's
 * cache. The QueryClient must be connected ({@link ProtosyncQueryClient.connect}).
 */
export function protosyncQuery<Q extends AnyQuery>(query: Q): ProtosyncQueryOptions<Q> {
  return {
    queryKey: protosyncQueryKey(query),
    queryFn: (context) => {
      const adapter = adapters.get(context.client);
      if (adapter === undefined) {
        return Promise.reject(new Error("protosyncQuery: call new ProtosyncQueryClient(client).connect(queryClient) first"));
      }
      return adapter.fetch(query);
    },
    staleTime: Number.POSITIVE_INFINITY,
    refetchOnWindowFocus: false,
    refetchOnReconnect: false,
    retry: false,
  };
}

/**
 * A `mutationFn` for TanStack's `useMutation`: builds operations from the
 * variables and resolves when the client's view includes the commit.
 */
export function protosyncMutationFn<A>(
  client: ProtosyncClient,
  makeOps: (variables: A) => Operation | readonly Operation[],
  options?: (variables: A) => MutateOptions,
): (variables: A) => Promise<MutationResult> {
  return (variables) => client.mutate(makeOps(variables), options?.(variables));
}
