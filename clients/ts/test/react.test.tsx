/** The React hooks, rendered into happy-dom against a real `protosync dev`. */

import { nodeFetch } from "./support/dom.js";

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { act, StrictMode, type ReactNode, version as reactVersion } from "react";
import { createRoot, type Root } from "react-dom/client";

import { type AnyQuery, ProtosyncClient, type ResultOf } from "protosync";
import {
  ProtosyncProvider,
  useConnectionState,
  useMutation,
  usePaginatedQuery,
  useQuery,
} from "protosync/react";
import { mutate as httpMutate } from "protosync/server";
import { WebSocket } from "ws";

import { api } from "./generated/api.js";
import { TestServer } from "./support/server.js";
import { until, within } from "./support/wait.js";

let server: TestServer;
const clients: ProtosyncClient[] = [];

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  for (const c of clients) c.close();
  await server.stop();
});

test("runs on the React version under test", () => {
  // scripts/run-tests.mjs runs this file again against React 18.
  const expected = process.env.PROTOSYNC_EXPECT_REACT ?? "19";
  assert.ok(reactVersion.startsWith(`${expected}.`), `React ${reactVersion}, expected ${expected}`);
});

interface Sent {
  client: ProtosyncClient;
  unsubscribed: Promise<void>;
}

function client(options: ConstructorParameters<typeof ProtosyncClient>[1] = {}): Sent {
  let onUnsubscribe: (() => void) | undefined;
  const unsubscribed = new Promise<void>((resolve) => (onUnsubscribe = resolve));
  const c = new ProtosyncClient(server.url, {
    // ws, not happy-dom's WebSocket: Node is the runtime under test here.
    WebSocket,
    unsubscribeGraceMs: 100,
    ...options,
    onSend: (m) => {
      if ("unsubscribe" in m) onUnsubscribe?.();
    },
  });
  clients.push(c);
  return { client: c, unsubscribed };
}

async function render(c: ProtosyncClient, node: ReactNode): Promise<{ root: Root; container: HTMLElement }> {
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  await act(async () => {
    root.render(<ProtosyncProvider client={c}>{node}</ProtosyncProvider>);
  });
  return { root, container };
}

/** Waits until the client's state for `query` satisfies `predicate`, then lets React render it. */
async function settle<Q extends AnyQuery>(c: ProtosyncClient, query: Q, predicate: (v: ResultOf<Q>) => boolean, what: string): Promise<void> {
  // Inside act, so the renders the socket's updates cause are flushed by it.
  await act(async () => {
    await until(c, query, predicate, what);
  });
}

function Items(props: { ownerId: string }): ReactNode {
  const items = useQuery(api.workItems.where({ ownerId: props.ownerId }).orderBy("priority", "desc"));
  if (items === undefined) return <p>loading</p>;
  return (
    <ul>
      {items.map((item) => (
        <li key={item.id}>{item.doc.title}</li>
      ))}
    </ul>
  );
}

test("useQuery shows a live list; StrictMode's double mount leaks no subscription", async () => {
  const { client: c, unsubscribed } = client();
  await httpMutate(api.workItems.upsert("r1", { ownerId: "rita", title: "first", priority: 1 }), { url: server.url, fetch: nodeFetch });
  const { root, container } = await render(
    c,
    <StrictMode>
      <Items ownerId="rita" />
    </StrictMode>,
  );
  const q = api.workItems.where({ ownerId: "rita" }).orderBy("priority", "desc");
  await settle(c, q, (d) => d.length === 1, "the first result");
  assert.equal(container.textContent, "first");
  await httpMutate(api.workItems.upsert("r2", { ownerId: "rita", title: "second", priority: 2 }), { url: server.url, fetch: nodeFetch });
  await settle(c, q, (d) => d.length === 2, "the live insert");
  assert.deepEqual(
    [...container.querySelectorAll("li")].map((li) => li.textContent),
    ["second", "first"],
  );
  assert.equal(c.stats.subscribesSent, 1, "StrictMode mounted twice, one subscription");
  await act(async () => root.unmount());
  await within(unsubscribed, "the unsubscribe after unmount");
  assert.equal(c.stats.unsubscribesSent, 1);
  assert.equal(c.getQueryState(q).status, "loading", "nothing held after unmount");
});

