/**
 * The app's backend: the code with side effects, which the engine never runs
 * itself. It serves the actions protosync forwards (server/actions.ts) and
 * writes through protosync's HTTP API with its API key.
 *
 * Ingestion is the `Ingest` action, which protosync calls on the schedule
 * declared on its rpc (every 2 s), each tick once across all nodes with the
 * tick as the idempotency key (docs/actions.md, "Schedules"). It replaces
 * the client-triggered `queue.sync` of the tRPC app and a separate cron.
 */
import { ProtosyncHttpClient } from "protosync/server";

import { startActionServer } from "./actions.js";
import { ingestAll } from "./ingest.js";

export interface BackendOptions {
  /** The actions' port (0: a free one). */
  readonly port: number;
  /** The secret protosync signs forwarded action calls with. */
  readonly secret: string;
  readonly protosyncUrl: string;
  readonly apiKey: string;
  readonly gmailUrl: string;
  readonly log: (line: string) => void;
}

export interface Backend {
  /** The actions' base URL, for protosync's `[backends.inbox]`. */
  readonly url: string;
  /** Runs one ingestion now (after the one in flight, if any); resolves with how many messages were new. */
  ingestNow(): Promise<number>;
  close(): Promise<void>;
}

export async function startBackend(options: BackendOptions): Promise<Backend> {
  const protosync = new ProtosyncHttpClient({ url: options.protosyncUrl, token: options.apiKey });
  // One run at a time: a slow run is never overlapped by the next tick.
  let running: Promise<number> = Promise.resolve(0);
  const ingestNow = (): Promise<number> => {
    running = running
      .catch(() => 0)
      .then(() => ingestAll({ protosync, gmailUrl: options.gmailUrl }))
      .then((added) => {
        if (added > 0) options.log(`ingested ${added} new message(s)`);
        return added;
      });
    return running;
  };
  const actions = await startActionServer({ port: options.port, secret: options.secret, protosync, gmailUrl: options.gmailUrl, ingest: ingestNow });
  return {
    url: actions.url,
    ingestNow,
    close: () => actions.close(),
  };
}
