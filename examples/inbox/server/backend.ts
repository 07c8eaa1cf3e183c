/**
 * The app's backend: the code with side effects, which the engine never runs
 * itself. It writes through protosync's HTTP API with its API key. For now it
 * runs the ingestion on its own clock, every `ingestEveryMs`: the stand-in
 * for a protosync schedule until those land (issue 14), and what replaces the
 * client-triggered `queue.sync` of the tRPC app either way.
 */
import { ProtosyncHttpClient } from "protosync/server";

import { ingestAll } from "./ingest.js";

export interface BackendOptions {
  readonly protosyncUrl: string;
  readonly apiKey: string;
  readonly gmailUrl: string;
  /** How often ingestion runs, in ms. */
  readonly ingestEveryMs: number;
  readonly log: (line: string) => void;
}

export interface Backend {
  /** Runs one ingestion now (after the one in flight, if any); resolves with how many messages were new. */
  ingestNow(): Promise<number>;
  close(): void;
}

export function startBackend(options: BackendOptions): Backend {
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
  const timer = setInterval(() => {
    // protosync may be down (restarts); the next tick tries again.
    ingestNow().catch((e: unknown) => options.log(`ingestion failed, retrying next tick: ${String(e)}`));
  }, options.ingestEveryMs);
  return { ingestNow, close: () => clearInterval(timer) };
}
