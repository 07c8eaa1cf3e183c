/** The TanStack Query adapter, rendered into happy-dom against a real `protosync dev`. */

import { closeDom, nodeFetch } from "./support/dom.js";

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { QueryClient, QueryClientProvider, useMutation, useQuery } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { createRoot } from "react-dom/client";
import { WebSocket } from "ws";

import { ProtosyncClient } from "protosync";
import { mutate } from "protosync/server";
import { ProtosyncQueryClient, protosyncMutationFn, protosyncQuery, protosyncQueryKey } from "protosync/tanstack";

import { api } from "./generated/api.js";
import { TestServer } from "./support/server.js";
import { within } from "./support/wait.js";

let server: TestServer;

// TanStack renders from its own scheduler, outside act(): wait on the DOM instead.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;

/** Resolves when `container`'s text satisfies `predicate` (a MutationObserver, not a poll). */
function untilText(container: HTMLElement, predicate: (text: string) => boolean, what: string): Promise<void> {
  let observer: MutationObserver | undefined;
  const waiting = new Promise<void>((resolve) => {
    observer = new MutationObserver(() => {
      if (predicate(container.textContent ?? "")) resolve();
    });
    observer.observe(container, { childList: true, subtree: true, characterData: true });
    if (predicate(container.textContent ?? "")) resolve();
  });
  return within(waiting, what).finally(() => observer?.disconnect());
}

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  await server.stop();
  await closeDom();
});

test("useQuery(protosyncQuery(…)) gets pushes via setQueryData and releases the subscription when TanStack collects the query", async () => {
  let onUnsubscribe: (() => void) | undefined;
  const unsubscribed = new Promise<void>((resolve) => (onUnsubscribe = resolve));
  const client = new ProtosyncClient(server.url, {
    WebSocket,
    unsubscribeGraceMs: 20,
    onSend: (m) => {
      if ("unsubscribe" in m) onUnsubscribe?.();
    },
  });
  const queryClient = new QueryClient({ defaultOptions: { queries: { gcTime: 50 } } });
  const live = new ProtosyncQueryClient(client);
  const disconnect = live.connect(queryClient);
  const items = api.workItems.where({ ownerId: "tess" }).orderBy("priority", "desc");
  await mutate(api.workItems.upsert("k1", { ownerId: "tess", title: "one", priority: 1 }), { url: server.url, fetch: nodeFetch });

  let remove: ((id: string) => Promise<unknown>) | undefined;
  function List(): ReactNode {
    const { data } = useQuery(protosyncQuery(items));
    const { mutateAsync } = useMutation({ mutationFn: protosyncMutationFn(client, (id: string) => api.workItems.delete(id)) });
    remove = mutateAsync;
    return <ul>{data?.map((d) => <li key={d.id}>{d.doc.title}</li>)}</ul>;
  }
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  root.render(
    <QueryClientProvider client={queryClient}>
      <List />
    </QueryClientProvider>,
  );
  await untilText(container, (t) => t === "one", "the first result");

  await mutate(api.workItems.upsert("k2", { ownerId: "tess", title: "two", priority: 2 }), { url: server.url, fetch: nodeFetch });
  await untilText(container, (t) => t === "twoone", "the pushed insert");
  const cached = queryClient.getQueryState(protosyncQueryKey(items));
  assert.equal(cached?.dataUpdateCount, 2, "one fetch, then one push; no refetch");
  assert.equal(protosyncQuery(items).staleTime, Number.POSITIVE_INFINITY);

  await remove?.("k1");
  const view = client.getQueryState(items);
  assert.ok(view.status === "ready" && view.value.length === 1, "the mutation resolved after the view included it");
  await untilText(container, (t) => t === "two", "the delete pushed to TanStack");

  assert.equal(live.liveQueries, 1);
  root.unmount();
  await within(unsubscribed, "the unsubscribe after TanStack's gcTime");
  assert.equal(live.liveQueries, 0);
  assert.equal(client.stats.subscribesSent, 1);
  disconnect();
  client.close();
});
