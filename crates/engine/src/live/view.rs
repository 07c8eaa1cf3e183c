//! One connection's live state: its subscriptions and its watermark.
//!
//! [`LiveView::advance`] moves every subscription from the watermark W to a
//! newer seq T together and reports what the client must change, so the
//! client only ever sees states that existed at some seq. It reads the
//! commits in between from the commit stream, applies them, refills windows
//! that ran short from the store, and diffs what the client held at W
//! against what it should hold at T.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protosync_core::{Seq, StoredDocument, Watermark};
use protosync_schema::DocKey;
use protosync_store::{Store, StoreError};

use super::LiveDocument;
use super::commit_stream::CommitStream;
use super::subscription::{LiveSubscription, Target, ViewDiff};
use super::subscription_index::{
    ConnectionId, Doorbell, Filing, SubscriptionIndex, SubscriptionKey,
};
use crate::EngineError;

/// Subscriptions one connection may hold; one more is `LIMIT_EXCEEDED`. Each holds a window
/// of its result in memory, so this bounds what one connection can cost. Sent in the welcome.
pub const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 256;
/// How long a transition waits for this process's tailer to reach a seq the
/// store has already shown (it normally takes milliseconds).
const TAIL_WAIT: Duration = Duration::from_secs(10);
/// Refill rounds in one transition; each round moves the target forward, so
/// only relentless writes into the same windows get here. Then the
/// transition fails (the client resumes) rather than show a short window.
const MAX_REFILL_ROUNDS: usize = 32;

/// Why a subscription's update replaces everything the client held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The first result of a subscription the client holds nothing of.
    NewSubscription,
    /// The resume's watermark is older than the change log reaches.
    WatermarkTooOld {
        /// The change log's floor: the oldest watermark a resume can start from.
        floor: Seq,
    },
    /// The client cannot say what it holds (server-sent events).
    NoHeldState,
    /// The resume's watermark is ahead of this database (another database, or one restored
    /// from a backup): nothing the client holds can be trusted.
    UnknownWatermark,
}

/// One subscription's part of a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionUpdate {
    /// The subscription, by the id the client gave it.
    pub subscription_id: String,
    /// `Some` when the update replaces everything the client held for it, and why.
    pub reset: Option<ResetReason>,
    /// What to add, change and remove (for a reset: everything to add).
    pub diff: ViewDiff,
}

/// The move of a connection's view from `from` to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionPlan {
    /// The watermark the client's view is at: what the diffs apply to.
    pub from: Watermark,
    /// The watermark the view reaches once every update is applied.
    pub to: Watermark,
    /// The subscriptions that change; the others are consistent at `to` as they are.
    pub updates: Vec<SubscriptionUpdate>,
}

/// What the client holds for a subscription before its next update.
enum Held {
    /// Exactly what the last transition left (the normal case).
    Sent,
    /// Nothing: the next update is a reset.
    Reset(ResetReason),
    /// What a resuming client said it holds.
    Claimed(Vec<(String, Seq)>),
}

struct Slot {
    number: u64,
    subscription: LiveSubscription,
    filing: Filing,
    held: Held,
    /// Visible (id, seq) as of the last transition.
    sent: Vec<(String, Seq)>,
}

/// One connection's live state: its subscriptions, consistent together at one
/// watermark, and its doorbell in the subscription index. Opened with
/// [`Engine::open_view`](crate::Engine::open_view); dropping it unfiles its
/// subscriptions.
pub struct LiveView {
    store: Arc<dyn Store>,
    stream: Arc<CommitStream>,
    index: Arc<SubscriptionIndex>,
    connection: ConnectionId,
    doorbell: Arc<Doorbell>,
    watermark: Watermark,
    slots: HashMap<String, Slot>,
    next_number: u64,
    /// A subscription filed by value began to hold documents during this
    /// transition: a change to one of them that the tailer dispatched before
    /// the index knew rang no one, so the commits after the transition must
    /// be read even without a ring.
    gained_holdings: bool,
}

impl Drop for LiveView {
    fn drop(&mut self) {
        for (_, slot) in self.slots.drain() {
            let key = (self.connection, slot.number);
            self.index
                .unfile(key, &slot.filing, slot.subscription.held_ids());
            self.index
                .update_dependencies(key, &[], &slot.subscription.dependencies());
        }
        self.index.disconnect(self.connection);
    }
}

