//! Rules checked against the schema when it loads, so a misspelled field or
//! a comparison that can never hold is a schema error with its place in the
//! `.proto` file, not a rule that silently denies everything at run time.
//!
//! What is checked, walking the compiled expression:
//! - variables: `auth`, `doc`, `prev`, `now` and the variables of macros
//!   (`list.all(x, …)`);
//! - fields of `doc`, `prev` and of documents looked up with a literal
//!   collection name (`get("members", id).role`), against the messages'
//!   proto field names, nested messages and maps included;
//! - the collection names given to `get` and `exists`;
//! - function names, against CEL's standard functions;
//! - comparisons of a field with a literal of another JSON type (rules see
//!   documents as proto3 JSON: an `int64` is a string there).
//!
//! `auth` is whatever the token carries, so nothing below it is checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::collection::Collection;
use crate::rules::{LOOKUP_FUNCTIONS, Rule};

/// CEL's standard functions and methods that rules may call.
const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "timestamp",
    "duration",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

/// A problem with a rule, at a byte offset of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleProblem {
    pub offset: usize,
    pub message: String,
}

/// What an expression is, as far as the schema tells.
#[derive(Debug, Clone)]
enum Ty {
    Message(MessageDescriptor),
    /// A JSON scalar, with the proto type it comes from (for messages).
    Number(String),
    Text(String),
    Bool(String),
    List(Box<Ty>),
    Map(Box<Ty>),
    Null,
    /// Not known here (claims, results of functions, macro variables).
    Dyn,
}

impl Ty {
    fn describe(&self) -> String {
        match self {
            Ty::Message(m) => format!("a {} message", m.full_name()),
            Ty::Number(from) => format!("a number ({from})"),
            Ty::Text(from) => format!("a string ({from})"),
            Ty::Bool(from) => format!("a bool ({from})"),
            Ty::List(_) => "a list".into(),
            Ty::Map(_) => "a map".into(),
            Ty::Null => "null".into(),
            Ty::Dyn => "anything".into(),
        }
    }

    /// Whether values of these types can ever compare equal or be ordered.
    fn comparable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, _) | (_, Ty::Dyn) | (Ty::Null, _) | (_, Ty::Null) => true,
            (Ty::Number(_), Ty::Number(_))
            | (Ty::Text(_), Ty::Text(_))
            | (Ty::Bool(_), Ty::Bool(_))
            | (Ty::List(_), Ty::List(_))
            | (Ty::Map(_), Ty::Map(_))
            | (Ty::Map(_), Ty::Message(_))
            | (Ty::Message(_), Ty::Map(_)) => true,
            (Ty::Message(a), Ty::Message(b)) => a.full_name() == b.full_name(),
            _ => false,
        }
    }
}

struct Checker<'a> {
    /// `None` checks variables only (a rule compiled on its own).
    collection: Option<&'a MessageDescriptor>,
    /// An action's allow rule: `collection` is the request message, seen as
    /// `args`, and there is no `doc`, `prev` or lookup.
    action: bool,
    collections: &'a BTreeMap<String, Arc<Collection>>,
    source_info: &'a cel::common::ast::SourceInfo,
    /// Variables bound by the macros around the expression being checked.
    bound: Vec<String>,
}

/// Checks `rule`, written for documents of `collection`.
pub(crate) fn check(
    rule: &Rule,
    collection: &MessageDescriptor,
    collections: &BTreeMap<String, Arc<Collection>>,
) -> Result<(), RuleProblem> {
    let program = rule.program();
    let mut checker = Checker {
        collection: Some(collection),
        action: false,
        collections,
        source_info: program.source_info(),
        bound: Vec::new(),
    };
    checker.ty(program.expression()).map(|_| ())
}

/// Checks an action's allow rule, over `auth`, `args` (of the rpc's
/// `request` message) and `now`.
pub(crate) fn check_action(rule: &Rule, request: &MessageDescriptor) -> Result<(), RuleProblem> {
    let collections = BTreeMap::new();
    let program = rule.program();
    let mut checker = Checker {
        collection: Some(request),
        action: true,
        collections: &collections,
        source_info: program.source_info(),
        bound: Vec::new(),
    };
    checker.ty(program.expression()).map(|_| ())
}

