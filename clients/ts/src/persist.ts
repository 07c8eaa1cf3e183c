/**
 * A hook point for keeping the view and pending mutations across app
 * restarts (a later offline mode stores them in IndexedDB or SQLite). The
 * client saves after every change it applies and loads once at start: a
 * restored view shows at once and resumes with a diff; restored mutations are
 * resent with their idempotency keys, so each is applied once.
 *
 * @module
 */

import type { WireDocument, WireOperation, WireTarget } from "./wire.js";

/** One persisted subscription: what it is on and what it held. */
export interface PersistedSubscription {
  readonly key: string;
  readonly target: WireTarget;
  /** The documents in query order. */
  readonly documents: readonly WireDocument[];
}

/** One mutation that had not completed. */
export interface PersistedMutation {
  readonly requestId: string;
  readonly idempotencyKey: string;
  readonly ops: readonly WireOperation[];
}

/** Everything the client needs to resume where it stopped. */
export interface PersistedState {
  readonly version: 1;
  readonly watermark: string;
  readonly sessionId: string;
  readonly subscriptions: readonly PersistedSubscription[];
  readonly pendingMutations: readonly PersistedMutation[];
}

/** Where the client keeps its state. Both methods may be sync or async. */
export interface PersistedCache {
  load(): PersistedState | null | Promise<PersistedState | null>;
  save(state: PersistedState): void | Promise<void>;
}

/** Keeps the state in memory: for tests, and as the reference implementation. */
export class MemoryPersistedCache implements PersistedCache {
  #state: PersistedState | null = null;
  /** How many times `save` was called. */
  saves = 0;

  load(): PersistedState | null {
    return this.#state === null ? null : structuredClone(this.#state);
  }

  save(state: PersistedState): void {
    this.saves += 1;
    this.#state = structuredClone(state);
  }

  /** The last saved state (a copy), or `null`. */
  get current(): PersistedState | null {
    return this.load();
  }
}
