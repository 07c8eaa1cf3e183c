//! The scan loop that every store drives: the store fetches batches of rows
//! as asked; this decides what to ask for next, filters, orders and pages.
//!
//! Keeping this out of the stores means SQLite and Postgres cannot differ in
//! query semantics: they only differ in how they fetch a batch.

use std::collections::{BinaryHeap, VecDeque};

use crate::plan::Plan;
use crate::query::{LookedUp, Query};
use protosync_core::StoredDocument;
use protosync_schema::DocKey;

/// Rows fetched per batch: large enough to amortize a round trip, small
/// enough that an ordered scan with a small limit does little extra work.
pub const SCAN_BATCH_ROWS: usize = 512;

/// What the store should fetch next, in one read transaction with the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanRequest {
    /// Index entries with `lower <= key < upper`, joined to their documents,
    /// ascending by key (or descending when `reverse`), at most `limit` rows.
    Index {
        /// The declared index's name.
        index: String,
        /// Inclusive lower bound of index keys.
        lower: Vec<u8>,
        /// Exclusive upper bound; `None` is unbounded.
        upper: Option<Vec<u8>>,
        /// Read from the upper end down.
        reverse: bool,
        /// Rows to fetch at most.
        limit: usize,
    },
    /// Documents of the collection with id greater than `after_id`, ascending
    /// by id (byte order), at most `limit` rows.
    Collection {
        /// Start after this id; `None`: from the first.
        after_id: Option<String>,
        /// Rows to fetch at most.
        limit: usize,
    },
}

/// One fetched row: the document and, for index scans, its index key.
#[derive(Debug, Clone)]
pub struct ScanRow {
    /// The index entry's key (index scans only), which the scan continues after.
    pub index_key: Option<Vec<u8>>,
    /// The document, with its version and seq.
    pub doc: StoredDocument,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page {
    /// The page's documents, in the query's order: at most its limit.
    pub documents: Vec<StoredDocument>,
    /// The opaque cursor of the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
}

/// A result candidate, ordered by sort key so a max-heap keeps the smallest.
struct Ranked(Vec<u8>, StoredDocument);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// One query being run: the store loops on [`Execution::step`], fetching rows or looking
/// documents up as it asks, then calls [`Execution::finish`]. All in one read
/// transaction, so the page is consistent at one seq.
pub struct Execution<'q> {
    query: &'q Query,
    plan: Plan,
    next: Option<ScanRequest>,
    /// Ordered plans append; unordered ones keep the best `limit + 1` in a heap.
    ordered: Vec<Ranked>,
    best: BinaryHeap<Ranked>,
    /// Rows of the last batch not judged yet: the scan waits on lookups.
    pending: VecDeque<ScanRow>,
    /// The request the pending rows answer, and whether it was the last.
    batch: Option<(ScanRequest, bool)>,
    /// Where the scan continues after the last row judged.
    resume: Option<Resume>,
    /// Documents the read rule looked up, loaded in the read's snapshot.
    looked_up: LookedUp,
    /// Documents to load before the scan can go on.
    needed: Vec<DocKey>,
}

/// What the store does next for an [`Execution`].
#[derive(Debug)]
pub enum Step<'e> {
    /// Fetch these rows and hand them to [`Execution::accept`].
    Fetch(&'e ScanRequest),
    /// Load these documents, in the same snapshot, and hand each to
    /// [`Execution::supply`].
    Lookup(Vec<DocKey>),
    /// The page is complete: [`Execution::finish`].
    Done,
}

impl<'q> Execution<'q> {
    /// Starts running `query` with the plan [`Plan::choose`] picks.
    pub fn new(query: &'q Query) -> Execution<'q> {
        let plan = Plan::choose(query);
        let next = Some(match &plan {
            Plan::Index(scan) => ScanRequest::Index {
                index: scan.index.clone(),
                lower: scan.lower.clone(),
                upper: scan.upper.clone(),
                reverse: scan.reverse,
                limit: SCAN_BATCH_ROWS,
            },
            Plan::Collection { ordered } => ScanRequest::Collection {
                after_id: if *ordered {
                    Plan::collection_start(query)
                } else {
                    None
                },
                limit: SCAN_BATCH_ROWS,
            },
        });
        let mut execution = Execution {
            query,
            plan,
            next,
            ordered: Vec::new(),
            best: BinaryHeap::new(),
            pending: VecDeque::new(),
            batch: None,
            resume: None,
            looked_up: LookedUp::default(),
            needed: Vec::new(),
        };
        execution.size_next_batch();
        execution
    }

    /// The plan chosen.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What to do next.
    pub fn step(&self) -> Step<'_> {
        if !self.needed.is_empty() {
            return Step::Lookup(self.needed.clone());
        }
        match &self.next {
            Some(request) => Step::Fetch(request),
            None => Step::Done,
        }
    }

