// The queries the app holds live, named once so optimistic updates and
// components use the very same ones.
import { api } from "./protosync/api";

/** Items per page of the Important feed. */
export const FEED_PAGE_SIZE = 8;

export const importantFeed = (ownerId: string) =>
  api.workItems.byOwnerFeed({ ownerId, important: true }).orderBy("priority", "desc");
export const proposalsFor = (workItemId: string) => api.proposedActions.byWorkItem({ workItemId });
export const conversationOf = (actionId: string) => api.commandTurns.byAction({ actionId }).orderBy("at", "asc");
export const feedbackFor = (workItemId: string) => api.feedbackEntries.byWorkItem({ workItemId }).orderBy("createdAt", "asc");
