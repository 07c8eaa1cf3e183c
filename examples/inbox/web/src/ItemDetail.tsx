import { useQuery } from "protosync/react";

import { Command } from "./Command";
import { feedbackEntry, useApprove, useDismiss, useFeedback } from "./mutations";
import type { ProposedAction } from "./protosync/api";
import { api } from "./protosync/api";
import { conversationOf, feedbackFor, proposalsFor } from "./queries";

const STATUS_LABEL: Record<ProposedAction["status"], string> = {
  STATUS_UNSPECIFIED: "",
  STATUS_PREVIEW: "Awaiting your review",
  STATUS_RESPONDED: "Revised",
  STATUS_CONFIRMED: "Confirmed",
  STATUS_APPROVED: "Approved",
  STATUS_DISMISSED: "Dismissed",
  STATUS_FAILED: "Failed",
  STATUS_SENDING: "Sending…",
};

/** One work item: the message, the agent's proposal, its conversation, and what the user can do. */
export function ItemDetail({ itemId, ownerId, onClose }: { itemId: string; ownerId: string; onClose: () => void }) {
  const item = useQuery(api.workItems.get(itemId));
  const proposals = useQuery(proposalsFor(itemId));
  const feedback = useQuery(feedbackFor(itemId));
  const approve = useApprove();
  const dismiss = useDismiss();
  const sendFeedback = useFeedback();

  if (item === undefined || proposals === undefined) return <section className="detail muted pad">Loading…</section>;
  if (item === null) return <section className="detail empty">This item is no longer in your inbox.</section>;
  const action = proposals[0];
  const open = action !== undefined && (action.doc.status === "STATUS_PREVIEW" || action.doc.status === "STATUS_RESPONDED");
  const rated = feedback?.at(-1)?.doc.rating;

  return (
    <section className="detail" data-testid="detail">
      <div className="detail-head">
        <div>
          <h2>{item.doc.subject}</h2>
          <p className="muted">
            {item.doc.sender?.name} &lt;{item.doc.sender?.email}&gt; · {new Date(item.doc.receivedAt ?? "").toLocaleString()}
          </p>
        </div>
        <button className="link" onClick={onClose} aria-label="Close">
          ✕
        </button>
      </div>
      <p className="message">{item.doc.snippet}</p>

      {action !== undefined && (
        <div className="card proposal" data-testid="proposal">
          <div className="row">
            <h3>{action.doc.title}</h3>
            <span className={`status ${action.doc.status.toLowerCase()}`} data-testid="proposal-status">
              {STATUS_LABEL[action.doc.status]}
            </span>
          </div>
          <Conversation actionId={action.id} />
          {open && action.doc.kind === "KIND_SEND_EMAIL" && (
            <Command
              action={action}
              onDismiss={() => {
                onClose();
                void dismiss({ item, action });
              }}
            />
          )}
          <div className="actions">
            {open && action.doc.kind !== "KIND_SEND_EMAIL" && (
              <>
                <button className="primary" onClick={() => void approve({ item, action })}>
                  Approve
                </button>
                <button
                  onClick={() => {
                    onClose();
                    void dismiss({ item, action });
                  }}
                >
                  Dismiss
                </button>
              </>
            )}
            <span className="spacer" />
            {rated === undefined ? (
              <>
                <span className="muted small">Was this useful?</span>
                <button className="ghost" onClick={() => void sendFeedback(feedbackEntry(ownerId, { item, action }, "RATING_HELPFUL"))}>
                  Helpful
                </button>
                <button className="ghost" onClick={() => void sendFeedback(feedbackEntry(ownerId, { item, action }, "RATING_NOT_HELPFUL"))}>
                  Not helpful
                </button>
              </>
            ) : (
              <span className="muted small" data-testid="feedback-given">
                Thanks — you rated this {rated === "RATING_HELPFUL" ? "helpful" : "not helpful"}.
              </span>
            )}
          </div>
        </div>
      )}
    </section>
  );
}

/** The command conversation: the agent's preview and every turn since. */
function Conversation({ actionId }: { actionId: string }) {
  const turns = useQuery(conversationOf(actionId));
  if (turns === undefined) return null;
  return (
    <ol className="conversation" data-testid="conversation">
      {turns.map((turn) => (
        <li key={turn.id} className={turn.doc.role === "ROLE_USER" ? "turn user" : "turn agent"}>
          <span className="who-label">{turn.doc.role === "ROLE_USER" ? "You" : "Agent"}</span>
          <div className="bubble">{turn.doc.text}</div>
        </li>
      ))}
    </ol>
  );
}
