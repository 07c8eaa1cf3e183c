//! Loading schemas: the example schema, collection options, indexes, rules and the errors
//! a bad schema gets.

use std::path::Path;

use protosync_schema::{FieldType, Registry, SchemaError};
use serde_json::json;

fn example() -> Registry {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schema");
    Registry::load_dir(&dir).expect("example schema loads")
}

const HEADER: &str = "syntax = \"proto3\";\npackage t;\nimport \"protosync/v1/options.proto\";\n";

fn compile(body: &str) -> Result<Registry, SchemaError> {
    let text = format!("{HEADER}{body}");
    Registry::from_sources(&[("t.proto", &text)])
}

#[test]
fn example_schema_declares_the_inbox_and_runtime_collections() {
    let registry = example();
    let names: Vec<&str> = registry.collections().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "codex_worker_summary",
            "feedback_entries",
            "proposed_actions",
            "run_summary",
            "work_items"
        ]
    );
    let work_items = registry.collection("work_items").unwrap();
    let feed = &work_items.indexes[0];
    assert_eq!(feed.name, "by_owner_feed");
    let fields: Vec<String> = feed
        .fields
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(fields, ["ownerId", "important", "priority"]);
    assert_eq!(feed.fields[2].ty, FieldType::Int);
    assert!(
        work_items
            .rules
            .read
            .as_ref()
            .unwrap()
            .source()
            .contains("auth.sub")
    );
    assert_eq!(
        registry
            .collection("run_summary")
            .unwrap()
            .id_field
            .as_ref()
            .unwrap()
            .to_string(),
        "runId"
    );
}

#[test]
fn fingerprint_is_stable_and_changes_with_the_schema() {
    assert_eq!(example().fingerprint(), example().fingerprint());
    let a =
        compile("message A { option (protosync.v1.collection) = { name: \"a\" }; string x = 1; }")
            .unwrap();
    let b =
        compile("message A { option (protosync.v1.collection) = { name: \"a\" }; string y = 1; }")
            .unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    let ruled = compile("message A { option (protosync.v1.collection) = { name: \"a\" read: \"true\" }; string x = 1; }").unwrap();
    assert_ne!(
        a.fingerprint(),
        ruled.fingerprint(),
        "options are part of the schema"
    );
}

#[test]
fn syntax_error_names_file_and_line() {
    let err = compile("message A {\n  string x = ;\n}")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.proto:5:"), "{err}");
}

#[test]
fn unknown_type_names_file_and_line() {
    let err = compile("message A {\n  Missing x = 1;\n}")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.proto:5:"), "{err}");
    assert!(err.contains("Missing"), "{err}");
}

#[test]
fn bad_collection_options_are_refused_with_the_reason() {
    let cases = [
        (
            "message A { option (protosync.v1.collection) = { name: \"Bad-Name\" }; }",
            "must be lower case",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" }; }\nmessage B { option (protosync.v1.collection) = { name: \"a\" }; }",
            "already used by message t.A",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" indexes: { name: \"i\" fields: [\"nope\"] } }; }",
            "index i: unknown field `nope`",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" indexes: { name: \"i\" fields: [\"tags\"] } }; repeated string tags = 1; }",
            "repeated or map field",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" id_field: \"n\" }; int32 n = 1; }",
            "must be a top-level string field",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" read: \"doc.x ==\" }; string x = 1; }",
            "read rule `doc.x ==` does not compile",
        ),
        (
            "message A { option (protosync.v1.collection) = { name: \"a\" }; string at = 1 [(protosync.v1.field).server_time = SERVER_TIME_CREATE]; }",
            "field `at`: server_time needs a singular google.protobuf.Timestamp field",
        ),
    ];
    for (schema, expected) in cases {
        let err = compile(schema).unwrap_err().to_string();
        assert!(err.contains(expected), "{schema}\n=> {err}");
    }
}

