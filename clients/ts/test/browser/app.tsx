/**
 * The README's live list, as a browser runs it (native WebSocket, no ws).
 * The server's URL comes from the page's `?server=` parameter.
 */

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { ProtosyncClient } from "protosync";
import { ProtosyncProvider, useConnectionState, useMutation, useQuery } from "protosync/react";

import { api, schemaFingerprint } from "../generated/api.js";

function App() {
  const items = useQuery(api.workItems.byOwnerFeed({ ownerId: "ann", important: true }).orderBy("priority", "desc").limit(20));
  const dismiss = useMutation((id: string) => api.workItems.patch(id, { important: false }));
  const connection = useConnectionState();
  if (items === undefined) return <p>Loading… ({connection.status})</p>;
  return (
    <main>
      <h1>Important ({connection.status})</h1>
      <ul>
        {items.map((item) => (
          <li key={item.id}>
            {item.doc.title} (priority {item.doc.priority}) <button onClick={() => void dismiss(item.id)}>Dismiss</button>
          </li>
        ))}
      </ul>
    </main>
  );
}

const server = new URLSearchParams(location.search).get("server") ?? "http://127.0.0.1:4000";
const client = new ProtosyncClient(server, { schemaFingerprint, initialBackoffMs: 50, maxBackoffMs: 500 });
const root = document.getElementById("root");
if (root !== null) {
  createRoot(root).render(
    <StrictMode>
      <ProtosyncProvider client={client}>
        <App />
      </ProtosyncProvider>
    </StrictMode>,
  );
}
