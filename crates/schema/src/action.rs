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
    /// When the clock calls it, if it is scheduled.
    pub schedule: Option<ActionSchedule>,
    /// Which committed changes call it, if it is a trigger.
    pub trigger: Option<ActionTrigger>,
}

/// A trigger as declared: the dispatcher compiles the filter against the
/// collection and delivers each matching change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionTrigger {
    /// The collection whose changes it delivers.
    pub collection: String,
    /// The filter's conditions, as a query's `filter` JSON; `[]` for all.
    pub filter: Value,
}

/// A cron schedule with a seconds field, in a time zone: each tick calls the
/// action once per cluster (see the dispatcher's scheduler).
#[derive(Debug, Clone)]
pub struct ActionSchedule {
    /// The expression as written: six fields, the first is seconds.
    pub cron: String,
    schedule: cron::Schedule,
    /// Where the fields are read (`UTC` when the option leaves it empty).
    pub time_zone: chrono_tz::Tz,
    /// What happens to ticks missed while no node ran.
    pub catch_up: CatchUp,
}

/// What a schedule does with the ticks it missed while no node ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Missed ticks are not run; the next tick is the next one from now.
    Skip,
    /// The first missed tick is run once (with its own tick as the key),
    /// then the schedule goes on from now.
    Once,
}

impl ActionSchedule {
    /// The first tick strictly after `after_ms` (milliseconds since the
    /// epoch), as milliseconds since the epoch.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        use chrono::TimeZone as _;
        let after = self.time_zone.timestamp_millis_opt(after_ms).single()?;
        self.schedule
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis())
    }
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
    let text = |field: &str| text_field(raw, field);
    let backend = text("backend");
    if backend.trim().is_empty() {
        return Err(problem(
            "backend must name a [backends.NAME] of the server's config".into(),
        ));
    }
    let schedule = match raw.get_field_by_name("schedule") {
        Some(value) if raw.has_field_by_name("schedule") => {
            let Some(schedule) = value.as_message() else {
                return Err(problem("schedule must be a message".into()));
            };
            Some(read_schedule(schedule).map_err(problem)?)
        }
        _ => None,
    };
    let trigger = match raw.get_field_by_name("trigger") {
        Some(value) if raw.has_field_by_name("trigger") => {
            let Some(trigger) = value.as_message() else {
                return Err(problem("trigger must be a message".into()));
            };
            Some(read_trigger(trigger).map_err(problem)?)
        }
        _ => None,
    };
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
        schedule,
        trigger,
        name,
    }))
}

fn read_trigger(raw: &prost_reflect::DynamicMessage) -> Result<ActionTrigger, String> {
    let text = |field: &str| text_field(raw, field);
    let collection = text("collection").trim().to_owned();
    if collection.is_empty() {
        return Err("trigger collection must name a collection".into());
    }
    let filter = match text("filter").trim() {
        "" => Value::Array(Vec::new()),
        source => match serde_json::from_str::<Value>(source) {
            Ok(list @ Value::Array(_)) => list,
            _ => {
                return Err(format!(
                    "trigger filter {source:?} is not a JSON array of conditions"
                ));
            }
        },
    };
    Ok(ActionTrigger { collection, filter })
}

fn read_schedule(raw: &prost_reflect::DynamicMessage) -> Result<ActionSchedule, String> {
    let text = |field: &str| text_field(raw, field);
    let cron_text = text("cron").trim().to_owned();
    let fields = cron_text.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "schedule cron {cron_text:?} has {fields} fields; it needs 6: second minute hour day-of-month month day-of-week"
        ));
    }
    let schedule = cron_text
        .parse::<cron::Schedule>()
        .map_err(|e| format!("schedule cron {cron_text:?} does not parse: {e}"))?;
    let zone = text("time_zone");
    let time_zone = match zone.trim() {
        "" => chrono_tz::UTC,
        name => name.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("schedule time_zone {name:?} is not an IANA time zone (e.g. Europe/Paris)")
        })?,
    };
    let catch_up = match raw
        .get_field_by_name("catch_up")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0)
    {
        1 => CatchUp::Once,
        _ => CatchUp::Skip,
    };
    Ok(ActionSchedule {
        cron: cron_text,
        schedule,
        time_zone,
        catch_up,
    })
}

/// A string field of an option message; empty when unset.
fn text_field(raw: &prost_reflect::DynamicMessage, field: &str) -> String {
    raw.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