impl LiveView {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        stream: Arc<CommitStream>,
        index: Arc<SubscriptionIndex>,
        watermark: Watermark,
    ) -> LiveView {
        let (connection, doorbell) = index.connect();
        LiveView {
            store,
            stream,
            index,
            connection,
            doorbell,
            watermark,
            slots: HashMap::new(),
            next_number: 0,
            gained_holdings: false,
        }
    }

    /// The seq the client's view is consistent at after the last transition.
    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// Resolves when there may be news: the index rang, or the tail reached
    /// news that was rung before the tailer published it.
    pub async fn news(&self) {
        match self.doorbell.peek() {
            Some(dirty) => {
                let mut tail = self.stream.tail();
                let _ = tail.wait_for(|t| t.0 >= dirty).await;
            }
            None => self.doorbell.rung().await,
        }
    }

    /// Whether something can be sent now: news the tail has reached, or a
    /// subscription whose first result is waiting.
    pub fn has_news(&self) -> bool {
        self.doorbell
            .peek()
            .is_some_and(|dirty| dirty <= self.stream.tail_now().0)
            || self.slots.values().any(|s| !matches!(s.held, Held::Sent))
    }

    /// Adds a subscription. Its first result is read now and delivered by the
    /// next transition, as a reset or (for a resume) as a diff against `held`.
    pub async fn subscribe(
        &mut self,
        id: String,
        target: Target,
        held: Option<Vec<(String, Seq)>>,
        reset: ResetReason,
    ) -> Result<(), EngineError> {
        if self.slots.contains_key(&id) {
            return Err(EngineError::DuplicateSubscription(id));
        }
        if self.slots.len() >= MAX_SUBSCRIPTIONS_PER_SESSION {
            return Err(EngineError::LimitExceeded(format!(
                "a connection may hold {MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions"
            )));
        }
        self.next_number += 1;
        let key: SubscriptionKey = (self.connection, self.next_number);
        let filing = target.filing();
        // File first, read second: a commit after the read is then either
        // rung or (if before filing) inside the range rung below.
        self.index.file(key, &filing);
        let subscription = match read(&self.store, &self.stream, id.clone(), target).await {
            Ok(subscription) => subscription,
            Err(e) => {
                self.index.unfile(key, &filing, Vec::new());
                return Err(e.into());
            }
        };
        self.doorbell.restore(subscription.at.0 + 1);
        self.track_held(key, &filing, &subscription.held_ids(), &[]);
        self.track_dependencies(key, &[], &subscription.dependencies());
        let held = match held {
            Some(claimed) => Held::Claimed(claimed),
            None => Held::Reset(reset),
        };
        self.slots.insert(
            id,
            Slot {
                number: self.next_number,
                subscription,
                filing,
                held,
                sent: Vec::new(),
            },
        );
        Ok(())
    }

    /// Ends a subscription; `UNKNOWN_SUBSCRIPTION` when there is none with this id.
    pub fn unsubscribe(&mut self, id: &str) -> Result<(), EngineError> {
        let slot = self
            .slots
            .remove(id)
            .ok_or_else(|| EngineError::UnknownSubscription(id.to_owned()))?;
        let key = (self.connection, slot.number);
        self.index
            .unfile(key, &slot.filing, slot.subscription.held_ids());
        self.index
            .update_dependencies(key, &[], &slot.subscription.dependencies());
        Ok(())
    }

    /// Swaps every subscription's target (a new identity sees other
    /// documents) and re-reads it; the next transition sends only what
    /// changed for the client.
    pub async fn retarget(
        &mut self,
        retarget: impl Fn(&Target) -> Result<Target, EngineError>,
    ) -> Result<(), EngineError> {
        // All or nothing: read every new view first, then swap them in, so a
        // failure leaves the view as it was.
        let mut fresh = Vec::with_capacity(self.slots.len());
        for (id, slot) in &self.slots {
            let target = retarget(&slot.subscription.target)?;
            fresh.push((
                id.clone(),
                read(&self.store, &self.stream, id.clone(), target).await?,
            ));
        }
        for (id, subscription) in fresh {
            let slot = self.slots.get_mut(&id).expect("read above");
            let before = slot.subscription.held_ids();
            let depended = slot.subscription.dependencies();
            slot.subscription = subscription;
            let depends = slot.subscription.dependencies();
            let (gained, lost) = difference(&before, &slot.subscription.held_ids());
            let (key, filing, at) = (
                (self.connection, slot.number),
                slot.filing.clone(),
                slot.subscription.at,
            );
            // The next transition diffs the new view against what the client
            // holds (unless a reset or a claimed state is still to be sent).
            if matches!(slot.held, Held::Sent) {
                slot.held = Held::Claimed(slot.sent.clone());
            }
            self.track_held(key, &filing, &gained, &lost);
            self.track_dependencies(key, &depended, &depends);
            self.doorbell.restore(at.0 + 1);
        }
        Ok(())
    }

    /// Moves every subscription to the tail (at least to `min_target`) and
    /// returns what the client must apply. `None` when nothing changed for
    /// the client and `force` is false: the watermark then stays, which keeps
    /// the chain of transitions intact.
    pub async fn advance(
        &mut self,
        min_target: Seq,
        force: bool,
    ) -> Result<Option<TransitionPlan>, EngineError> {
        let highest_read = self
            .slots
            .values()
            .map(|s| s.subscription.at)
            .max()
            .unwrap_or(Seq::ZERO);
        let mut target = self
            .wait_for_tail(min_target.max(highest_read).max(self.watermark.seq()))
            .await?;
        let mut applied_upto = match self.doorbell.take() {
            Some(dirty) if dirty <= target.0 => Seq(dirty - 1),
            Some(dirty) => {
                self.doorbell.restore(dirty);
                target
            }
            None => target,
        };
        let mut rounds = 0;
        loop {
            let reread_at = self.apply_commits(applied_upto, target).await?;
            applied_upto = target;
            if reread_at > target {
                target = self.wait_for_tail(reread_at).await?;
                continue;
            }
            let short: Vec<String> = self
                .slots
                .iter()
                .filter(|(_, s)| s.subscription.needs_refill())
                .map(|(id, _)| id.clone())
                .collect();
            if short.is_empty() {
                break;
            }
            if rounds == MAX_REFILL_ROUNDS {
                return Err(EngineError::Unavailable(
                    "subscriptions keep changing faster than they can be refilled".into(),
                ));
            }
            rounds += 1;
            for id in short {
                let slot = self.slots.get_mut(&id).expect("listed above");
                let fresh = read(
                    &self.store,
                    &self.stream,
                    id.clone(),
                    slot.subscription.target.clone(),
                )
                .await?;
                target = target.max(fresh.at);
                let before = slot.subscription.held_ids();
                let depended = slot.subscription.dependencies();
                slot.subscription = fresh;
                let (key, filing, after, depends) = (
                    (self.connection, slot.number),
                    slot.filing.clone(),
                    slot.subscription.held_ids(),
                    slot.subscription.dependencies(),
                );
                let (gained, lost) = difference(&before, &after);
                self.track_held(key, &filing, &gained, &lost);
                self.track_dependencies(key, &depended, &depends);
            }
            target = self.wait_for_tail(target).await?;
        }
        // Commits that rang during this transition and are already applied are not news.
        if let Some(dirty) = self.doorbell.take()
            && dirty > target.0
        {
            self.doorbell.restore(dirty);
        }
        // A ring beyond the target may have been folded into a lower one we
        // took; and new holdings may have missed rings (see gained_holdings).
        if std::mem::take(&mut self.gained_holdings) || self.doorbell.highest() > target.0 {
            self.doorbell.restore(target.0 + 1);
        }
        let mut updates = Vec::new();
        for slot in self.slots.values_mut() {
            slot.subscription.at = target;
            let (reset, diff) = match std::mem::replace(&mut slot.held, Held::Sent) {
                Held::Sent => (None, ViewDiff::between(&slot.sent, &slot.subscription)),
                Held::Reset(reason) => (Some(reason), ViewDiff::full(&slot.subscription)),
                Held::Claimed(claimed) => {
                    let mut diff = ViewDiff::between(&claimed, &slot.subscription);
                    diff.order = Some(slot.subscription.visible().map(|d| d.id.clone()).collect());
                    (None, diff)
                }
            };
            slot.sent = slot.subscription.visible_state();
            if reset.is_some() || !diff.is_empty() {
                updates.push(SubscriptionUpdate {
                    subscription_id: slot.subscription.id.clone(),
                    reset,
                    diff,
                });
            }
        }
        // Invariant: a view's watermark never moves back; each transition
        // starts where the last one ended (the client checks the chain).
        assert!(
            target >= self.watermark.seq(),
            "transition to {target} from watermark {}",
            self.watermark
        );
        if updates.is_empty() && !(force && target > self.watermark.seq()) {
            return Ok(None);
        }
        let from = self.watermark;
        self.watermark = Watermark::at(target);
        updates.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        Ok(Some(TransitionPlan {
            from,
            to: self.watermark,
            updates,
        }))
    }

    /// Applies the commits in `(after, upto]` to every subscription that has
    /// not read past them. When the log no longer has them, every
    /// subscription is read afresh instead (the client still gets a diff);
    /// returns the newest seq such a read saw, which the transition must
    /// then reach.
    async fn apply_commits(&mut self, after: Seq, upto: Seq) -> Result<Seq, EngineError> {
        let commits = match self.stream.commits(after, upto).await {
            Ok(commits) => commits,
            Err(StoreError::LogTruncated { .. }) => {
                let mut newest = upto;
                let ids: Vec<String> = self.slots.keys().cloned().collect();
                for id in ids {
                    let slot = self.slots.get_mut(&id).expect("listed above");
                    let before = slot.subscription.held_ids();
                    let depended = slot.subscription.dependencies();
                    slot.subscription = read(
                        &self.store,
                        &self.stream,
                        id,
                        slot.subscription.target.clone(),
                    )
                    .await?;
                    let (gained, lost) = difference(&before, &slot.subscription.held_ids());
                    let depends = slot.subscription.dependencies();
                    let (key, filing) = ((self.connection, slot.number), slot.filing.clone());
                    newest = newest.max(slot.subscription.at);
                    self.track_held(key, &filing, &gained, &lost);
                    self.track_dependencies(key, &depended, &depends);
                }
                return Ok(newest);
            }
            Err(e) => return Err(e.into()),
        };
        for slot in self.slots.values_mut() {
            let tracks_held = matches!(slot.filing, Filing::Values { .. });
            let before = if tracks_held {
                slot.subscription.held_ids()
            } else {
                Vec::new()
            };
            let read_at = slot.subscription.at;
            for commit in commits.iter().filter(|c| c.seq > read_at) {
                for change in &commit.changes {
                    slot.subscription.apply(commit.seq, change);
                }
            }
            if tracks_held {
                let (gained, lost) = difference(&before, &slot.subscription.held_ids());
                self.gained_holdings |= !gained.is_empty();
                self.index.update_held(
                    (self.connection, slot.number),
                    slot.subscription.target.collection(),
                    &gained,
                    &lost,
                );
            }
        }
        Ok(upto)
    }

    fn track_held(
        &mut self,
        key: SubscriptionKey,
        filing: &Filing,
        gained: &[String],
        lost: &[String],
    ) {
        if let Filing::Values { collection, .. } = filing {
            self.gained_holdings |= !gained.is_empty();
            self.index.update_held(key, collection, gained, lost);
        }
    }

    /// Files the documents a subscription's read rule now depends on. A
    /// new dependency may have changed after the read and before it was
    /// filed, unrung: the next transition reads the commits after this one
    /// anyway (see `gained_holdings`).
    fn track_dependencies(&mut self, key: SubscriptionKey, before: &[DocKey], after: &[DocKey]) {
        let (gained, lost) = difference(before, after);
        if gained.is_empty() && lost.is_empty() {
            return;
        }
        self.gained_holdings |= !gained.is_empty();
        self.index.update_dependencies(key, &gained, &lost);
    }

    /// Waits until the tailer has dispatched `seq`; returns the tail then.
    async fn wait_for_tail(&self, seq: Seq) -> Result<Seq, EngineError> {
        let mut tail = self.stream.tail();
        let reached = tokio::time::timeout(TAIL_WAIT, tail.wait_for(|t| *t >= seq)).await;
        match reached {
            Ok(Ok(t)) => Ok(*t),
            Ok(Err(_)) => Err(EngineError::Unavailable(
                "the commit stream has stopped".into(),
            )),
            Err(_) => Err(EngineError::Unavailable(format!(
                "the commit stream did not reach seq {seq} within {TAIL_WAIT:?}"
            ))),
        }
    }
}

