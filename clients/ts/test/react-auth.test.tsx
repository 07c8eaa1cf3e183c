/** `<ProtosyncProvider fetchToken>` against `protosync serve` with an HS256 provider. */

import { nodeFetch } from "./support/dom.js";

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { act, type ReactNode, StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { WebSocket } from "ws";

import { ProtosyncClient } from "protosync";
import { ProtosyncProvider, useQuery } from "protosync/react";
import { mutate } from "protosync/server";

import { api } from "./generated/api.js";
import { mintToken, SERVICE_KEY, TestServer } from "./support/server.js";
import { until } from "./support/wait.js";

let server: TestServer;

before(async () => {
  server = await TestServer.start({ auth: true });
});

after(async () => {
  await server.stop();
});

test("ProtosyncProvider authenticates with fetchToken once, however often it re-renders", async () => {
  const client = new ProtosyncClient(server.url, { WebSocket });
  await mutate(
    [api.workItems.upsert("pa1", { ownerId: "ann", title: "ann's" }), api.workItems.upsert("pb1", { ownerId: "bob", title: "bob's" })],
    { url: server.url, token: SERVICE_KEY, fetch: nodeFetch },
  );
  const statuses: boolean[] = [];
  function Titles(): ReactNode {
    const items = useQuery(api.workItems.filter("ownerId", "in", ["ann", "bob"]));
    return <p>{items?.map((d) => d.doc.title).join(",")}</p>;
  }
  const app = (): ReactNode => (
    <StrictMode>
      <ProtosyncProvider
        client={client}
        // A new function on every render, as apps write it.
        fetchToken={async () => mintToken("ann", 120)}
        onAuthChange={(ok) => statuses.push(ok)}
      >
        <Titles />
      </ProtosyncProvider>
    </StrictMode>
  );
  const container = document.createElement("div");
  const root = createRoot(container);
  await act(async () => root.render(app()));
  const q = api.workItems.filter("ownerId", "in", ["ann", "bob"]);
  await act(async () => {
    await until(client, q, (d) => d.length === 1, "ann's document (rules hide bob's)");
  });
  assert.equal(container.textContent, "ann's");
  const authenticated = client.stats.authenticatesSent;
  for (let i = 2; i < 6; i += 1) await act(async () => root.render(app()));
  assert.equal(client.stats.authenticatesSent, authenticated, "re-renders do not re-authenticate");
  assert.equal(client.stats.connections, 1);
  assert.ok(statuses.includes(true));
  await act(async () => root.unmount());
  client.close();
});