#[test]
fn schema_directory_errors_are_clear() {
    let empty = tempfile::tempdir().unwrap();
    let err = Registry::load_dir(empty.path()).unwrap_err().to_string();
    assert!(err.contains("contains no .proto files"), "{err}");
    let err = Registry::load_dir(Path::new("/nonexistent/schema"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read schema directory"), "{err}");
}

#[test]
fn valid_document_becomes_canonical_proto3_json() {
    let registry = example();
    let runs = registry.collection("run_summary").unwrap();
    let doc = runs
        .validate(
            "r1",
            &json!({"owner_id": "u1", "status": 2, "eventCount": 7, "updatedAt": "2026-01-02T03:04:05Z", "labels": {"env": "prod"}}),
        )
        .unwrap();
    assert_eq!(doc["ownerId"], "u1");
    assert_eq!(doc["status"], "RUN_STATUS_RUNNING");
    assert_eq!(doc["eventCount"], "7", "int64 is a string in proto3 JSON");
    assert_eq!(doc["lastEventSeq"], "0", "defaults are present");
    assert_eq!(doc["runId"], "r1", "the id field is filled in");
    assert_eq!(doc["labels"]["env"], "prod");
    assert!(doc.get("startedAt").is_none(), "unset messages stay absent");
}

#[test]
fn invalid_documents_name_the_field() {
    let registry = example();
    let items = registry.collection("work_items").unwrap();
    let runs = registry.collection("run_summary").unwrap();
    let cases = [
        (
            items,
            json!({"title": "x", "bogus": 1}),
            "bogus",
            "unknown field",
        ),
        (
            items,
            json!({"priority": "high"}),
            "priority",
            "expected an integer",
        ),
        (
            items,
            json!({"priority": 4294967296_i64}),
            "priority",
            "out of range",
        ),
        (
            items,
            json!({"important": "yes"}),
            "important",
            "expected a boolean",
        ),
        (
            items,
            json!({"source": "SOURCE_FAX"}),
            "source",
            "unknown value \"SOURCE_FAX\"",
        ),
        (
            items,
            json!({"sender": {"name": 5}}),
            "sender.name",
            "expected a string",
        ),
        (
            items,
            json!({"labels": ["a", 3]}),
            "labels[1]",
            "expected a string",
        ),
        (items, json!({"receivedAt": "yesterday"}), "receivedAt", ""),
        (
            items,
            json!({"receivedAt": "2026-01-05T09:30:00.1234567891Z"}),
            "receivedAt",
            "at most 9 fractional digits",
        ),
        (
            items,
            json!({"receivedAt": "2026-01-05t09:30:00z"}),
            "receivedAt",
            "upper-case `T` and `Z`",
        ),
        (
            runs,
            json!({"eventCount": "99999999999999999999"}),
            "eventCount",
            "out of range",
        ),
        (
            runs,
            json!({"labels": {"k": 1}}),
            "labels[\"k\"]",
            "expected a string",
        ),
        (
            runs,
            json!({"runId": "other"}),
            "runId",
            "must equal the id",
        ),
        (
            items,
            json!({"sender": {"name": "a\u{0}b"}}),
            "sender.name",
            "U+0000",
        ),
        (
            items,
            json!({"labels": ["ok", "\u{0}"]}),
            "labels[1]",
            "U+0000",
        ),
    ];
    for (collection, body, path, message) in cases {
        let err = collection.validate("r1", &body).unwrap_err();
        assert_eq!(err.path, path, "{body} => {err}");
        assert!(err.message.contains(message), "{body} => {err}");
    }
    let err = items.validate("x", &json!([1, 2])).unwrap_err();
    assert!(err.message.contains("must be a JSON object"), "{err}");
    let err = items
        .validate_patch(&json!({"title": "nul \u{0}"}))
        .unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.message.contains("U+0000")),
        ("title", true),
        "{err}"
    );
}

