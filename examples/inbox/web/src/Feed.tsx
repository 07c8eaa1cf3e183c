import { usePaginatedQuery } from "protosync/react";

import type { WorkItem } from "./protosync/api";
import { FEED_PAGE_SIZE, importantFeed } from "./queries";

const STATE_LABEL: Record<WorkItem["state"], string | null> = {
  STATE_UNSPECIFIED: null,
  STATE_NEEDS_REVIEW: null,
  STATE_APPROVED: "Approved",
  STATE_DISMISSED: "Dismissed",
  STATE_DONE: "Sent",
};

/** The Important feed: highest priority first, live, a page at a time. */
export function Feed({ ownerId, selected, onSelect }: { ownerId: string; selected: string | null; onSelect: (id: string) => void }) {
  const { results, status, loadMore } = usePaginatedQuery(importantFeed(ownerId), { initialNumItems: FEED_PAGE_SIZE });
  // An optimistic dismiss patches `important` before the server's transition removes the item.
  const items = results.filter((item) => item.doc.important);
  return (
    <section className="feed" aria-label="Important">
      <div className="feed-head">
        <h1>Important</h1>
        <span className="count" data-testid="feed-count">
          {status === "LoadingFirstPage" ? "" : `${items.length}${status === "Exhausted" ? "" : "+"} ${items.length === 1 ? "item" : "items"}`}
        </span>
      </div>
      {status === "LoadingFirstPage" && <p className="muted pad">Loading your feed…</p>}
      {status !== "LoadingFirstPage" && items.length === 0 && <p className="muted pad">You're all caught up.</p>}
      <ul className="feed-list">
        {items.map((item) => (
          <li key={item.id}>
            <button className={`feed-item${item.id === selected ? " selected" : ""}`} data-testid="feed-item" onClick={() => onSelect(item.id)}>
              <div className="row">
                <span className="sender">{item.doc.sender?.name}</span>
                <span className={`priority p${Math.min(item.doc.priority, 9)}`}>P{item.doc.priority}</span>
              </div>
              <div className="subject">{item.doc.subject}</div>
              <div className="row">
                <span className="snippet">{item.doc.snippet}</span>
                {STATE_LABEL[item.doc.state] !== null && <span className={`state ${item.doc.state.toLowerCase()}`}>{STATE_LABEL[item.doc.state]}</span>}
              </div>
            </button>
          </li>
        ))}
      </ul>
      {(status === "CanLoadMore" || status === "LoadingMore") && (
        <button className="load-more" disabled={status === "LoadingMore"} onClick={() => loadMore(FEED_PAGE_SIZE)}>
          {status === "LoadingMore" ? "Loading…" : "Show more"}
        </button>
      )}
    </section>
  );
}
