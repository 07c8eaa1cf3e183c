//! Queries: a collection, a filter, an order, a limit and a page cursor.

use std::sync::Arc;

use protosync_schema::{Collection, DocKey, FieldPath, Lookup, Registry, Verdict};
use serde::Deserialize;
use serde_json::Value;

use crate::cursor::CursorSeal;
use crate::key::{KeyValue, encode_id};
use protosync_core::StoredDocument;

/// Page size when a query names none.
pub const DEFAULT_QUERY_LIMIT: usize = 100;
/// The largest page a query may ask for: bounds one response's size and the
/// memory a sorted scan holds.
pub const MAX_QUERY_LIMIT: usize = 1_000;
/// Conditions in one filter: filters are evaluated per document on scans.
pub const MAX_FILTER_CONDITIONS: usize = 32;
/// Values in one `in` list.
pub const MAX_IN_VALUES: usize = 256;
/// Fields in one `orderBy`.
pub const MAX_ORDER_FIELDS: usize = 8;

/// A query as it arrives over the API (proto3 JSON names).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryRequest {
    /// The collection to read.
    pub collection: String,
    /// Conditions every result meets (all of them); default none. At most
    /// [`MAX_FILTER_CONDITIONS`].
    #[serde(default)]
    pub filter: Vec<ConditionRequest>,
    /// Fields to order by, then by id; default none (id order). At most
    /// [`MAX_ORDER_FIELDS`].
    #[serde(default)]
    pub order_by: Vec<OrderRequest>,
    /// Page size: 1 to [`MAX_QUERY_LIMIT`]; default [`DEFAULT_QUERY_LIMIT`].
    #[serde(default)]
    pub limit: Option<u64>,
    /// The `nextCursor` of the previous page of this same query; default: the first page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One condition of a [`QueryRequest`]'s filter: `{"field", "op", "value"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionRequest {
    /// A dotted path of field names (`priority`, `owner.id`) to a comparable scalar.
    pub field: String,
    /// One of `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`.
    pub op: String,
    /// The value to compare with, in the field's proto3 JSON form; for `in`, an array of
    /// 1 to [`MAX_IN_VALUES`] of them.
    pub value: Value,
}

/// One field of a [`QueryRequest`]'s order: `{"field", "direction"?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// A dotted path of field names to a comparable scalar.
    pub field: String,
    /// `asc` or `desc`, in any case; default `asc`.
    #[serde(default)]
    pub direction: Option<String>,
}

/// Why a query was refused before it reached a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `UNKNOWN_COLLECTION`: the collection is not in the schema.
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    /// `INVALID_QUERY`: a field, operator, value or limit does not fit the collection;
    /// the message names which, with its position (`filter[1]`).
    #[error("{0}")]
    Invalid(String),
    /// `INVALID_CURSOR`: the cursor was not sealed by this database for this query's
    /// collection and order.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
}

/// A condition's operator. Values compare in the field's type; a missing field is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`: equal (null equals only null).
    Eq,
    /// `!=`: not equal.
    Ne,
    /// `<`: less than; never matches null.
    Lt,
    /// `<=`: at most; never matches null.
    Le,
    /// `>`: greater than; never matches null.
    Gt,
    /// `>=`: at least; never matches null.
    Ge,
    /// `in`: equal to one of the values.
    In,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "in" => Op::In,
            _ => return None,
        })
    }
}

/// Which way an order field sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first (nulls first, as the smallest value).
    Asc,
    /// Largest first.
    Desc,
}

/// One `field op value` condition, with values already typed by the field.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The field compared, resolved against the collection's message.
    pub field: FieldPath,
    /// How it is compared.
    pub op: Op,
    /// One value, or the list of an `in`.
    pub values: Vec<KeyValue>,
}

impl Condition {
    /// Whether `doc` satisfies the condition. A missing field is null: it
    /// equals only null, and no range condition matches it.
    pub fn matches(&self, doc: &Value) -> bool {
        let actual = KeyValue::of_field(&self.field, doc);
        let value = &self.values[0];
        let ordered = || actual != KeyValue::Null && *value != KeyValue::Null;
        let cmp = || actual.compare(value);
        match self.op {
            Op::Eq => cmp().is_eq(),
            Op::Ne => cmp().is_ne(),
            Op::Lt => ordered() && cmp().is_lt(),
            Op::Le => ordered() && cmp().is_le(),
            Op::Gt => ordered() && cmp().is_gt(),
            Op::Ge => ordered() && cmp().is_ge(),
            Op::In => self.values.iter().any(|v| actual.compare(v).is_eq()),
        }
    }
}