test("two hooks fed by one transition render together (no torn state)", async () => {
  const { client: c } = client();
  await httpMutate(api.workItems.upsert("t1", { ownerId: "tom", title: "v0" }), { url: server.url, fetch: nodeFetch });
  const renders: [string | undefined, string | undefined][] = [];
  function Both(): ReactNode {
    const list = useQuery(api.workItems.where({ ownerId: "tom" }));
    const one = useQuery(api.workItems.get("t1"));
    renders.push([list?.[0]?.doc.title, one === undefined ? undefined : (one?.doc.title ?? "gone")]);
    return null;
  }
  const { root } = await render(c, <Both />);
  await settle(c, api.workItems.get("t1"), (d) => d !== null, "the document");
  for (let i = 1; i <= 5; i += 1) {
    // One act per write: each transition gets its own render.
    await act(async () => {
      await c.mutate(api.workItems.patch("t1", { title: `v${i}` }));
    });
  }
  await settle(c, api.workItems.get("t1"), (d) => d?.doc.title === "v5", "the last write");
  const loaded = renders.filter(([a, b]) => a !== undefined && b !== undefined);
  assert.ok(loaded.length >= 6, `${loaded.length} renders with data`);
  for (const [a, b] of loaded) assert.equal(a, b, `a render showed ${a} and ${b}`);
  assert.deepEqual(loaded.at(-1), ["v5", "v5"]);
  await act(async () => root.unmount());
});

test("useQuery with 'skip' subscribes to nothing; a query function takes its args", async () => {
  const { client: c } = client();
  const byOwner = (args: { ownerId: string }) => api.workItems.where({ ownerId: args.ownerId });
  const seen: unknown[] = [];
  function Skipping(props: { owner: string | null }): ReactNode {
    const items = useQuery(byOwner, props.owner === null ? "skip" : { ownerId: props.owner });
    seen.push(items);
    return <span>{items === undefined ? "none" : items.length}</span>;
  }
  const { root, container } = await render(c, <Skipping owner={null} />);
  assert.equal(container.textContent, "none");
  assert.equal(c.stats.subscribesSent, 0);
  await act(async () => root.render(<ProtosyncProvider client={c}><Skipping owner="nobody" /></ProtosyncProvider>));
  await settle(c, byOwner({ ownerId: "nobody" }), () => true, "the result");
  assert.equal(container.textContent, "0");
  await act(async () => root.unmount());
});

test("useMutation with an optimistic update, usePaginatedQuery and useConnectionState", async () => {
  const { client: c } = client();
  await httpMutate(
    Array.from({ length: 5 }, (_, i) => api.workItems.upsert(`p${i}`, { ownerId: "pia", title: `p${i}`, priority: i })),
    { url: server.url, fetch: nodeFetch },
  );
  let loadMore: ((n: number) => void) | undefined;
  let rename: ((id: string) => Promise<unknown>) | undefined;
  let status = "";
  let connection = "";
  function Pages(): ReactNode {
    const pages = usePaginatedQuery(api.workItems.where({ ownerId: "pia" }).orderBy("priority"), { initialNumItems: 2 });
    const renameIt = useMutation((id: string) => api.workItems.patch(id, { title: "renamed" })).withOptimisticUpdate((local, id) =>
      local.patchDocument(api.workItems, id, { title: "renamed (saving)" }),
    );
    connection = useConnectionState().status;
    loadMore = pages.loadMore;
    rename = renameIt;
    status = pages.status;
    return <ol>{pages.results.map((d) => <li key={d.id}>{d.doc.title}</li>)}</ol>;
  }
  const { root, container } = await render(c, <Pages />);
  const window = (n: number) => api.workItems.where({ ownerId: "pia" }).orderBy("priority").limit(n);
  await settle(c, window(2), (d) => d.length === 2, "the first page");
  assert.equal(status, "CanLoadMore");
  assert.equal(connection, "open");
  assert.equal(container.textContent, "p0p1");
  await act(async () => loadMore?.(2));
  await settle(c, window(4), (d) => d.length === 4, "the second page");
  assert.equal(container.textContent, "p0p1p2p3");
  let saving: Promise<unknown> | undefined;
  // A synchronous act renders the optimistic state before any answer can arrive.
  act(() => {
    saving = rename?.("p1");
  });
  assert.equal(container.querySelectorAll("li")[1]?.textContent, "renamed (saving)");
  await act(async () => {
    await saving;
  });
  assert.equal(container.querySelectorAll("li")[1]?.textContent, "renamed");
  await act(async () => loadMore?.(10));
  await settle(c, window(14), (d) => d.length === 5, "the last page");
  assert.equal(status, "Exhausted");
  await act(async () => root.unmount());
});