#[test]
fn patch_merges_top_level_fields_and_clears_cleared_optionals() {
    let registry = example();
    let actions = registry.collection("proposed_actions").unwrap();
    let stored = actions
        .validate(
            "a1",
            &json!({"ownerId": "u", "status": "STATUS_PREVIEW", "resultRef": "m-1"}),
        )
        .unwrap();
    let patch = actions
        .validate_patch(&json!({"status": "STATUS_CONFIRMED", "result_ref": null}))
        .unwrap();
    let merged = patch.apply(&stored);
    assert_eq!(merged["status"], "STATUS_CONFIRMED");
    assert_eq!(merged["ownerId"], "u");
    assert!(merged.get("resultRef").is_none());
    let err = actions
        .validate_patch(&json!({"status": "NOPE"}))
        .unwrap_err();
    assert_eq!(err.path, "status");
}

#[test]
fn rules_see_proto_field_names() {
    let registry = example();
    let items = registry.collection("work_items").unwrap();
    let doc = items
        .validate("w", &json!({"ownerId": "u1", "sender": {"name": "Ann"}}))
        .unwrap();
    let seen = items.with_proto_names(&doc);
    assert_eq!(seen["owner_id"], "u1");
    assert_eq!(seen["sender"]["name"], "Ann");
    let read = items.rules.read.as_ref().unwrap();
    assert!(read.allows(&json!({"sub": "u1"}), &seen, &serde_json::Value::Null));
    assert!(!read.allows(&json!({"sub": "u2"}), &seen, &serde_json::Value::Null));
}

