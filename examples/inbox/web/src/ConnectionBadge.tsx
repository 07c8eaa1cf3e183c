import { useConnectionState } from "protosync/react";

/** Says nothing while the connection is open; a small badge otherwise. */
export function ConnectionBadge() {
  const state = useConnectionState();
  if (state.status === "open") return <span className="badge live" title="Live">Live</span>;
  const label = state.status === "reconnecting" ? "Reconnecting…" : state.status === "connecting" ? "Connecting…" : "Offline";
  return (
    <span className="badge warn" role="status">
      {label}
    </span>
  );
}
