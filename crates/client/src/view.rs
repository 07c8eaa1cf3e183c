//! The client's view: for each subscription, its documents in query order,
//! consistent at one watermark.

use std::collections::{BTreeMap, HashMap, HashSet};

use protosync_protocol::{struct_to_json, wire};

/// One document as a subscription holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDocument {
    /// Its id, unique in its collection.
    pub id: String,
    /// Its version: 1 when inserted, one more per write.
    pub version: u64,
    /// The seq of the commit that last wrote it.
    pub seq: u64,
    /// The document body, in proto3 JSON.
    pub doc: serde_json::Value,
}

/// What one subscription holds: its documents, in the order its query gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionView {
    docs: HashMap<String, ViewDocument>,
    order: Vec<String>,
}

impl SubscriptionView {
    /// The documents in query order.
    pub fn documents(&self) -> Vec<&ViewDocument> {
        self.order
            .iter()
            .filter_map(|id| self.docs.get(id))
            .collect()
    }

    /// What a resume tells the server this subscription holds.
    pub fn held(&self) -> Vec<wire::HeldDocument> {
        self.order
            .iter()
            .filter_map(|id| self.docs.get(id))
            .map(|d| wire::HeldDocument {
                id: d.id.clone(),
                seq: d.seq,
            })
            .collect()
    }
}

/// Everything the client holds, consistent at one watermark: every subscription moves
/// together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The seq this view is consistent at: it includes every commit up to it and none
    /// after.
    pub watermark: u64,
    /// Each subscription's documents, by subscription id.
    pub subscriptions: BTreeMap<String, SubscriptionView>,
}

impl View {
    /// Applies a whole (assembled) transition. Fails — and changes nothing —
    /// when it does not start at this view's watermark or leaves a
    /// subscription inconsistent.
    pub fn apply(&mut self, transition: &wire::Transition) -> Result<(), String> {
        if transition.from_watermark != self.watermark {
            return Err(format!(
                "transition from {} does not start at the view's watermark {}",
                transition.from_watermark, self.watermark
            ));
        }
        if transition.to_watermark < transition.from_watermark {
            return Err(format!(
                "transition goes back from {} to {}",
                transition.from_watermark, transition.to_watermark
            ));
        }
        let mut next = self.clone();
        for update in &transition.updates {
            let view = next
                .subscriptions
                .entry(update.subscription_id.clone())
                .or_default();
            if update.reset {
                *view = SubscriptionView::default();
            }
            for id in &update.removes {
                view.docs.remove(id);
                view.order.retain(|o| o != id);
            }
            for doc in &update.upserts {
                let document = ViewDocument {
                    id: doc.id.clone(),
                    version: doc.version,
                    seq: doc.seq,
                    doc: doc.doc.as_ref().map(struct_to_json).unwrap_or_default(),
                };
                if let Some(held) = view.docs.get(&doc.id)
                    && held.seq > doc.seq
                {
                    return Err(format!(
                        "{}: document {} went back from seq {} to {}",
                        update.subscription_id, doc.id, held.seq, doc.seq
                    ));
                }
                view.docs.insert(doc.id.clone(), document);
            }
            if let Some(order) = &update.order {
                view.order = order.ids.clone();
            }
        }
        for update in &transition.updates {
            let view = &next.subscriptions[&update.subscription_id];
            let ordered: HashSet<&String> = view.order.iter().collect();
            if ordered.len() != view.order.len()
                || ordered.len() != view.docs.len()
                || !view.docs.keys().all(|id| ordered.contains(id))
            {
                return Err(format!(
                    "{}: the order does not list exactly the documents held",
                    update.subscription_id
                ));
            }
        }
        next.watermark = transition.to_watermark;
        *self = next;
        Ok(())
    }

    /// Forgets a subscription.
    pub fn drop_subscription(&mut self, id: &str) {
        self.subscriptions.remove(id);
    }
}