#[test]
fn rules_see_absent_fields_at_their_proto3_defaults() {
    // A document stored before `edited`, `count`, `tags` and `state` were added.
    let registry = compile(
        "enum State { STATE_UNSPECIFIED = 0; STATE_OPEN = 1; }
         message Note {
           option (protosync.v1.collection) = { name: \"notes\" read: \"!doc.edited && int(doc.count) == 0 && size(doc.tags) == 0 && doc.state == 'STATE_UNSPECIFIED' && !has(doc.due)\" };
           string title = 1; bool edited = 2; int64 count = 3; repeated string tags = 4; State state = 5;
           optional int32 due = 6;
         }",
    )
    .unwrap();
    let notes = registry.collection("notes").unwrap();
    let seen = notes.with_proto_names(&json!({"title": "old"}));
    assert_eq!(
        seen,
        json!({"title": "old", "edited": false, "count": "0", "tags": [], "state": "STATE_UNSPECIFIED"}),
        "an optional field keeps its presence"
    );
    let read = notes.rules.read.as_ref().unwrap();
    assert!(read.allows(&json!({"sub": "u1"}), &seen, &serde_json::Value::Null));
}

/// A chat app's schema: members of a channel may read and write its messages.
const CHAT: &str = r#"
message Channel {
  option (protosync.v1.collection) = { name: "channels" read: "auth != null" };
  string title = 1;
  bool archived = 2;
}
message Member {
  option (protosync.v1.collection) = { name: "members" read: "auth != null && doc.user_id == auth.sub" };
  string channel_id = 1;
  string user_id = 2;
  int64 joined_at = 3;
}
message Message {
  option (protosync.v1.collection) = {
    name: "messages"
    read: "auth != null && exists('members', doc.channel_id + ':' + auth.sub)"
    write: "auth != null && doc.author_id == auth.sub && exists('members', doc.channel_id + ':' + auth.sub) && !get('channels', doc.channel_id).archived"
  };
  string channel_id = 1;
  string author_id = 2;
  string body = 3;
}
"#;

#[test]
fn rules_with_lookups_and_macros_load() {
    let registry = compile(CHAT).unwrap();
    let messages = registry.collection("messages").unwrap();
    assert!(messages.rules.read.as_ref().unwrap().looks_up());
    compile(
        "message A { option (protosync.v1.collection) = { name: \"a\" read: \"doc.tags.all(t, t != '') && [1, 2].exists(i, i == 1)\" }; repeated string tags = 1; }",
    )
    .unwrap();
}

/// A wrong rule is a schema error at its place in the file, saying what is
/// wrong and what would be right.
#[test]
fn rules_are_checked_against_the_schema_with_their_place() {
    let wrong = |from: &str, to: &str| {
        let body = CHAT.replace(from, to);
        assert_ne!(body, CHAT, "{from}");
        compile(&body).unwrap_err().to_string()
    };
    let misspelled = wrong("doc.author_id == auth.sub", "doc.autor_id == auth.sub");
    assert!(
        misspelled.starts_with(
            "t.proto:20:32: collection messages: write rule: unknown field `autor_id` of t.Message"
        ),
        "{misspelled}"
    );
    assert!(
        misspelled.contains("channel_id, author_id, body"),
        "{misspelled}"
    );
    let json_name = wrong("doc.author_id == auth.sub", "doc.authorId == auth.sub");
    assert!(
        json_name.contains("rules use proto field names: `author_id`"),
        "{json_name}"
    );
    let looked_up = wrong(
        "get('channels', doc.channel_id).archived",
        "get('channels', doc.channel_id).archive",
    );
    assert!(
        looked_up.contains("unknown field `archive` of t.Channel"),
        "{looked_up}"
    );
    let collection = wrong(
        "exists('members', doc.channel_id + ':' + auth.sub)\"\n",
        "exists('member', doc.channel_id + ':' + auth.sub)\"\n",
    );
    assert!(
        collection.contains("`exists` of unknown collection `member`; the collections are: channels, members, messages"),
        "{collection}"
    );
    let function = wrong(
        "doc.author_id == auth.sub &&",
        "doc.author_id.lowerAscii() == auth.sub &&",
    );
    assert!(
        function.contains("unknown function `lowerAscii`"),
        "{function}"
    );
    let types = wrong("doc.user_id == auth.sub", "doc.joined_at > 5");
    assert!(
        types.contains("compares a string (field `joined_at` is a 64-bit integer, a decimal string in proto3 JSON; use int(…)) with a number"),
        "{types}"
    );
    let archived = wrong(
        "!get('channels', doc.channel_id).archived",
        "get('channels', doc.channel_id).archived == 'no'",
    );
    assert!(
        archived.contains("compares a bool (field `archived` is bool) with a string"),
        "{archived}"
    );
}

const INBOX: &str = r#"
message ConfirmRequest { string command_id = 1; int64 attempt = 2; }
message ConfirmResponse { string status = 1; }
service Inbox {
  rpc Confirm(ConfirmRequest) returns (ConfirmResponse) {
    option (protosync.v1.action) = {
      backend: "app"
      allow: "auth != null && args.command_id.startsWith(auth.sub)"
      timeout_ms: 2500
    };
  }
  rpc Plain(ConfirmRequest) returns (ConfirmResponse);
}
"#;

#[test]
fn actions_are_rpcs_with_the_action_option_named_service_slash_method() {
    let registry = compile(INBOX).unwrap();
    let names: Vec<&str> = registry.actions().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["t.Inbox/Confirm"],
        "an rpc without the option is no action"
    );
    let confirm = registry.action("t.Inbox/Confirm").unwrap();
    assert_eq!(
        (confirm.service.as_str(), confirm.method.as_str()),
        ("t.Inbox", "Confirm")
    );
    assert_eq!(confirm.backend, "app");
    assert_eq!(confirm.timeout, std::time::Duration::from_millis(2500));
    let rule = confirm.allow.as_ref().unwrap();
    let args = confirm.args_for_rule(
        &confirm
            .validate_args(&json!({"commandId": "ann-1"}))
            .unwrap(),
    );
    assert!(rule.allows_call(&json!({"sub": "ann"}), &args));
    assert!(!rule.allows_call(&json!({"sub": "bob"}), &args));
    assert!(!rule.allows_call(&serde_json::Value::Null, &args));
}