    /// Takes the rows the store fetched for the last request.
    pub fn accept(&mut self, rows: Vec<ScanRow>) {
        let Some(request) = self.next.take() else {
            return;
        };
        let requested = match &request {
            ScanRequest::Index { limit, .. } | ScanRequest::Collection { limit, .. } => *limit,
        };
        let exhausted = rows.len() < requested;
        self.pending.extend(rows);
        self.batch = Some((request, exhausted));
        self.judge_pending();
    }

    /// Takes a document the read rule looked up (`None`: it does not exist).
    pub fn supply(&mut self, key: DocKey, body: Option<serde_json::Value>) {
        self.needed.retain(|k| *k != key);
        self.looked_up.supply(key, body);
        if self.needed.is_empty() {
            self.judge_pending();
        }
    }

    /// Judges pending rows in order until one needs a lookup or the page is
    /// full; then decides the next request.
    fn judge_pending(&mut self) {
        let wanted = self.query.limit + 1;
        while let Some(row) = self.pending.pop_front() {
            if !self.query.filter_matches(&row.doc.body) {
                self.resume = Some(Resume::of(&row));
                continue;
            }
            let key = self.query.sort_key(&row.doc);
            if !self.query.is_after_cursor(&key) {
                self.resume = Some(Resume::of(&row));
                continue;
            }
            match self.looked_up.verdict(&self.query.scope, &row.doc.body) {
                Err(keys) => {
                    self.pending.push_front(row);
                    self.needed = keys;
                    return;
                }
                Ok(false) => {
                    self.resume = Some(Resume::of(&row));
                    continue;
                }
                Ok(true) => {}
            }
            self.resume = Some(Resume::of(&row));
            if self.plan.ordered() {
                self.ordered.push(Ranked(key, row.doc));
                if self.ordered.len() >= wanted {
                    self.pending.clear();
                    self.batch = None;
                    return;
                }
            } else {
                self.best.push(Ranked(key, row.doc));
                if self.best.len() > wanted {
                    self.best.pop();
                }
            }
        }
        let Some((request, exhausted)) = self.batch.take() else {
            return;
        };
        if exhausted {
            return;
        }
        self.next = match (request, self.resume.take()) {
            (
                ScanRequest::Index {
                    index,
                    lower,
                    upper,
                    reverse,
                    limit,
                },
                Some(Resume::Key(mut last)),
            ) => Some(if reverse {
                ScanRequest::Index {
                    index,
                    lower,
                    upper: Some(last),
                    reverse,
                    limit,
                }
            } else {
                last.push(0x00);
                ScanRequest::Index {
                    index,
                    lower: last.max(lower),
                    upper,
                    reverse,
                    limit,
                }
            }),
            (ScanRequest::Collection { limit, .. }, Some(Resume::Id(id))) => {
                Some(ScanRequest::Collection {
                    after_id: Some(id),
                    limit,
                })
            }
            _ => None,
        };
        self.size_next_batch();
    }

    /// An ordered scan needs only as many rows as the page still lacks
    /// (plus slack for rows the filter drops).
    fn size_next_batch(&mut self) {
        if !self.plan.ordered() {
            return;
        }
        let missing = self.query.limit + 1 - self.ordered.len();
        if let Some(ScanRequest::Index { limit, .. } | ScanRequest::Collection { limit, .. }) =
            &mut self.next
        {
            *limit = (missing + 16).min(SCAN_BATCH_ROWS);
        }
    }

    /// The page (the first `limit` results and, if there are more, the cursor after the
    /// last), and what the read rule looked up to decide it.
    pub fn finish(self) -> (Page, LookedUp) {
        let mut ranked = if self.plan.ordered() {
            self.ordered
        } else {
            self.best.into_sorted_vec()
        };
        let mut next_cursor = None;
        if ranked.len() > self.query.limit {
            ranked.truncate(self.query.limit);
            next_cursor = ranked.last().map(|r| self.query.cursor_after(&r.0));
        }
        (
            Page {
                documents: ranked.into_iter().map(|r| r.1).collect(),
                next_cursor,
            },
            self.looked_up,
        )
    }
}

enum Resume {
    Key(Vec<u8>),
    Id(String),
}

impl Resume {
    /// Where a scan goes on after `row`: its index key, or its id.
    fn of(row: &ScanRow) -> Resume {
        match &row.index_key {
            Some(key) => Resume::Key(key.clone()),
            None => Resume::Id(row.doc.id.clone()),
        }
    }
}
