//! Transitions into frames, encoded once per document.
//!
//! Fan-out sends the same document state to many connections. Going through
//! the generic codec would convert every body to a protobuf `Struct` and
//! back through the descriptor once per connection, which is most of the
//! cost of fan-out. Here JSON frames are written directly, each document's
//! body text made once per document state and shared
//! ([`LiveBody::encoded`]); binary frames are built from the wire types.
//! Both are the exact proto3 mapping of `ServerMessage.transition` (a test
//! holds the JSON writer to the descriptor's output).

use std::fmt::Write as _;
use std::ops::Range;

use protosync_core::Seq;
use protosync_engine::live::LiveBody;
use protosync_engine::live::view::{ResetReason, SubscriptionUpdate, TransitionPlan};
use protosync_protocol::wire;
use protosync_protocol::{Codec, Frame, json_to_struct, struct_to_json};

use super::convert::server;

/// A transition is split into frames of about this many bytes of document
/// bodies. A single document larger than this still travels whole, in a
/// chunk of its own. Kept small because a connection's WebSocket write
/// buffer keeps the size of the largest frame it ever wrote, for the life
/// of the connection: at 256 KiB, 2,000 connections that once got a large
/// first result held ~500 MiB between them.
pub const TRANSITION_CHUNK_BYTES: usize = 64 * 1024;

/// The frames of one transition, in order.
pub fn frames(plan: &TransitionPlan, codec: Codec, chunk_bytes: usize) -> Vec<Frame> {
    let layout = layout(plan, chunk_bytes);
    match codec {
        Codec::Json => layout
            .iter()
            .enumerate()
            .map(|(i, chunk)| Frame::Text(json_chunk(plan, chunk, i, layout.len())))
            .collect(),
        Codec::Binary => messages(plan, &layout)
            .iter()
            .map(|m| codec.encode_server(m))
            .collect(),
    }
}

/// The body's proto3 JSON text: numbers as a `google.protobuf.Value` holds
/// them (doubles, whole ones printed as integers), as the codec would.
fn body_json(body: &LiveBody) -> &str {
    body.encoded(|value| struct_to_json(&json_to_struct(value)).to_string())
}

/// One update's share of a chunk: the first part of an update carries its
/// reset, removes and order; later parts only more upserts.
struct Part {
    update: usize,
    upserts: Range<usize>,
    first: bool,
}

/// Which upserts go in which chunk, cutting after about `chunk_bytes` of
/// document bodies.
fn layout(plan: &TransitionPlan, chunk_bytes: usize) -> Vec<Vec<Part>> {
    let mut chunks: Vec<Vec<Part>> = vec![Vec::new()];
    let mut size = 0usize;
    for (u, update) in plan.updates.iter().enumerate() {
        let mut part = Part {
            update: u,
            upserts: 0..0,
            first: true,
        };
        for (d, doc) in update.diff.upserts.iter().enumerate() {
            let doc_size = body_json(&doc.body).len() + doc.id.len();
            let chunk_has_content =
                !part.upserts.is_empty() || !chunks.last().is_some_and(Vec::is_empty);
            if size.saturating_add(doc_size) > chunk_bytes && chunk_has_content {
                let next = Part {
                    update: u,
                    upserts: d..d,
                    first: false,
                };
                chunks
                    .last_mut()
                    .expect("never empty")
                    .push(std::mem::replace(&mut part, next));
                chunks.push(Vec::new());
                size = 0;
            }
            size += doc_size;
            part.upserts.end = d + 1;
        }
        chunks.last_mut().expect("never empty").push(part);
    }
    chunks
}

fn reset_of(update: &SubscriptionUpdate) -> (wire::ResetReason, Seq) {
    match update.reset {
        None => (wire::ResetReason::Unspecified, Seq::ZERO),
        Some(ResetReason::NewSubscription) => (wire::ResetReason::NewSubscription, Seq::ZERO),
        Some(ResetReason::WatermarkTooOld { floor }) => (wire::ResetReason::WatermarkTooOld, floor),
        Some(ResetReason::NoHeldState) => (wire::ResetReason::NoHeldState, Seq::ZERO),
        Some(ResetReason::UnknownWatermark) => (wire::ResetReason::UnknownWatermark, Seq::ZERO),
    }
}

