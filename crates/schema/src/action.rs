//! An action as declared in the schema: an rpc of a proto service with the
//! `protosync.v1.action` option. This module reads the option, checks it and
//! validates arguments and results against the rpc's messages; forwarding
//! the call is the dispatcher's job, never this crate's.

use std::time::Duration;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, MessageDescriptor, MethodDescriptor};
use serde_json::Value;

use crate::error::{DocumentError, SchemaError};
use crate::rules::Rule;
use crate::validate::validate_message;

/// The extension that marks an rpc as an action.
pub(crate) const ACTION_EXTENSION: &str = "protosync.v1.action";

/// An action's timeout when its option gives none: 10 s, long enough for a
/// backend that calls a third-party API once, short enough that a client
/// waiting on a dead backend hears about it.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest timeout an action may declare: 5 minutes. A call holds a
/// slot of its connection's bound on concurrent calls for that long.
pub const MAX_ACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// One action of the schema.
#[derive(Debug, Clone)]
pub struct Action {
    /// `<full service name>/<Method>`, e.g. `inbox.v1.Inbox/Confirm`.
    pub name: String,
    /// The full name of its service, e.g. `inbox.v1.Inbox`.
    pub service: String,
    /// The method's name as declared, e.g. `Confirm`.
    pub method: String,
    /// The rpc's request message: the type of the arguments.
    pub request: MessageDescriptor,
    /// The rpc's response message: the type of the result.
    pub response: MessageDescriptor,
    /// The name of the config's backend that handles it.
    pub backend: String,
    /// Who may call it (`auth`, `args`, `now`); `None` denies end users.
    pub allow: Option<Rule>,
    /// How long the backend may take.
    pub timeout: Duration,
}

impl Action {
    /// Validates arguments and returns their canonical proto3 JSON.
    pub fn validate_args(&self, args: &Value) -> Result<Value, DocumentError> {
        validate_message(&self.request, args, "arguments")
    }

    /// Validates a backend's result and returns its canonical proto3 JSON.
    pub fn validate_result(&self, result: &Value) -> Result<Value, DocumentError> {
        validate_message(&self.response, result, "a result")
    }

    /// Canonical arguments as the allow rule sees them: proto field names.
    pub fn args_for_rule(&self, args: &Value) -> Value {
        crate::validate::proto_names(&self.request, args)
    }
}

/// Every action of the compiled schema, each checked.
pub(crate) fn find_actions(pool: &DescriptorPool) -> Result<Vec<Action>, SchemaError> {
    let Some(extension) = pool.get_extension_by_name(ACTION_EXTENSION) else {
        return Ok(Vec::new());
    };
    let mut actions = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            if let Some(action) = read_action(&method, &extension)? {
                actions.push(action);
            }
        }
    }
    Ok(actions)
}

fn read_action(
    method: &MethodDescriptor,
    extension: &ExtensionDescriptor,
) -> Result<Option<Action>, SchemaError> {
    let options = method.options();
    if !options.has_extension(extension) {
        return Ok(None);
    }
    let value = options.get_extension(extension);
    let Some(raw) = value.as_message() else {
        return Ok(None);
    };
    let name = format!("{}/{}", method.parent_service().full_name(), method.name());
    let problem = |problem: String| SchemaError::Action {
        action: name.clone(),
        problem,
    };
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(problem("an action cannot stream".into()));
    }
    let text = |field: &str| {
        raw.get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let backend = text("backend");
    if backend.trim().is_empty() {
        return Err(problem(
            "backend must name a [backends.NAME] of the server's config".into(),
        ));
    }
    if raw.has_field_by_name("schedule") {
        return Err(problem(
            "schedule is not served by this version of protosync; remove it".into(),
        ));
    }
    let timeout_ms = raw
        .get_field_by_name("timeout_ms")
        .and_then(|v| v.as_u32())
        .unwrap_or(0);
    let timeout = match timeout_ms {
        0 => DEFAULT_ACTION_TIMEOUT,
        ms => Duration::from_millis(ms.into()),
    };
    if timeout > MAX_ACTION_TIMEOUT {
        return Err(problem(format!(
            "timeout_ms {timeout_ms} is over the limit of {} ms",
            MAX_ACTION_TIMEOUT.as_millis()
        )));
    }
    let allow_text = text("allow");
    let allow = match allow_text.trim() {
        "" => None,
        source => Some(
            Rule::compile(source)
                .map_err(|e| problem(format!("allow rule `{source}` does not compile: {e}")))?,
        ),
    };
    if let Some(rule) = &allow {
        crate::rule_check::check_action(rule, &method.input())
            .map_err(|p| problem(format!("allow rule `{}`: {}", rule.source(), p.message)))?;
    }
    Ok(Some(Action {
        service: method.parent_service().full_name().to_owned(),
        method: method.name().to_owned(),
        request: method.input(),
        response: method.output(),
        backend: backend.trim().to_owned(),
        allow,
        timeout,
        name,
    }))
}