/// Checks that `program` uses only the rules' variables (and the ones its
/// macros bind).
pub(crate) fn check_variables(program: &cel::Program) -> Result<(), String> {
    let collections = BTreeMap::new();
    let mut checker = Checker {
        collection: None,
        action: false,
        collections: &collections,
        source_info: program.source_info(),
        bound: Vec::new(),
    };
    match checker.ty(program.expression()) {
        Err(problem) if problem.message.starts_with("unknown variable") => Err(problem.message),
        _ => Ok(()),
    }
}

impl Checker<'_> {
    fn problem(&self, expr: &IdedExpr, message: String) -> RuleProblem {
        let offset = self
            .source_info
            .offset_for(expr.id)
            .map_or(0, |(start, _)| start as usize);
        RuleProblem { offset, message }
    }

    fn ty(&mut self, expr: &IdedExpr) -> Result<Ty, RuleProblem> {
        Ok(match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => {
                    Ty::Number("a literal".into())
                }
                LiteralValue::String(_) => Ty::Text("a literal".into()),
                LiteralValue::Boolean(_) => Ty::Bool("a literal".into()),
                LiteralValue::Null => Ty::Null,
                _ => Ty::Dyn,
            },
            Expr::Ident(name) => self.variable(expr, name)?,
            Expr::Select(select) => {
                let operand = self.ty(&select.operand)?;
                let field = self.field(expr, &operand, &select.field)?;
                if select.test {
                    Ty::Bool("has()".into())
                } else {
                    field
                }
            }
            Expr::Call(call) => self.call(expr, call)?,
            Expr::Comprehension(comprehension) => {
                self.ty(&comprehension.iter_range)?;
                self.ty(&comprehension.accu_init)?;
                let bound = self.bound.len();
                self.bound.push(comprehension.iter_var.clone());
                self.bound.extend(comprehension.iter_var2.clone());
                self.bound.push(comprehension.accu_var.clone());
                self.ty(&comprehension.loop_cond)?;
                self.ty(&comprehension.loop_step)?;
                let result = self.ty(&comprehension.result);
                self.bound.truncate(bound);
                result?;
                Ty::Dyn
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.ty(element)?;
                }
                Ty::List(Box::new(Ty::Dyn))
            }
            Expr::Map(cel::common::ast::MapExpr { entries })
            | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.ty(&e.key)?;
                            self.ty(&e.value)?;
                        }
                        EntryExpr::StructField(f) => {
                            self.ty(&f.value)?;
                        }
                    }
                }
                Ty::Map(Box::new(Ty::Dyn))
            }
            Expr::Unspecified => Ty::Dyn,
        })
    }

    fn variable(&self, expr: &IdedExpr, name: &str) -> Result<Ty, RuleProblem> {
        Ok(match name {
            "args" if self.action => self.collection.map_or(Ty::Dyn, |m| Ty::Message(m.clone())),
            "doc" | "prev" if !self.action => {
                self.collection.map_or(Ty::Dyn, |m| Ty::Message(m.clone()))
            }
            // Compiled on its own (no schema yet): either kind of rule.
            "args" if self.collection.is_none() => Ty::Dyn,
            "auth" | "now" => Ty::Dyn,
            // Type names, for `type(x) == int`.
            "int" | "uint" | "double" | "string" | "bool" | "bytes" | "list" | "map"
            | "null_type" | "type" | "timestamp" | "duration" => Ty::Dyn,
            _ if self.bound.iter().any(|b| b == name) => Ty::Dyn,
            _ => {
                let seen = if self.action {
                    "action rules see auth, args and now"
                } else {
                    "rules see auth, doc, prev and now"
                };
                return Err(self.problem(expr, format!("unknown variable `{name}` ({seen})")));
            }
        })
    }

    fn field(&self, expr: &IdedExpr, operand: &Ty, name: &str) -> Result<Ty, RuleProblem> {
        match operand {
            Ty::Message(message) => match message.get_field_by_name(name) {
                Some(field) => Ok(field_ty(&field)),
                None => {
                    let known: Vec<String> =
                        message.fields().map(|f| f.name().to_owned()).collect();
                    let hint = message
                        .fields()
                        .find(|f| f.json_name() == name)
                        .map(|f| format!(" (rules use proto field names: `{}`)", f.name()))
                        .unwrap_or_default();
                    Err(self.problem(
                        expr,
                        format!(
                            "unknown field `{name}` of {}{hint}; its fields are: {}",
                            message.full_name(),
                            known.join(", ")
                        ),
                    ))
                }
            },
            Ty::Map(value) => Ok((**value).clone()),
            Ty::Dyn | Ty::Null => Ok(Ty::Dyn),
            other => Err(self.problem(
                expr,
                format!("`.{name}` on {}, which has no fields", other.describe()),
            )),
        }
    }

    fn call(
        &mut self,
        expr: &IdedExpr,
        call: &cel::common::ast::CallExpr,
    ) -> Result<Ty, RuleProblem> {
        let name = call.func_name.as_str();
        let target = match &call.target {
            Some(target) => Some(self.ty(target)?),
            None => None,
        };
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            args.push(self.ty(arg)?);
        }
        let operator = name.starts_with('_') || name.starts_with('@') || name.ends_with('_');
        if operator {
            if matches!(name, "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_")
                && let [a, b] = args.as_slice()
                && !a.comparable(b)
            {
                return Err(self.problem(
                    expr,
                    format!(
                        "compares {} with {}, which never {}",
                        a.describe(),
                        b.describe(),
                        if name == "_==_" || name == "_!=_" {
                            "compare equal"
                        } else {
                            "order"
                        }
                    ),
                ));
            }
            return Ok(match name {
                "_[_]" => match args.first() {
                    Some(Ty::List(element)) => (**element).clone(),
                    Some(Ty::Map(value)) => (**value).clone(),
                    _ => Ty::Dyn,
                },
                "_&&_" | "_||_" | "!_" | "@in" | "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_"
                | "_>=_" => Ty::Bool("a condition".into()),
                _ => Ty::Dyn,
            });
        }
        if self.collection.is_none() {
            return Ok(Ty::Dyn);
        }
        if target.is_none() && LOOKUP_FUNCTIONS.contains(&name) && self.action {
            return Err(self.problem(
                expr,
                format!("`{name}`: action rules cannot look up documents"),
            ));
        }
        if target.is_none() && LOOKUP_FUNCTIONS.contains(&name) {
            return self.lookup(expr, call, name);
        }
        if !STANDARD_FUNCTIONS.contains(&name) {
            let mut known: Vec<&str> = STANDARD_FUNCTIONS.to_vec();
            known.extend(LOOKUP_FUNCTIONS);
            return Err(self.problem(
                expr,
                format!(
                    "unknown function `{name}`; rules may call: {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(match name {
            "size" | "int" | "uint" | "double" => Ty::Number("a function".into()),
            "contains" | "startsWith" | "endsWith" | "bool" => Ty::Bool("a function".into()),
            "string" => Ty::Text("a function".into()),
            _ => Ty::Dyn,
        })
    }

    /// `get(collection, id)` / `exists(collection, id)`.
    fn lookup(
        &self,
        expr: &IdedExpr,
        call: &cel::common::ast::CallExpr,
        name: &str,
    ) -> Result<Ty, RuleProblem> {
        if call.args.len() != 2 {
            return Err(self.problem(
                expr,
                format!("`{name}` takes a collection name and a document id"),
            ));
        }
        let result = |collection: Option<&Arc<Collection>>| match (name, collection) {
            ("exists", _) => Ty::Bool("exists()".into()),
            (_, Some(c)) => Ty::Message(c.message.clone()),
            (_, None) => Ty::Dyn,
        };
        match &call.args[0].expr {
            Expr::Literal(LiteralValue::String(collection)) => {
                let collection: &str = collection;
                match self.collections.get(collection) {
                    Some(c) => Ok(result(Some(c))),
                    None => Err(self.problem(
                        &call.args[0],
                        format!(
                            "`{name}` of unknown collection `{collection}`; the collections are: {}",
                            self.collections.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )),
                }
            }
            _ => Ok(result(None)),
        }
    }
}

/// What rules see of a field: its proto3 JSON form.
fn field_ty(field: &FieldDescriptor) -> Ty {
    let element = scalar_ty(field);
    if field.is_map() {
        let value = match field.kind() {
            Kind::Message(entry) => scalar_ty(&entry.map_entry_value_field()),
            _ => Ty::Dyn,
        };
        Ty::Map(Box::new(value))
    } else if field.is_list() {
        Ty::List(Box::new(element))
    } else {
        element
    }
}

fn scalar_ty(field: &FieldDescriptor) -> Ty {
    let from = |what: &str| format!("field `{}` is {what}", field.name());
    match field.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Ty::Number(from("int32")),
        Kind::Uint32 | Kind::Fixed32 => Ty::Number(from("uint32")),
        Kind::Float | Kind::Double => Ty::Number(from("a floating-point number")),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => Ty::Text(
            from("a 64-bit integer, a decimal string in proto3 JSON; use int(…)"),
        ),
        Kind::Bool => Ty::Bool(from("bool")),
        Kind::String => Ty::Text(from("string")),
        Kind::Bytes => Ty::Text(from("bytes, base64 in proto3 JSON")),
        Kind::Enum(e) => Ty::Text(from(&format!("enum {}, its value names", e.full_name()))),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask" => {
                Ty::Text(from(&format!("{}, a string in proto3 JSON", m.full_name())))
            }
            "google.protobuf.BoolValue" => Ty::Bool(from("a BoolValue")),
            "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value" => Ty::Text(from(m.full_name())),
            "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue" => Ty::Number(from(m.full_name())),
            name if name.starts_with("google.protobuf.") => Ty::Dyn,
            _ => Ty::Message(m),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function the checker lets through is one CEL really has.
    #[test]
    fn the_allowed_functions_exist() {
        let calls = [
            "size('ab') == 2",
            "'ab'.contains('a')",
            "'ab'.startsWith('a')",
            "'ab'.endsWith('b')",
            "int('1') == 1",
            "uint(1) == 1u",
            "double(1) == 1.0",
            "string(1) == '1'",
            "bytes('a') == b'a'",
            "bool('true')",
            "type(1) == int",
            "dyn(1) == 1",
            "timestamp('2026-01-01T00:00:00Z').getFullYear() == 2026",
            "duration('1h') > duration('1m')",
            "timestamp('2026-03-04T05:06:07.008Z').getMonth() == 2",
            "timestamp('2026-03-04T05:06:07.008Z').getDayOfYear() == 62",
            "timestamp('2026-03-04T05:06:07.008Z').getDayOfMonth() == 3",
            "timestamp('2026-03-04T05:06:07.008Z').getDate() == 4",
            "timestamp('2026-03-04T05:06:07.008Z').getDayOfWeek() == 3",
            "timestamp('2026-03-04T05:06:07.008Z').getHours() == 5",
            "timestamp('2026-03-04T05:06:07.008Z').getMinutes() == 6",
            "timestamp('2026-03-04T05:06:07.008Z').getSeconds() == 7",
            "timestamp('2026-03-04T05:06:07.008Z').getMilliseconds() == 8",
        ];
        let mut covered: Vec<&str> = Vec::new();
        for source in calls {
            let rule = Rule::compile(source).unwrap();
            assert!(
                rule.allows(
                    &serde_json::Value::Null,
                    &serde_json::Value::Null,
                    &serde_json::Value::Null
                ),
                "{source}"
            );
            covered.extend(STANDARD_FUNCTIONS.iter().filter(|f| source.contains(*f)));
        }
        for function in STANDARD_FUNCTIONS {
            assert!(covered.contains(function), "{function} is not tried");
        }
    }
}
