//! Access rules: CEL expressions over `auth`, `doc` and `prev`.
//!
//! The one module that knows the CEL crate (its minor versions break the
//! API): rules are compiled once, at schema load, and evaluated here.

use std::sync::Arc;

use serde_json::Value;

/// A compiled rule and its source.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<cel::Program>,
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

/// The variables a rule may use.
const VARIABLES: [&str; 3] = ["auth", "doc", "prev"];

impl Rule {
    pub fn compile(source: &str) -> Result<Rule, String> {
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        let references = program.references();
        if let Some(unknown) = references
            .variables()
            .into_iter()
            .find(|v| !VARIABLES.contains(v))
        {
            return Err(format!(
                "unknown variable `{unknown}` (rules see auth, doc and prev)"
            ));
        }
        Ok(Rule {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True only when the rule evaluates to `true`; an error (a missing
    /// field, a type mismatch) denies, as a rule that cannot be evaluated
    /// must not grant anything.
    pub fn allows(&self, auth: &Value, doc: &Value, prev: &Value) -> bool {
        STANDARD_CONTEXT.with(|standard| {
            let mut context = standard.new_inner_scope();
            for (name, value) in [("auth", auth), ("doc", doc), ("prev", prev)] {
                if context.add_variable(name, value).is_err() {
                    return false;
                }
            }
            matches!(self.program.execute(&context), Ok(cel::Value::Bool(true)))
        })
    }
}

thread_local! {
    /// CEL's standard functions, built once per thread: building them is
    /// most of the cost of a fresh context, and rules run once per document
    /// per subscriber.
    static STANDARD_CONTEXT: cel::Context<'static, 'static> = cel::Context::default();
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
}
