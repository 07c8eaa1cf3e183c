//! Access rules: CEL expressions over `auth`, `doc`, `prev` and `now`, that
//! may look up other documents with `get(collection, id)` and
//! `exists(collection, id)`.
//!
//! The one module that knows the CEL crate (its minor versions break the
//! API): rules are compiled once, at schema load, and evaluated here.
//!
//! Lookups never do I/O here. A rule is evaluated against the documents its
//! caller has already loaded; a lookup of one that is not loaded yet stops
//! the evaluation, and [`Verdict::Needs`] tells the caller which documents
//! to load (in its own transaction or snapshot) before it evaluates again.
//! So the same rule runs inside a commit (lookups see the commit's own
//! state), in a store's query scan and in the live path, each with its own
//! notion of "current".

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// Documents one evaluation of a rule may look up: enough for a membership
/// check and a parent document or two; each lookup is a store read on the
/// paths that check access, so the bound keeps a rule's cost known.
pub const MAX_LOOKUPS_PER_EVALUATION: usize = 8;

/// A document a rule looked up: its collection and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey {
    /// The collection's name, as in the schema.
    pub collection: String,
    /// The document id.
    pub id: String,
}

/// What a caller knows of a document a rule looks up.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The document, with proto field names (as rules see documents).
    Found(Value),
    /// There is no such document (or the collection is unknown).
    Absent,
    /// Not loaded yet: the evaluation stops and asks for it.
    Unknown,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The rule evaluated to `true`.
    Allow,
    /// Anything else: `false`, an error (a missing field, a type mismatch),
    /// or more lookups than [`MAX_LOOKUPS_PER_EVALUATION`]. A rule that
    /// cannot be evaluated must not grant anything.
    Deny,
    /// Load these documents and evaluate again.
    Needs(Vec<DocKey>),
}

/// What a rule sees, besides the documents it looks up.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    /// The caller's claims; `null` when anonymous.
    pub auth: &'a Value,
    /// The document (as a write leaves it; for a delete, as it was).
    pub doc: &'a Value,
    /// The stored document before a write; `null` for reads and creates.
    pub prev: &'a Value,
    /// The time of the request, milliseconds since the Unix epoch.
    pub now_ms: i64,
}

/// A compiled rule and its source.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<cel::Program>,
    looks_up: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rule({:?})", self.source)
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Rule {}

/// The lookup functions rules may call, beside CEL's standard ones.
pub(crate) const LOOKUP_FUNCTIONS: [&str; 2] = ["get", "exists"];

impl Rule {
    /// Compiles `source`; an unknown variable is an error. (Fields and
    /// functions are checked against the schema by `rule_check`.)
    pub fn compile(source: &str) -> Result<Rule, String> {
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        crate::rule_check::check_variables(&program)?;
        let references = program.references();
        let looks_up = LOOKUP_FUNCTIONS.iter().any(|f| references.has_function(f));
        Ok(Rule {
            source: source.to_owned(),
            program: Arc::new(program),
            looks_up,
        })
    }

    /// The rule as written in the schema.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled program, for the checks made at schema load.
    pub(crate) fn program(&self) -> &cel::Program {
        &self.program
    }

    /// Whether the rule calls `get` or `exists`.
    pub fn looks_up(&self) -> bool {
        self.looks_up
    }