/// The chunks as wire messages (binary frames; the reference for JSON ones).
fn messages(plan: &TransitionPlan, layout: &[Vec<Part>]) -> Vec<wire::ServerMessage> {
    layout
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let updates = chunk
                .iter()
                .map(|part| {
                    let update = &plan.updates[part.update];
                    let upserts = update.diff.upserts[part.upserts.clone()]
                        .iter()
                        .map(|doc| wire::Document {
                            id: doc.id.clone(),
                            version: doc.version.0,
                            seq: doc.seq.0,
                            doc: Some(json_to_struct(&doc.body)),
                        })
                        .collect();
                    let mut message = wire::SubscriptionUpdate {
                        subscription_id: update.subscription_id.clone(),
                        upserts,
                        ..Default::default()
                    };
                    if part.first {
                        let (reason, floor) = reset_of(update);
                        message.reset = update.reset.is_some();
                        message.reset_reason = reason as i32;
                        message.log_floor = floor.0;
                        message.removes = update.diff.removes.clone();
                        message.order = update
                            .diff
                            .order
                            .clone()
                            .map(|ids| wire::ResultOrder { ids });
                    }
                    message
                })
                .collect();
            server(wire::server_message::Message::Transition(
                wire::Transition {
                    from_watermark: plan.from.seq().0,
                    to_watermark: plan.to.seq().0,
                    updates,
                    chunk: i as u32,
                    chunks: layout.len() as u32,
                },
            ))
        })
        .collect()
}

/// One chunk as proto3 JSON: default values are left out, 64-bit integers
/// are strings, enums are names.
fn json_chunk(plan: &TransitionPlan, chunk: &[Part], index: usize, count: usize) -> String {
    let mut out =
        String::with_capacity(256 + chunk.iter().map(|p| p.upserts.len() * 128).sum::<usize>());
    out.push_str("{\"transition\":");
    let mut transition = Object::open(&mut out);
    transition.u64_string("fromWatermark", plan.from.seq().0);
    transition.u64_string("toWatermark", plan.to.seq().0);
    if !chunk.is_empty() {
        let out = transition.key("updates");
        out.push('[');
        for (n, part) in chunk.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            update_json(out, &plan.updates[part.update], part);
        }
        out.push(']');
    }
    transition.number("chunk", index as u64);
    transition.number("chunks", count as u64);
    transition.close();
    out.push('}');
    out
}

fn update_json(out: &mut String, update: &SubscriptionUpdate, part: &Part) {
    let mut object = Object::open(out);
    object.string("subscriptionId", &update.subscription_id);
    if part.first {
        let (reason, floor) = reset_of(update);
        if update.reset.is_some() {
            object.key("reset").push_str("true");
        }
        if reason != wire::ResetReason::Unspecified {
            object.string("resetReason", reason.as_str_name());
        }
        object.u64_string("logFloor", floor.0);
    }
    if !part.upserts.is_empty() {
        let out = object.key("upserts");
        out.push('[');
        for (n, doc) in update.diff.upserts[part.upserts.clone()].iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let mut document = Object::open(out);
            document.string("id", &doc.id);
            document.u64_string("version", doc.version.0);
            document.u64_string("seq", doc.seq.0);
            document.key("doc").push_str(body_json(&doc.body));
            document.close();
        }
        out.push(']');
    }
    if part.first {
        if !update.diff.removes.is_empty() {
            string_array(object.key("removes"), &update.diff.removes);
        }
        if let Some(ids) = &update.diff.order {
            let mut order = Object::open(object.key("order"));
            if !ids.is_empty() {
                string_array(order.key("ids"), ids);
            }
            order.close();
        }
    }
    object.close();
}

/// A JSON object being written: fields are separated as they come.
struct Object<'o> {
    out: &'o mut String,
    empty: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut String) -> Object<'o> {
        out.push('{');
        Object { out, empty: true }
    }

    /// Writes `"name":` and returns where the value goes.
    fn key(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn string(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            quote(self.key(name), value);
        }
    }

    fn u64_string(&mut self, name: &str, value: u64) {
        if value != 0 {
            let _ = write!(self.key(name), "\"{value}\"");
        }
    }

    fn number(&mut self, name: &str, value: u64) {
        if value != 0 {
            let _ = write!(self.key(name), "{value}");
        }
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn quote(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::from(text).to_string());
}

