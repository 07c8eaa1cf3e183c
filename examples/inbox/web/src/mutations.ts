// approve / dismiss / feedback: the mutations of the tRPC app's `actions.*`
// procedures, each one atomic commit, each shown at once (optimistic) and
// undone exactly if the server refuses it.
import type { Document } from "protosync";
import { useMutation } from "protosync/react";

import { api, type FeedbackEntry, type FeedbackEntry_Rating, type ProposedAction, type WorkItem } from "./protosync/api";
import { feedbackFor } from "./queries";

interface Target {
  readonly item: Document<WorkItem>;
  readonly action: Document<ProposedAction>;
}

export function useApprove() {
  return useMutation(({ item, action }: Target) => [
    api.proposedActions.patch(action.id, { status: "STATUS_APPROVED" }),
    api.workItems.patch(item.id, { state: "STATE_APPROVED" }),
  ]).withOptimisticUpdate((local, { item, action }) => {
    local.patchDocument(api.proposedActions, action.id, { status: "STATUS_APPROVED" });
    local.patchDocument(api.workItems, item.id, { state: "STATE_APPROVED" });
  });
}

/** Dismissing takes the item out of the Important feed. */
export function useDismiss() {
  return useMutation(({ item, action }: Target) => [
    api.proposedActions.patch(action.id, { status: "STATUS_DISMISSED" }),
    api.workItems.patch(item.id, { state: "STATE_DISMISSED", important: false }),
  ]).withOptimisticUpdate((local, { item, action }) => {
    local.patchDocument(api.proposedActions, action.id, { status: "STATUS_DISMISSED" });
    local.patchDocument(api.workItems, item.id, { state: "STATE_DISMISSED", important: false });
  });
}

export function useFeedback() {
  return useMutation(({ id, entry }: { id: string; entry: FeedbackEntry }) => api.feedbackEntries.insert(id, entry)).withOptimisticUpdate(
    (local, { id, entry }) => {
      const query = feedbackFor(entry.workItemId);
      const current = local.getQuery(query);
      if (current !== undefined) local.setQuery(query, [...current, { id, version: "1", seq: "0", doc: entry }]);
    },
  );
}

/** A new feedback entry's document. */
export function feedbackEntry(ownerId: string, target: Target, rating: FeedbackEntry_Rating): { id: string; entry: FeedbackEntry } {
  return {
    id: crypto.randomUUID(),
    entry: { ownerId, workItemId: target.item.id, actionId: target.action.id, rating, comment: "", createdAt: new Date().toISOString() },
  };
}