    /// Evaluates the rule. `lookups` answers for the documents it looks up;
    /// an [`Lookup::Unknown`] answer ends the evaluation with
    /// [`Verdict::Needs`].
    pub fn evaluate(
        &self,
        input: RuleInput<'_>,
        lookups: &mut dyn FnMut(&DocKey) -> Lookup,
    ) -> Verdict {
        let mut known: HashMap<DocKey, Option<Value>> = HashMap::new();
        loop {
            let (result, wanted) = self.run(input, std::mem::take(&mut known));
            known = result.known;
            if wanted.is_empty() {
                return if result.allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                };
            }
            let mut missing = Vec::new();
            for key in wanted {
                if known.contains_key(&key) {
                    continue;
                }
                if known.len() + missing.len() >= MAX_LOOKUPS_PER_EVALUATION {
                    return Verdict::Deny;
                }
                match lookups(&key) {
                    Lookup::Found(doc) => {
                        known.insert(key, Some(doc));
                    }
                    Lookup::Absent => {
                        known.insert(key, None);
                    }
                    Lookup::Unknown => missing.push(key),
                }
            }
            if !missing.is_empty() {
                return Verdict::Needs(missing);
            }
        }
    }

    /// Evaluates without lookups: for rules that do none, and for tests.
    pub fn allows(&self, auth: &Value, doc: &Value, prev: &Value) -> bool {
        let input = RuleInput {
            auth,
            doc,
            prev,
            now_ms: now_ms(),
        };
        self.evaluate(input, &mut |_| Lookup::Absent) == Verdict::Allow
    }

    /// Whether an action's allow rule lets a caller with `auth` call it with
    /// `args` (proto field names). Action rules look nothing up (checked at
    /// load); an error denies.
    pub fn allows_call(&self, auth: &Value, args: &Value) -> bool {
        STANDARD_CONTEXT.with(|standard| {
            let mut context = standard.new_inner_scope();
            if context.add_variable("auth", auth).is_err()
                || context.add_variable("args", args).is_err()
            {
                return false;
            }
            context.add_variable_from_value("now", timestamp(now_ms()));
            matches!(self.program.execute(&context), Ok(cel::Value::Bool(true)))
        })
    }

    /// One run over the documents in `known`; the keys it wanted and did not
    /// find come back beside the result.
    fn run(
        &self,
        input: RuleInput<'_>,
        known: HashMap<DocKey, Option<Value>>,
    ) -> (Run, Vec<DocKey>) {
        FRAME.with(|frame| {
            *frame.borrow_mut() = Some(Frame {
                known,
                wanted: Vec::new(),
            });
        });
        let allowed = STANDARD_CONTEXT.with(|standard| {
            let mut context = standard.new_inner_scope();
            for (name, value) in [
                ("auth", input.auth),
                ("doc", input.doc),
                ("prev", input.prev),
            ] {
                if context.add_variable(name, value).is_err() {
                    return false;
                }
            }
            context.add_variable_from_value("now", timestamp(input.now_ms));
            matches!(self.program.execute(&context), Ok(cel::Value::Bool(true)))
        });
        let frame = FRAME
            .with(|frame| frame.borrow_mut().take())
            .unwrap_or_else(|| Frame {
                known: HashMap::new(),
                wanted: Vec::new(),
            });
        (
            Run {
                allowed,
                known: frame.known,
            },
            frame.wanted,
        )
    }
}

struct Run {
    allowed: bool,
    known: HashMap<DocKey, Option<Value>>,
}

/// The documents of the evaluation running on this thread: CEL's functions
/// are `'static`, so `get` and `exists` find the evaluation's documents here
/// rather than in a closure. An evaluation is synchronous and sets and takes
/// its frame around the run.
struct Frame {
    known: HashMap<DocKey, Option<Value>>,
    wanted: Vec<DocKey>,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
    /// CEL's standard functions and the lookups, built once per thread:
    /// building them is most of the cost of a fresh context, and rules run
    /// once per document per subscriber.
    static STANDARD_CONTEXT: cel::Context<'static, 'static> = standard_context();
}

fn standard_context() -> cel::Context<'static, 'static> {
    let mut context = cel::Context::default();
    // Neither name is a CEL standard function, so these cannot conflict.
    let _ = context.add_function(
        "get",
        |cel::extractors::Arguments(args): cel::extractors::Arguments| {
            lookup("get", &args).map(|doc| match doc {
                Some(doc) => cel::to_value(doc).unwrap_or(cel::Value::Null),
                None => cel::Value::Null,
            })
        },
    );
    let _ = context.add_function(
        "exists",
        |cel::extractors::Arguments(args): cel::extractors::Arguments| {
            lookup("exists", &args).map(|doc| cel::Value::Bool(doc.is_some()))
        },
    );
    context
}

/// The document `args` (collection, id) names, from this thread's frame.
fn lookup(function: &str, args: &[cel::Value]) -> Result<Option<Value>, cel::ExecutionError> {
    let (Some(cel::Value::String(collection)), Some(cel::Value::String(id)), 2) =
        (args.first(), args.get(1), args.len())
    else {
        return Err(cel::ExecutionError::function_error(
            function,
            "takes a collection name and a document id, both strings",
        ));
    };
    let key = DocKey {
        collection: collection.to_string(),
        id: id.to_string(),
    };
    FRAME.with(|frame| {
        let mut frame = frame.borrow_mut();
        let Some(frame) = frame.as_mut() else {
            return Err(cel::ExecutionError::function_error(
                function,
                "no evaluation",
            ));
        };
        match frame.known.get(&key) {
            Some(doc) => Ok(doc.clone()),
            None => {
                frame.wanted.push(key);
                // Stops this run; the caller loads the document and runs again.
                Err(cel::ExecutionError::function_error(
                    function,
                    "not loaded yet",
                ))
            }
        }
    })
}