fn string_array(out: &mut String, items: &[String]) {
    out.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        quote(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protosync_core::{Version, Watermark};
    use protosync_engine::live::LiveDocument;
    use protosync_engine::live::subscription::ViewDiff;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    fn doc(id: &str, body: serde_json::Value) -> LiveDocument {
        LiveDocument {
            id: id.into(),
            version: Version(3),
            seq: Seq(7),
            body: Arc::new(LiveBody::new(body)),
        }
    }

    #[test]
    fn large_transitions_split_into_chunks_that_carry_everything() {
        let plan = TransitionPlan {
            from: Watermark::at(Seq(2)),
            to: Watermark::at(Seq(3)),
            updates: vec![SubscriptionUpdate {
                subscription_id: "big".into(),
                reset: Some(ResetReason::NewSubscription),
                diff: ViewDiff {
                    upserts: (0..10)
                        .map(|i| doc(&format!("d{i}"), json!({"title": "x".repeat(100_000)})))
                        .collect(),
                    removes: vec![],
                    order: Some((0..10).map(|i| format!("d{i}")).collect()),
                },
            }],
        };
        let chunks = messages(&plan, &layout(&plan, TRANSITION_CHUNK_BYTES));
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        let mut ids = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let Some(wire::server_message::Message::Transition(t)) = &chunk.message else {
                panic!()
            };
            assert_eq!(
                (t.from_watermark, t.to_watermark, t.chunk, t.chunks),
                (2, 3, i as u32, chunks.len() as u32)
            );
            assert!(prost::Message::encoded_len(t) < 2 * TRANSITION_CHUNK_BYTES);
            ids.extend(
                t.updates
                    .iter()
                    .flat_map(|u| u.upserts.iter().map(|d| d.id.clone())),
            );
        }
        assert_eq!(ids.len(), 10);
        assert_eq!(frames(&plan, Codec::Json, usize::MAX).len(), 1);
    }

    /// Random transitions: the direct JSON writer says exactly what the
    /// descriptor-driven codec says for the same chunks.
    #[test]
    fn json_frames_equal_the_codecs_proto3_json() {
        let seed = protosync_testkit::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let values = [
            json!(2),
            json!(2.5),
            json!(-7),
            json!("a \"quoted\"\n ü"),
            json!(true),
            json!(null),
            json!([1, "x", {"k": 1.0}]),
            json!({"n": {"m": 3}}),
            json!(""),
        ];
        let reasons = [
            None,
            Some(ResetReason::NewSubscription),
            Some(ResetReason::WatermarkTooOld { floor: Seq(9) }),
            Some(ResetReason::NoHeldState),
            Some(ResetReason::UnknownWatermark),
        ];
        for case in 0..300 {
            let updates = (0..rng.random_range(0..4))
                .map(|u| {
                    let upserts = (0..rng.random_range(0..5))
                        .map(|d| {
                            let body = (0..rng.random_range(0..4))
                                .map(|f| {
                                    (
                                        format!("f{f}"),
                                        values[rng.random_range(0..values.len())].clone(),
                                    )
                                })
                                .collect();
                            doc(&format!("doc-{d}"), serde_json::Value::Object(body))
                        })
                        .collect();
                    let ids = |rng: &mut rand::rngs::StdRng| {
                        (0..rng.random_range(0..3))
                            .map(|i| format!("r{i}"))
                            .collect::<Vec<_>>()
                    };
                    SubscriptionUpdate {
                        subscription_id: if u == 0 && rng.random_bool(0.2) {
                            String::new()
                        } else {
                            format!("s{u}")
                        },
                        reset: reasons[rng.random_range(0..reasons.len())],
                        diff: ViewDiff {
                            upserts,
                            removes: ids(&mut rng),
                            order: rng.random_bool(0.5).then(|| ids(&mut rng)),
                        },
                    }
                })
                .collect();
            let plan = TransitionPlan {
                from: Watermark::at(Seq(rng.random_range(0..3))),
                to: Watermark::at(Seq(rng.random_range(3..6))),
                updates,
            };
            let chunk_bytes = [usize::MAX, 40, 1][rng.random_range(0..3)];
            let direct = frames(&plan, Codec::Json, chunk_bytes);
            let generic = messages(&plan, &layout(&plan, chunk_bytes));
            assert_eq!(direct.len(), generic.len());
            for (direct, generic) in direct.iter().zip(&generic) {
                let (Frame::Text(direct), Frame::Text(generic)) =
                    (direct, Codec::Json.encode_server(generic))
                else {
                    panic!("text frames")
                };
                let parsed: serde_json::Value = serde_json::from_str(direct)
                    .unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}: {direct}"));
                assert_eq!(
                    parsed,
                    serde_json::from_str::<serde_json::Value>(&generic).unwrap(),
                    "seed {seed} case {case}:\n{direct}\n{generic}"
                );
            }
        }
    }
}
