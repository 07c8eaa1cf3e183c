/** Waiting on events with a timeout: the tests' only way to synchronise. */

import type { AnyQuery, ConnectionStatus, ProtosyncClient, QueryState, ResultOf } from "protosync";

/** How long any one wait may take before the test fails, in ms. */
export const WAIT_MS = 15_000;

/** Resolves with `promise`, or fails after `ms` naming `what`. */
export function within<T>(promise: Promise<T>, what: string, ms: number = WAIT_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Watches `query` until its state satisfies `predicate`; resolves with that state's value. */
export function until<Q extends AnyQuery>(
  client: ProtosyncClient,
  query: Q,
  predicate: (value: ResultOf<Q>) => boolean,
  what: string,
): Promise<ResultOf<Q>> {
  let stop: (() => void) | undefined;
  const waiting = new Promise<ResultOf<Q>>((resolve, reject) => {
    const check = (state: QueryState<ResultOf<Q>>): void => {
      if (state.status === "error") reject(state.error);
      else if (state.status === "ready" && predicate(state.value)) resolve(state.value);
    };
    stop = client.subscribe(query, check);
  });
  return within(waiting, what).finally(() => stop?.());
}

/** Resolves when the client's connection reaches `status`. */
export function untilStatus(client: ProtosyncClient, status: ConnectionStatus, what = `connection ${status}`): Promise<void> {
  if (client.connectionState.status === status) return Promise.resolve();
  let stop: (() => void) | undefined;
  const waiting = new Promise<void>((resolve) => {
    stop = client.onConnectionStateChange((state) => {
      if (state.status === status) resolve();
    });
  });
  return within(waiting, what).finally(() => stop?.());
}

/** A small seeded PRNG (mulberry32), so randomized tests can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of a randomized test: `PROTOSYNC_TEST_SEED` or a fresh one, printed either way. */
export function testSeed(name: string): number {
  const fromEnv = process.env.PROTOSYNC_TEST_SEED;
  const seed = fromEnv !== undefined ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${name}: seed ${seed} (replay with PROTOSYNC_TEST_SEED=${seed})`);
  return seed;
}