#[test]
fn action_arguments_and_results_are_validated_naming_the_field() {
    let registry = compile(INBOX).unwrap();
    let confirm = registry.action("t.Inbox/Confirm").unwrap();
    assert_eq!(
        confirm.validate_args(&json!({"attempt": 3})).unwrap(),
        json!({"commandId": "", "attempt": "3"}),
        "canonical proto3 JSON, defaults included"
    );
    let wrong = confirm.validate_args(&json!({"attempt": "x"})).unwrap_err();
    assert_eq!(wrong.path, "attempt");
    let unknown = confirm.validate_args(&json!({"nope": 1})).unwrap_err();
    assert_eq!(unknown.path, "nope");
    assert!(
        confirm
            .validate_args(&json!([1]))
            .unwrap_err()
            .message
            .contains("arguments must be a JSON object")
    );
    assert_eq!(
        confirm
            .validate_result(&json!({"status": 1}))
            .unwrap_err()
            .path,
        "status"
    );
}

#[test]
fn bad_action_options_are_refused_at_load() {
    let case = |option: &str| {
        let body = format!(
            "message A {{ string x = 1; }}\nservice S {{ rpc M(A) returns (A) {{ option (protosync.v1.action) = {{ {option} }}; }} }}"
        );
        compile(&body).unwrap_err().to_string()
    };
    assert!(
        case(r#"allow: "true""#).contains("backend must name"),
        "no backend"
    );
    assert!(
        case(r#"backend: "b" allow: "args.y == 1""#).contains("`y`"),
        "unknown field"
    );
    assert!(
        case(r#"backend: "b" allow: "doc.x == 1""#).contains("action rules see auth, args and now")
    );
    assert!(case(r#"backend: "b" allow: "exists('a', args.x)""#).contains("cannot look up"));
    assert!(case(r#"backend: "b" timeout_ms: 400000"#).contains("over the limit"));
    assert!(case(r#"backend: "b" schedule: { cron: "* * * * *" }"#).contains("it needs 6"));
    assert!(case(r#"backend: "b" schedule: { cron: "x * * * * *" }"#).contains("does not parse"));
    assert!(
        case(r#"backend: "b" schedule: { cron: "* * * * * *" time_zone: "Mars/Olympus" }"#)
            .contains("IANA")
    );
    assert!(case(r#"backend: "b" trigger: { filter: "[]" }"#).contains("must name a collection"));
    assert!(
        case(r#"backend: "b" trigger: { collection: "b" filter: "{}" }"#)
            .contains("not a JSON array of conditions")
    );
    // And a collection rule still cannot see `args`.
    let collection = compile(
        r#"message B { option (protosync.v1.collection) = { name: "b" read: "args.x == 1" }; string x = 1; }"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        collection.contains("unknown variable `args`"),
        "{collection}"
    );
}

#[test]
fn a_schedule_ticks_in_its_time_zone() {
    let registry = compile(
        r#"message A { string x = 1; }
service S { rpc M(A) returns (A) { option (protosync.v1.action) = {
  backend: "b" schedule: { cron: "0 30 9 * * *" time_zone: "Europe/Paris" catch_up: CATCH_UP_ONCE } }; } }"#,
    )
    .unwrap();
    let schedule = registry.action("t.S/M").unwrap().schedule.as_ref().unwrap();
    assert_eq!(schedule.catch_up, protosync_schema::CatchUp::Once);
    // 2026-07-01T00:00:00Z: the next 09:30 in Paris (UTC+2 in summer) is 07:30Z.
    let midnight_utc = 1_782_864_000_000;
    assert_eq!(
        schedule.next_after(midnight_utc),
        Some(midnight_utc + 7 * 3_600_000 + 1_800_000)
    );
    let unscheduled = compile(
        r#"message A { string x = 1; } service S { rpc M(A) returns (A) { option (protosync.v1.action) = { backend: "b" }; } }"#,
    )
    .unwrap();
    assert!(unscheduled.action("t.S/M").unwrap().schedule.is_none());
}