/// (in `after` but not `before`, in `before` but not `after`)
fn difference<T: Clone + Eq + std::hash::Hash>(before: &[T], after: &[T]) -> (Vec<T>, Vec<T>) {
    let old: std::collections::HashSet<&T> = before.iter().collect();
    let new: std::collections::HashSet<&T> = after.iter().collect();
    (
        after
            .iter()
            .filter(|id| !old.contains(id))
            .cloned()
            .collect(),
        before
            .iter()
            .filter(|id| !new.contains(id))
            .cloned()
            .collect(),
    )
}

/// Reads a subscription's view from the store, its bodies shared with
/// every other holder of the same document states.
async fn read(
    store: &Arc<dyn Store>,
    stream: &CommitStream,
    id: String,
    target: Target,
) -> Result<LiveSubscription, StoreError> {
    let live = |documents: Vec<StoredDocument>| -> Vec<LiveDocument> {
        documents
            .into_iter()
            .map(|d| LiveDocument {
                body: stream
                    .bodies()
                    .share(target.collection(), &d.id, d.seq, d.body),
                id: d.id,
                version: d.version,
                seq: d.seq,
            })
            .collect()
    };
    match &target {
        Target::Query(_) => {
            let window = target.window_query().expect("query targets have a window");
            let read = store.query(&window).await?;
            let complete = read.value.next_cursor.is_none();
            let documents = live(read.value.documents);
            Ok(LiveSubscription::new(
                id,
                target,
                read.seq,
                documents,
                complete,
                read.looked_up,
            ))
        }
        Target::Get {
            collection,
            id: doc_id,
            scope,
        } => {
            let read = store.get(collection, doc_id, scope).await?;
            let documents = live(read.value.into_iter().collect());
            Ok(LiveSubscription::new(
                id,
                target,
                read.seq,
                documents,
                true,
                read.looked_up,
            ))
        }
    }
}
