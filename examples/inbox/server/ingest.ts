/**
 * Ingestion: new messages from each user's (fake) Gmail mailbox become work
 * items, each with the agent's proposal and the first turn of its command
 * conversation, written through protosync's HTTP API with the backend's API
 * key. Idempotent by message id: a message's documents are keyed by it and
 * written in one insert-only mutation, so running twice, or after a crash
 * between the write and the cursor update, adds nothing.
 */
import { ProtosyncError } from "protosync";
import type { ProtosyncHttpClient } from "protosync/server";

import { api } from "../web/src/protosync/api.js";
import { draftReply, snippet, triage } from "./agent.js";
import type { GmailMessage } from "./fake-gmail.js";

/** Mailboxes read per run: enough for the demo; past it, a run pages through them. */
export const MAILBOXES_PER_PAGE = 200;

/** The ids a message's documents get. */
export const ids = {
  workItem: (messageId: string) => `gmail-${messageId}`,
  action: (messageId: string) => `action-${messageId}`,
  turn: (actionId: string, n: number | string) => `${actionId}-turn-${n}`,
};

export interface IngestDeps {
  readonly protosync: ProtosyncHttpClient;
  readonly gmailUrl: string;
}

/** One ingestion run over every mailbox; returns how many messages were new. */
export async function ingestAll({ protosync, gmailUrl }: IngestDeps): Promise<number> {
  let added = 0;
  let query = api.mailboxes.all().limit(MAILBOXES_PER_PAGE);
  for (;;) {
    const page = await protosync.fetchQueryPage(query);
    for (const mailbox of page.documents) {
      const response = await fetch(`${gmailUrl}/gmail/v1/users/${encodeURIComponent(mailbox.doc.email)}/messages?afterHistoryId=${mailbox.doc.historyId}`);
      if (!response.ok) throw new Error(`gmail list for ${mailbox.doc.email}: HTTP ${response.status}`);
      const { messages } = (await response.json()) as { messages: GmailMessage[] };
      for (const message of messages) {
        if (await ingestMessage(protosync, mailbox.doc.ownerId, message)) added += 1;
      }
      const last = messages.at(-1);
      if (last !== undefined) {
        // expectedVersion: an overlapping run that got further wins.
        await protosync
          .mutate(api.mailboxes.patch(mailbox.id, { historyId: String(last.historyId) }, { expectedVersion: mailbox.version }))
          .catch((e: unknown) => {
            if (!(e instanceof ProtosyncError && e.code === "VERSION_CONFLICT")) throw e;
          });
      }
    }
    if (page.nextCursor === undefined) return added;
    query = query.after(page.nextCursor);
  }
}

/** Writes one message's documents; false when they were there already. */
async function ingestMessage(protosync: ProtosyncHttpClient, ownerId: string, message: GmailMessage): Promise<boolean> {
  const verdict = triage(message);
  const actionId = ids.action(message.id);
  const preview = verdict.kind === "KIND_SEND_EMAIL" ? draftReply(message, []) : `${verdict.title}: "${message.subject}" from ${message.from.name}.`;
  try {
    await protosync.mutate(
      [
        api.workItems.insert(ids.workItem(message.id), {
          ownerId,
          gmailMessageId: message.id,
          subject: message.subject,
          snippet: snippet(message.body),
          sender: message.from,
          important: verdict.important,
          priority: verdict.priority,
          receivedAt: message.receivedAt,
          state: "STATE_NEEDS_REVIEW",
        }),
        api.proposedActions.insert(actionId, {
          ownerId,
          workItemId: ids.workItem(message.id),
          kind: verdict.kind,
          status: "STATUS_PREVIEW",
          title: verdict.title,
          preview,
          replyTo: message.from.email,
          replySubject: `Re: ${message.subject}`,
          updatedAt: message.receivedAt,
        }),
        api.commandTurns.insert(ids.turn(actionId, 0), { ownerId, actionId, role: "ROLE_AGENT", text: preview, at: message.receivedAt }),
      ],
      { idempotencyKey: `ingest-${message.id}` },
    );
    return true;
  } catch (e) {
    if (e instanceof ProtosyncError && e.code === "ALREADY_EXISTS") return false;
    throw e;
  }
}
