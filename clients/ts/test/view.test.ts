/** Applying transitions: whole or not at all, and every protocol check the reference client makes. */

import assert from "node:assert/strict";
import { test } from "node:test";

// Internal module: the view is not part of the public API, so it is reached by path.
import { applyTransition, EMPTY_VIEW, ProtocolViolation } from "../dist/view.js";

const all = (): boolean => true;
const doc = (id: string, seq: string) => ({ id, version: "1", seq, doc: { title: id } });

test("a transition applies reset, removes, upserts and order, then moves the watermark", () => {
  const first = applyTransition(
    EMPTY_VIEW,
    { toWatermark: "2", updates: [{ subscriptionId: "s", reset: true, upserts: [doc("a", "1"), doc("b", "2")], order: { ids: ["b", "a"] } }] },
    all,
  );
  assert.equal(first.view.watermark, 2n);
  assert.deepEqual(first.view.subscriptions.get("s")?.order, ["b", "a"]);
  const second = applyTransition(
    first.view,
    { fromWatermark: "2", toWatermark: "3", updates: [{ subscriptionId: "s", removes: ["b"], upserts: [doc("c", "3")], order: { ids: ["a", "c"] } }] },
    all,
  );
  assert.deepEqual(second.view.subscriptions.get("s")?.order, ["a", "c"]);
  assert.deepEqual([...second.touched], ["s"]);
  assert.deepEqual(first.view.subscriptions.get("s")?.order, ["b", "a"], "the previous view is untouched");
});

test("a transition that does not fit is refused and changes nothing", () => {
  const base = applyTransition(
    EMPTY_VIEW,
    { toWatermark: "5", updates: [{ subscriptionId: "s", reset: true, upserts: [doc("a", "5")], order: { ids: ["a"] } }] },
    all,
  ).view;
  const refuse = (t: Parameters<typeof applyTransition>[1], why: RegExp): void =>
    assert.throws(() => applyTransition(base, t, all), (e: unknown) => e instanceof ProtocolViolation && why.test(e.message));
  refuse({ fromWatermark: "4", toWatermark: "6" }, /does not start at the view's watermark 5/);
  refuse({ fromWatermark: "5", toWatermark: "4" }, /goes back/);
  refuse({ fromWatermark: "5", toWatermark: "6", updates: [{ subscriptionId: "s", upserts: [doc("a", "3")] }] }, /went back from seq 5 to 3/);
  refuse({ fromWatermark: "5", toWatermark: "6", updates: [{ subscriptionId: "s", upserts: [doc("b", "6")] }] }, /order does not list exactly/);
  refuse({ fromWatermark: "5", toWatermark: "6", updates: [{ subscriptionId: "s", order: { ids: ["a", "a"] } }] }, /order does not list exactly/);
  assert.equal(base.watermark, 5n);
});

test("updates for subscriptions the client no longer wants are skipped; an empty order is kept apart from none", () => {
  const base = applyTransition(
    EMPTY_VIEW,
    { toWatermark: "1", updates: [{ subscriptionId: "s", reset: true, upserts: [doc("a", "1")], order: { ids: ["a"] } }] },
    all,
  ).view;
  const next = applyTransition(
    base,
    {
      fromWatermark: "1",
      toWatermark: "2",
      updates: [
        { subscriptionId: "gone", reset: true, upserts: [doc("x", "2")], order: { ids: ["x"] } },
        { subscriptionId: "s", removes: ["a"], order: {} },
      ],
    },
    (id) => id !== "gone",
  );
  assert.equal(next.view.subscriptions.has("gone"), false);
  assert.deepEqual(next.view.subscriptions.get("s")?.order, []);
});