/// One field of a compiled order.
#[derive(Debug, Clone)]
pub struct OrderField {
    /// The field sorted by.
    pub field: FieldPath,
    /// Which way.
    pub direction: Direction,
}

/// Which documents a reader may see. Every read is built with one and
/// there is no default, so a read that forgot its rules does not compile:
/// part of the query so every path that reads (stores, live subscriptions)
/// filters the same way.
#[derive(Clone)]
pub enum ReadScope {
    /// Every document: a trusted service, already checked against the
    /// collections it may use.
    Everything,
    /// The documents the collection's read rule lets one reader see.
    Rule(Arc<dyn ReadRule>),
}

/// A read rule bound to one reader.
pub trait ReadRule: Send + Sync {
    /// Whether the reader sees a document with `body` (canonical JSON);
    /// `lookups` answers for the documents the rule looks up (canonical
    /// JSON too, or [`Lookup::Unknown`] when not loaded).
    fn verdict(&self, body: &Value, lookups: &mut dyn FnMut(&DocKey) -> Lookup) -> Verdict;

    /// Whether the rule looks up other documents at all.
    fn looks_up(&self) -> bool;
}

impl ReadScope {
    /// Whether a reader with this scope sees `body`, the documents its rule
    /// looks up answered from `lookups`.
    pub fn verdict(&self, body: &Value, lookups: &mut dyn FnMut(&DocKey) -> Lookup) -> Verdict {
        match self {
            ReadScope::Everything => Verdict::Allow,
            ReadScope::Rule(rule) => rule.verdict(body, lookups),
        }
    }

    /// Whether deciding may need documents other than the one read.
    pub fn looks_up(&self) -> bool {
        matches!(self, ReadScope::Rule(rule) if rule.looks_up())
    }
}

impl std::fmt::Debug for ReadScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadScope::Everything => f.write_str("Everything"),
            ReadScope::Rule(_) => f.write_str("Rule(..)"),
        }
    }
}

/// The documents one read's rule evaluations looked up, loaded in the
/// read's own snapshot: shared by every document the read checks, and kept
/// by live views to tell which commits can change what a reader sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookedUp {
    /// Canonical bodies; `None`: no such document.
    pub documents: std::collections::BTreeMap<DocKey, Option<Value>>,
}

impl LookedUp {
    /// The verdict of `scope` on `body` with what is loaded: `Err` with the
    /// keys to load first.
    pub fn verdict(&self, scope: &ReadScope, body: &Value) -> Result<bool, Vec<DocKey>> {
        let verdict = scope.verdict(body, &mut |key| match self.documents.get(key) {
            Some(Some(doc)) => Lookup::Found(doc.clone()),
            Some(None) => Lookup::Absent,
            None => Lookup::Unknown,
        });
        match verdict {
            Verdict::Allow => Ok(true),
            Verdict::Deny => Ok(false),
            Verdict::Needs(keys) => Err(keys),
        }
    }

    /// Records a loaded document (or its absence).
    pub fn supply(&mut self, key: DocKey, body: Option<Value>) {
        self.documents.insert(key, body);
    }
}

/// A compiled query, checked against the schema.
#[derive(Debug, Clone)]
pub struct Query {
    /// The collection read.
    pub collection: Arc<Collection>,
    /// Conditions every result meets.
    pub filter: Vec<Condition>,
    /// Order fields; ties (and an empty order) are broken by id.
    pub order: Vec<OrderField>,
    /// Page size, 1 to [`MAX_QUERY_LIMIT`].
    pub limit: usize,
    /// The sort key of the last document of the previous page.
    pub after: Option<Vec<u8>>,
    /// What the reader may see of the collection.
    pub scope: ReadScope,
    /// Seals the cursors this query hands out and opens the one it got.
    pub seal: CursorSeal,
}

