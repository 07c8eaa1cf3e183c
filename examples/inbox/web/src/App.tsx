import { useEffect, useState } from "react";
import { ProtosyncClient } from "protosync";
import { ProtosyncProvider } from "protosync/react";

import { authClient, fetchToken } from "./auth";
import { ConnectionBadge } from "./ConnectionBadge";
import { Feed } from "./Feed";
import { ItemDetail } from "./ItemDetail";
import { schemaFingerprint } from "./protosync/api";
import { SignIn } from "./SignIn";

export function App() {
  const session = authClient.useSession();
  if (session.isPending) return <div className="splash">Loading…</div>;
  if (session.data === null) return <SignIn />;
  return <Workspace key={session.data.user.id} userId={session.data.user.id} email={session.data.user.email} name={session.data.user.name} />;
}

/** One live protosync client per signed-in user, closed when they sign out. */
function Workspace({ userId, email, name }: { userId: string; email: string; name: string }) {
  // Made in an effect, not during render: StrictMode's extra unmount then
  // closes a client nobody uses, never the one on screen.
  const [client, setClient] = useState<ProtosyncClient | null>(null);
  useEffect(() => {
    const made = new ProtosyncClient(__PROTOSYNC_URL__, { schemaFingerprint });
    setClient(made);
    return () => made.close();
  }, []);
  const [selected, setSelected] = useSelection();
  if (client === null) return null;
  return (
    <ProtosyncProvider client={client} fetchToken={fetchToken}>
      <div className="shell">
        <header className="topbar">
          <div className="brand">
            <span className="logo">◆</span> Inbox
          </div>
          <div className="topbar-right">
            <ConnectionBadge />
            <span className="who" title={email}>
              {name}
            </span>
            <button className="link" onClick={() => void authClient.signOut()}>
              Sign out
            </button>
          </div>
        </header>
        <main className="panes">
          <Feed ownerId={userId} selected={selected} onSelect={setSelected} />
          {selected === null ? (
            <section className="detail empty">Select an item to see what the agent proposes.</section>
          ) : (
            <ItemDetail key={selected} itemId={selected} ownerId={userId} onClose={() => setSelected(null)} />
          )}
        </main>
      </div>
    </ProtosyncProvider>
  );
}

/** The open item, kept in the URL's hash so a reload shows it again. */
function useSelection(): [string | null, (id: string | null) => void] {
  const read = () => (window.location.hash.startsWith("#item=") ? decodeURIComponent(window.location.hash.slice(6)) : null);
  const [selected, setSelected] = useState(read);
  useEffect(() => {
    const onHash = () => setSelected(read());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  return [
    selected,
    (id) => {
      window.location.hash = id === null ? "" : `item=${encodeURIComponent(id)}`;
      setSelected(id);
    },
  ];
}
