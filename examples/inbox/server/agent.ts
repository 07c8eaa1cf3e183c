/**
 * The fake agent: deterministic triage and drafting, standing where an LLM
 * would. Same message (and the same follow-ups) in, same words out, so tests
 * can assert on the text.
 */
import type { ProposedAction_Kind } from "../web/src/protosync/api.js";
import type { GmailMessage } from "./fake-gmail.js";

/** What the agent makes of one message. */
export interface Triage {
  /** 0 to 10; higher is more urgent. */
  readonly priority: number;
  readonly important: boolean;
  readonly kind: ProposedAction_Kind;
  /** One line: what it proposes. */
  readonly title: string;
}

/** Messages at or above this priority go to the Important feed. */
export const IMPORTANT_PRIORITY = 4;

/** Keyword → priority, first match wins. */
const PRIORITY_RULES: readonly (readonly [RegExp, number])[] = [
  [/\b(urgent|asap|today|outage)\b/i, 9],
  [/\b(contract|invoice|offer|deadline)\b/i, 7],
  [/\b(meeting|invite|call|review)\b/i, 5],
  [/\b(newsletter|digest|sale|unsubscribe)\b/i, 1],
];
const DEFAULT_PRIORITY = 4;

export function triage(message: Pick<GmailMessage, "subject" | "body">): Triage {
  const text = `${message.subject}\n${message.body}`;
  const priority = PRIORITY_RULES.find(([pattern]) => pattern.test(text))?.[1] ?? DEFAULT_PRIORITY;
  if (/\b(newsletter|digest|sale|unsubscribe)\b/i.test(text)) {
    return { priority, important: priority >= IMPORTANT_PRIORITY, kind: "KIND_ARCHIVE", title: "Archive it" };
  }
  if (/\b(meeting|invite|call)\b/i.test(text)) {
    return { priority, important: priority >= IMPORTANT_PRIORITY, kind: "KIND_CREATE_EVENT", title: "Add it to your calendar" };
  }
  return { priority, important: priority >= IMPORTANT_PRIORITY, kind: "KIND_SEND_EMAIL", title: "Reply by email" };
}

/**
 * The reply the agent drafts to `message`, revised by each of the user's
 * follow-ups in order (`respond`).
 */
export function draftReply(message: Pick<GmailMessage, "from" | "subject">, followUps: readonly string[]): string {
  const firstName = message.from.name.split(" ")[0] || message.from.email;
  const lines = [`Hi ${firstName},`, "", `Thanks for your note about "${message.subject}". I'm on it and will get back to you shortly.`];
  for (const followUp of followUps) lines.push("", `${followUp.trim().replace(/\.?$/, ".")}`);
  lines.push("", "Best regards");
  return lines.join("\n");
}

/** The first line of a body, shortened, for the feed. */
export function snippet(body: string): string {
  const line = body.trim().split("\n")[0] ?? "";
  return line.length > 140 ? `${line.slice(0, 139)}…` : line;
}