impl Query {
    /// Checks `request` against the schema, for a reader who sees `scope`.
    pub fn compile(
        registry: &Registry,
        request: &QueryRequest,
        seal: &CursorSeal,
        scope: ReadScope,
    ) -> Result<Query, QueryError> {
        let collection = registry
            .collection(&request.collection)
            .ok_or_else(|| QueryError::UnknownCollection(request.collection.clone()))?
            .clone();
        let invalid = QueryError::Invalid;
        if request.filter.len() > MAX_FILTER_CONDITIONS {
            return Err(invalid(format!(
                "a filter has at most {MAX_FILTER_CONDITIONS} conditions"
            )));
        }
        if request.order_by.len() > MAX_ORDER_FIELDS {
            return Err(invalid(format!(
                "orderBy has at most {MAX_ORDER_FIELDS} fields"
            )));
        }
        let mut filter = Vec::with_capacity(request.filter.len());
        for (i, c) in request.filter.iter().enumerate() {
            let field = FieldPath::resolve(&collection.message, &c.field)
                .map_err(|e| invalid(format!("filter[{i}]: {e}")))?;
            let op = Op::parse(&c.op).ok_or_else(|| {
                invalid(format!(
                    "filter[{i}]: unknown op {:?} (use ==, !=, <, <=, >, >=, in)",
                    c.op
                ))
            })?;
            let typed = |v: &Value| {
                KeyValue::from_json(&field.ty, v)
                    .map_err(|e| invalid(format!("filter[{i}] on `{field}`: {e}")))
            };
            let values = if op == Op::In {
                let list = c.value.as_array().ok_or_else(|| {
                    invalid(format!("filter[{i}]: `in` takes an array of values"))
                })?;
                if list.is_empty() || list.len() > MAX_IN_VALUES {
                    return Err(invalid(format!(
                        "filter[{i}]: `in` takes 1 to {MAX_IN_VALUES} values"
                    )));
                }
                list.iter().map(typed).collect::<Result<_, _>>()?
            } else {
                vec![typed(&c.value)?]
            };
            filter.push(Condition { field, op, values });
        }
        let mut order = Vec::with_capacity(request.order_by.len());
        for (i, o) in request.order_by.iter().enumerate() {
            let field = FieldPath::resolve(&collection.message, &o.field)
                .map_err(|e| invalid(format!("orderBy[{i}]: {e}")))?;
            let direction = match o
                .direction
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("asc") => Direction::Asc,
                Some("desc") => Direction::Desc,
                Some(other) => {
                    return Err(invalid(format!(
                        "orderBy[{i}]: direction {other:?} is not asc or desc"
                    )));
                }
            };
            order.push(OrderField { field, direction });
        }
        let limit = match request.limit {
            None => DEFAULT_QUERY_LIMIT,
            Some(0) => return Err(invalid("limit must be at least 1".into())),
            Some(n) if n as usize > MAX_QUERY_LIMIT => {
                return Err(invalid(format!(
                    "limit {n} is above the maximum of {MAX_QUERY_LIMIT}"
                )));
            }
            Some(n) => n as usize,
        };
        let mut query = Query {
            collection,
            filter,
            order,
            limit,
            after: None,
            scope,
            seal: seal.clone(),
        };
        if let Some(cursor) = &request.cursor {
            query.after = Some(query.seal.open(query.order_fingerprint(), cursor)?);
        }
        Ok(query)
    }

    /// Whether `body` passes the filter (the read scope is judged apart,
    /// since it may need documents looked up: see [`LookedUp`]).
    pub fn filter_matches(&self, body: &Value) -> bool {
        self.filter.iter().all(|c| c.matches(body))
    }

    /// Ties are broken by id, in the direction of the last order field.
    pub fn id_descending(&self) -> bool {
        self.order
            .last()
            .is_some_and(|o| o.direction == Direction::Desc)
    }

    /// The key that orders results: order fields, then id, each in its
    /// direction. Results are sorted by ascending sort key.
    pub fn sort_key(&self, doc: &StoredDocument) -> Vec<u8> {
        self.sort_key_of(&doc.id, &doc.body)
    }

    /// [`Query::sort_key`] of a document given by id and body.
    pub fn sort_key_of(&self, id: &str, body: &Value) -> Vec<u8> {
        let mut key = Vec::new();
        for o in &self.order {
            KeyValue::of_field(&o.field, body)
                .encode_directed(o.direction == Direction::Desc, &mut key);
        }
        encode_id(id, self.id_descending(), &mut key);
        key
    }

    /// Whether `doc` comes after the cursor (always, without a cursor).
    pub fn is_after_cursor(&self, sort_key: &[u8]) -> bool {
        self.after.as_deref().is_none_or(|after| sort_key > after)
    }

    /// The opaque cursor that continues after the document with `sort_key`.
    pub fn cursor_after(&self, sort_key: &[u8]) -> String {
        self.seal.seal(self.order_fingerprint(), sort_key)
    }

    /// FNV-1a of the collection and order: a cursor only fits the order that made it.
    fn order_fingerprint(&self) -> u64 {
        let mut text = self.collection.name.clone();
        for o in &self.order {
            text.push_str(&format!("|{}:{:?}", o.field, o.direction));
        }
        text.bytes().fold(0xcbf29ce484222325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
    }
}
