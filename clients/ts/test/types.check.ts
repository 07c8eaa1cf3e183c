/**
 * Type-level tests: compiled by `tsc --strict` with the rest of the tests.
 * Each `@ts-expect-error` line must fail to compile; if one compiled, tsc
 * would report the directive as unused and the build would fail.
 */

import type { Document, ResultOf } from "protosync";

import { api, type RunSummary, type WorkItem, type WorkItemInput } from "./generated/api.js";
import type { Everything, EverythingInput } from "./generated/kitchen/api.js";

// Field names and values are checked in filters, orders and index prefixes.
api.workItems.where({ ownerId: "ann", important: true });
// @ts-expect-error: no such field
api.workItems.where({ owner: "ann" });
// @ts-expect-error: important is a bool
api.workItems.where({ important: "yes" });
api.workItems.filter("priority", ">=", 3).filter("sender.email", "==", "bob@example.com");
// @ts-expect-error: priority is an int32
api.workItems.filter("priority", ">=", "3");
// @ts-expect-error: labels is repeated: not comparable
api.workItems.filter("labels", "==", "x");
api.workItems.filter("source", "in", ["SOURCE_GMAIL", "SOURCE_SLACK"]);
// @ts-expect-error: not a value of the enum
api.workItems.filter("source", "==", "SOURCE_FAX");
api.workItems.orderBy("receivedAt", "desc");
// @ts-expect-error: no such field
api.workItems.orderBy("received", "desc");
// @ts-expect-error: direction is asc or desc
api.workItems.orderBy("priority", "down");
api.workItems.byOwnerFeed({ ownerId: "ann", important: true, priority: 3 });
// @ts-expect-error: an index prefix starts with its first field
api.workItems.byOwnerFeed({ important: true });
// @ts-expect-error: not a field of the index
api.workItems.byOwnerFeed({ ownerId: "ann", title: "x" });
// 64-bit integers: strings from the server, strings or numbers in filters.
api.runSummary.filter("eventCount", ">", 10).filter("eventCount", "<", "1000");

// Writes take the input type.
api.workItems.insert("w1", { ownerId: "ann", priority: 2, sender: { email: "bob@example.com" } });
// @ts-expect-error: no such field
api.workItems.insert("w1", { ownerID: "ann" });
// @ts-expect-error: priority is a number
api.workItems.patch("w1", { priority: "high" });
api.workItems.patch("w1", { receivedAt: null });
api.proposedActions.upsert("a1", { status: "STATUS_CONFIRMED", resultRef: "msg-1" });
// @ts-expect-error: not a status
api.proposedActions.upsert("a1", { status: "STATUS_DONE" });

// Results have the read type: defaults present, messages and optional fields maybe absent.
declare const items: ResultOf<ReturnType<typeof api.workItems.all>>;
const first: Document<WorkItem> | undefined = items[0];
const title: string | undefined = first?.doc.title;
// @ts-expect-error: sender may be absent
const email: string = first?.doc.sender.email;
declare const one: ResultOf<ReturnType<typeof api.runSummary.get>>;
const count: string | undefined = one?.doc.eventCount;
// @ts-expect-error: int64 reads as a string
const countNumber: number | undefined = one?.doc.eventCount;
const labels: { [key: string]: string } | undefined = one?.doc.labels;
declare const run: RunSummary;
const cost: number | "NaN" | "Infinity" | "-Infinity" = run.costUsd;

// Oneofs: at most one member.
declare const everything: Everything;
if (everything.choiceText !== undefined) {
  const text: string = everything.choiceText;
  // @ts-expect-error: the other members are absent when one is set
  const number: string = everything.choiceNumber;
  void text;
  void number;
}
const oneMember: EverythingInput = { choiceText: "a" };
// @ts-expect-error: two members of one oneof
const twoMembers: EverythingInput = { choiceText: "a", choiceNumber: 1 };
const wrappers: EverythingInput = { wrappedCount: "12", wrappedFlag: true, extra: { any: ["json", 1, null] }, took: "1.5s" };
// @ts-expect-error: a Struct holds JSON, not functions
const notJson: EverythingInput = { extra: { f: () => 1 } };

const input: WorkItemInput = { labels: ["a"], important: null };

// Server-made values: an insert may leave out the id; server-time fields are
// optional to write and present to read.
api.feedbackEntries.insertNew({ ownerId: "ann", comment: "good" });
api.feedbackEntries.insertNew({ ownerId: "ann" }, { expectedVersion: 0 });
// @ts-expect-error: the doc is still checked
api.feedbackEntries.insertNew({ owner: "ann" });
const stamped: string = everything.createdAt;
const updated: string = everything.updatedAt;
const unstamped: EverythingInput = {};

export { cost, count, countNumber, email, input, labels, notJson, oneMember, stamped, title, twoMembers, unstamped, updated, wrappers };
