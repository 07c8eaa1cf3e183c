/**
 * The client's view: per subscription, its documents in query order, all
 * consistent at one watermark. Transitions are applied whole or not at all
 * (docs/protocol.md, "Applying a transition").
 *
 * @module
 */

import type { WireDocument, WireHeld, WireTransition } from "./wire.js";

/** One subscription's documents, in query order. Never mutated once built. */
export interface SubscriptionView {
  readonly docs: ReadonlyMap<string, WireDocument>;
  readonly order: readonly string[];
}

/** The whole view at one watermark. Never mutated once built. */
export interface View {
  readonly watermark: bigint;
  readonly subscriptions: ReadonlyMap<string, SubscriptionView>;
}

/** An empty view at watermark 0. */
export const EMPTY_VIEW: View = { watermark: 0n, subscriptions: new Map() };

/** A transition that breaks the protocol's invariants; the client reconnects and resumes. */
export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolViolation";
  }
}

/** Parses a uint64 decimal string (absent = 0). */
export function u64(text: string | undefined): bigint {
  return text === undefined || text === "" ? 0n : BigInt(text);
}

/**
 * Applies a whole (assembled) transition. Returns the next view and the ids
 * of the subscriptions it changed; throws {@link ProtocolViolation} and
 * changes nothing when the transition does not fit.
 *
 * `wanted` filters updates: ids the client no longer holds are skipped.
 */
export function applyTransition(
  view: View,
  transition: WireTransition,
  wanted: (subscriptionId: string) => boolean,
): { view: View; touched: Set<string> } {
  const from = u64(transition.fromWatermark);
  const to = u64(transition.toWatermark);
  if (from !== view.watermark) {
    throw new ProtocolViolation(`transition from ${from} does not start at the view's watermark ${view.watermark}`);
  }
  if (to < from) throw new ProtocolViolation(`transition goes back from ${from} to ${to}`);
  const next = new Map(view.subscriptions);
  const working = new Map<string, { docs: Map<string, WireDocument>; order: string[] }>();
  for (const update of transition.updates ?? []) {
    const id = update.subscriptionId;
    if (!wanted(id)) continue;
    let sub = working.get(id);
    if (sub === undefined) {
      const held = next.get(id);
      sub = { docs: new Map(held?.docs ?? []), order: [...(held?.order ?? [])] };
      working.set(id, sub);
    }
    if (update.reset) {
      sub.docs.clear();
      sub.order = [];
    }
    for (const removed of update.removes ?? []) {
      sub.docs.delete(removed);
      sub.order = sub.order.filter((o) => o !== removed);
    }
    for (const doc of update.upserts ?? []) {
      const held = sub.docs.get(doc.id);
      if (held !== undefined && u64(held.seq) > u64(doc.seq)) {
        throw new ProtocolViolation(`${id}: document ${doc.id} went back from seq ${held.seq} to ${doc.seq}`);
      }
      sub.docs.set(doc.id, doc);
    }
    if (update.order !== undefined) sub.order = [...(update.order.ids ?? [])];
  }
  // Invariant: after the whole transition, each touched subscription's order
  // lists exactly the documents it holds, each once.
  for (const [id, sub] of working) {
    const ordered = new Set(sub.order);
    if (ordered.size !== sub.order.length || ordered.size !== sub.docs.size || ![...sub.docs.keys()].every((d) => ordered.has(d))) {
      throw new ProtocolViolation(`${id}: the order does not list exactly the documents held`);
    }
    next.set(id, sub);
  }
  return { view: { watermark: to, subscriptions: next }, touched: new Set(working.keys()) };
}

/** What a resume tells the server one subscription holds. */
export function heldOf(sub: SubscriptionView): WireHeld[] {
  const held: WireHeld[] = [];
  for (const id of sub.order) {
    const doc = sub.docs.get(id);
    if (doc !== undefined) held.push({ id, seq: doc.seq ?? "0" });
  }
  return held;
}