fn timestamp(ms: i64) -> cel::Value {
    use chrono::TimeZone;
    match chrono::Utc.timestamp_millis_opt(ms).single() {
        Some(t) => cel::Value::Timestamp(t.fixed_offset()),
        None => cel::Value::Null,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_see_auth_doc_and_prev_and_deny_on_error() {
        let owner = Rule::compile("auth != null && doc.owner_id == auth.sub").unwrap();
        assert!(owner.allows(
            &json!({"sub": "u1"}),
            &json!({"owner_id": "u1"}),
            &Value::Null
        ));
        assert!(!owner.allows(
            &json!({"sub": "u2"}),
            &json!({"owner_id": "u1"}),
            &Value::Null
        ));
        assert!(!owner.allows(&Value::Null, &json!({"owner_id": "u1"}), &Value::Null));
        let keep_owner = Rule::compile("prev == null || prev.owner == doc.owner").unwrap();
        assert!(keep_owner.allows(&Value::Null, &json!({"owner": "a"}), &Value::Null));
        assert!(!keep_owner.allows(&Value::Null, &json!({"owner": "b"}), &json!({"owner": "a"})));
        let missing = Rule::compile("doc.nope == 1").unwrap();
        assert!(
            !missing.allows(&Value::Null, &json!({}), &Value::Null),
            "an evaluation error denies"
        );
        assert!(Rule::compile("doc.x ==").is_err());
        assert!(
            Rule::compile("user.id == doc.id")
                .unwrap_err()
                .contains("unknown variable `user`")
        );
    }

    fn input<'a>(auth: &'a Value, doc: &'a Value) -> RuleInput<'a> {
        RuleInput {
            auth,
            doc,
            prev: &Value::Null,
            now_ms: 1_800_000_000_000,
        }
    }

    /// A lookup asks for what it needs, then decides on what it was given.
    #[test]
    fn lookups_ask_for_documents_then_decide_on_them() {
        let member = Rule::compile(
            r#"exists("members", doc.channel_id + ":" + auth.sub) && get("channels", doc.channel_id).open"#,
        )
        .unwrap();
        assert!(member.looks_up());
        let (auth, doc) = (json!({"sub": "ann"}), json!({"channel_id": "c1"}));
        let key = |c: &str, id: &str| DocKey {
            collection: c.into(),
            id: id.into(),
        };
        let verdict = member.evaluate(input(&auth, &doc), &mut |_| Lookup::Unknown);
        // `&&` evaluates both sides (CEL's errors commute), so both at once.
        assert_eq!(
            verdict,
            Verdict::Needs(vec![key("members", "c1:ann"), key("channels", "c1")])
        );
        let mut asked = Vec::new();
        let mut store = |k: &DocKey| {
            asked.push(k.clone());
            match (k.collection.as_str(), k.id.as_str()) {
                ("members", "c1:ann") => Lookup::Found(json!({})),
                ("channels", "c1") => Lookup::Found(json!({"open": true})),
                _ => Lookup::Absent,
            }
        };
        assert_eq!(
            member.evaluate(input(&auth, &doc), &mut store),
            Verdict::Allow
        );
        assert_eq!(asked, [key("members", "c1:ann"), key("channels", "c1")]);
        let bob = json!({"sub": "bob"});
        assert_eq!(
            member.evaluate(input(&bob, &doc), &mut |k| match k.collection.as_str() {
                "channels" => Lookup::Found(json!({"open": true})),
                _ => Lookup::Absent,
            }),
            Verdict::Deny,
            "not a member"
        );
    }

    #[test]
    fn a_rule_that_looks_up_too_much_is_denied() {
        let greedy =
            Rule::compile(r#"[1,2,3,4,5,6,7,8,9].all(i, exists("members", string(i)))"#).unwrap();
        let mut lookups = 0;
        let verdict = greedy.evaluate(input(&Value::Null, &json!({})), &mut |_| {
            lookups += 1;
            Lookup::Found(json!({}))
        });
        assert_eq!(verdict, Verdict::Deny);
        assert_eq!(lookups, MAX_LOOKUPS_PER_EVALUATION);
    }

    #[test]
    fn now_is_the_request_time() {
        let recent = Rule::compile(r#"timestamp(doc.sent_at) <= now"#).unwrap();
        let (auth, early, late) = (
            Value::Null,
            json!({"sent_at": "2026-01-15T08:00:00Z"}),
            json!({"sent_at": "2030-01-15T08:00:00Z"}),
        );
        let mut none = |_: &DocKey| Lookup::Absent;
        assert_eq!(
            recent.evaluate(input(&auth, &early), &mut none),
            Verdict::Allow
        );
        assert_eq!(
            recent.evaluate(input(&auth, &late), &mut none),
            Verdict::Deny
        );
    }
}
