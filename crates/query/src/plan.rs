//! Choosing how to read a query: which index, which key range, and whether
//! the rows arrive already in the query's order.

use protosync_schema::IndexDef;

use crate::key::{KeyValue, decode_string, prefix_successor};
use crate::query::{Direction, Op, Query};

/// How a store reads the rows of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A key range of a declared index.
    Index(IndexScan),
    /// Every document of the collection, by ascending id.
    Collection {
        /// Rows arrive in the query's order (the query orders by id only).
        ordered: bool,
    },
}

/// A key range of one declared index, as [`Plan::choose`] picked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexScan {
    /// The declared index's name.
    pub index: String,
    /// Inclusive lower bound of index keys.
    pub lower: Vec<u8>,
    /// Exclusive upper bound; `None` is unbounded.
    pub upper: Option<Vec<u8>>,
    /// Read from the upper end down.
    pub reverse: bool,
    /// Rows arrive in the query's order, so the scan can stop at the limit.
    pub ordered: bool,
}

impl Plan {
    /// Whether rows arrive in the query's order, so the scan can stop at the limit.
    pub fn ordered(&self) -> bool {
        match self {
            Plan::Index(scan) => scan.ordered,
            Plan::Collection { ordered } => *ordered,
        }
    }

    /// The best plan for `query`: the index with the longest equality prefix,
    /// then a range on the next field, then one that yields the query's order.
    pub fn choose(query: &Query) -> Plan {
        let mut best: Option<((usize, bool, bool), IndexScan)> = None;
        for index in &query.collection.indexes {
            let candidate = plan_index(query, index);
            let useful =
                candidate.0.0 > 0 || candidate.0.1 || (candidate.0.2 && !query.order.is_empty());
            if useful && best.as_ref().is_none_or(|(score, _)| candidate.0 > *score) {
                best = Some(candidate);
            }
        }
        match best {
            Some((_, scan)) => Plan::Index(scan),
            None => Plan::Collection {
                ordered: query.order.is_empty(),
            },
        }
    }

    /// For an ordered collection scan continuing after a cursor: the id to start after.
    pub fn collection_start(query: &Query) -> Option<String> {
        query.after.as_deref().and_then(decode_string)
    }
}

/// Scores and builds the scan of one index: (equality prefix length, has a
/// range, yields the query's order).
fn plan_index(query: &Query, index: &IndexDef) -> ((usize, bool, bool), IndexScan) {
    let mut prefix = Vec::new();
    let mut eq_len = 0;
    for field in &index.fields {
        let eq = query
            .filter
            .iter()
            .find(|c| c.op == Op::Eq && c.field == *field);
        match eq {
            Some(c) => {
                c.values[0].encode(&mut prefix);
                eq_len += 1;
            }
            None => break,
        }
    }
    let mut lower = prefix.clone();
    let mut upper = prefix_successor(&prefix);
    let mut has_range = false;
    if let Some(next) = index.fields.get(eq_len) {
        for c in query
            .filter
            .iter()
            .filter(|c| c.field == *next && c.values[0] != KeyValue::Null)
        {
            let mut bound = prefix.clone();
            c.values[0].encode(&mut bound);
            let (new_lower, new_upper) = match c.op {
                Op::Gt => (prefix_successor(&bound), None),
                Op::Ge => (Some(bound), None),
                Op::Lt => (None, Some(bound)),
                Op::Le => (None, prefix_successor(&bound)),
                _ => continue,
            };
            has_range = true;
            if let Some(l) = new_lower {
                lower = lower.max(l);
            }
            if let Some(u) = new_upper {
                upper = Some(upper.map_or(u.clone(), |cur| cur.min(u)));
            }
        }
    }
    let rest = &index.fields[eq_len..];
    let directions: Vec<Direction> = query.order.iter().map(|o| o.direction).collect();
    let same_fields =
        query.order.len() == rest.len() && query.order.iter().zip(rest).all(|(o, f)| o.field == *f);
    let uniform = directions.windows(2).all(|w| w[0] == w[1]);
    let ordered = same_fields && uniform;
    let reverse = ordered && directions.first() == Some(&Direction::Desc);
    let mut scan = IndexScan {
        index: index.name.clone(),
        lower,
        upper,
        reverse,
        ordered,
    };
    if ordered && let Some(after) = &query.after {
        // The cursor is the sort key without the equality prefix; as an
        // index key it is prefix + (ascending form of the sort key).
        let mut key = prefix.clone();
        if reverse {
            key.extend(after.iter().map(|b| !b));
            scan.upper = Some(scan.upper.map_or(key.clone(), |u| u.min(key)));
        } else {
            key.extend_from_slice(after);
            key.push(0x00); // the smallest key after `key`
            scan.lower = scan.lower.max(key);
        }
    }
    ((eq_len, has_range, ordered), scan)
}
