//! proto3 defaults on every store: a document stored before fields were
//! added reads, in filters, orders and declared indexes, as if it held
//! each new field without presence at its default; fields with presence
//! (`optional`, messages) stay missing.

use protosync_query::{Query, QueryRequest, ReadScope};
use protosync_schema::Registry;
use protosync_store::{Mutation, WriteAccess, WriteKind, WriteOp};
use serde_json::{Value, json};

use super::Harness;

const V1: &str = r#"syntax = "proto3"; package t; import "protosync/v1/options.proto";
message Item { option (protosync.v1.collection) = { name: "items" }; string name = 1; }"#;

/// V1 with a field of every scalar type, an enum, an `optional` and a
/// message added; some of them indexed.
const V2: &str = r#"syntax = "proto3"; package t; import "protosync/v1/options.proto";
enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; }
message Inner { string label = 1; }
message Item {
  option (protosync.v1.collection) = {
    name: "items"
    indexes: { name: "by_b" fields: ["b"] }
    indexes: { name: "by_i64" fields: ["i64"] }
    indexes: { name: "by_color_s" fields: ["color", "s"] }
    indexes: { name: "by_maybe" fields: ["maybe"] }
    indexes: { name: "by_label" fields: ["inner.label"] }
  };
  string name = 1;
  bool b = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 f32 = 9; fixed64 f64 = 10;
  sfixed32 sf32 = 11; sfixed64 sf64 = 12; float fl = 13; double db = 14;
  string s = 15; bytes by = 16; Color color = 17;
  optional int32 maybe = 18;
  Inner inner = 19;
}"#;

/// (field, its default, a value that is not it).
const SCALARS: &[(&str, &str, &str)] = &[
    ("b", "false", "true"),
    ("i32", "0", "-1"),
    ("i64", "\"0\"", "\"-1\""),
    ("u32", "0", "1"),
    ("u64", "\"0\"", "\"1\""),
    ("s32", "0", "-1"),
    ("s64", "\"0\"", "\"-1\""),
    ("f32", "0", "1"),
    ("f64", "\"0\"", "\"1\""),
    ("sf32", "0", "-1"),
    ("sf64", "\"0\"", "\"-1\""),
    ("fl", "0", "-1.5"),
    ("db", "0", "-1.5"),
    ("s", "\"\"", "\"x\""),
    ("by", "\"\"", "\"eA==\""),
    ("color", "\"COLOR_UNSPECIFIED\"", "\"COLOR_RED\""),
];

async fn write(h: &Harness, registry: &Registry, id: &str, body: Value) {
    let items = registry.collection("items").unwrap();
    let doc = items.validate(id, &body).unwrap();
    h.store
        .commit(Mutation {
            ops: vec![WriteOp {
                collection: items.clone(),
                id: id.into(),
                kind: WriteKind::Insert(doc),
                expected_version: None,
            }],
            idempotency: None,
            access: WriteAccess::Trusted,
            accepted_at_ms: 0,
            projection: None,
            audit: Default::default(),
        })
        .await
        .unwrap();
}

async fn ids(h: &Harness, registry: &Registry, request: Value) -> Vec<String> {
    let request: QueryRequest = serde_json::from_value(request).unwrap();
    let seal = protosync_query::CursorSeal::from_database_secret(&h.store.database_secret());
    let query = Query::compile(registry, &request, &seal, ReadScope::Everything).unwrap();
    let page = h.store.query(&query).await.unwrap().value;
    page.documents.into_iter().map(|d| d.id).collect()
}

async fn absent_fields_read_as_their_proto3_defaults(h: Harness) {
    let (v1, v2) = (
        Registry::from_sources(&[("t.proto", V1)]).unwrap(),
        Registry::from_sources(&[("t.proto", V2)]).unwrap(),
    );
    h.store.sync_indexes(&v1).await.unwrap();
    write(
        &h,
        &v1,
        "old",
        json!({"name": "stored before the fields existed"}),
    )
    .await;
    // The new indexes are built from the old document, as a restart does.
    h.store.sync_indexes(&v2).await.unwrap();
    write(
        &h,
        &v2,
        "zero",
        json!({"name": "every field at its default"}),
    )
    .await;
    let mut set: serde_json::Map<String, Value> = SCALARS
        .iter()
        .map(|(field, _, other)| ((*field).to_owned(), serde_json::from_str(other).unwrap()))
        .collect();
    set.insert("maybe".into(), json!(0));
    set.insert("inner".into(), json!({"label": ""}));
    write(&h, &v2, "set", Value::Object(set)).await;

    let filter = |field: &str, op: &str, value: Value| json!({"collection": "items", "filter": [{"field": field, "op": op, "value": value}]});
    for (field, default, other) in SCALARS {
        let (default, other): (Value, Value) = (
            serde_json::from_str(default).unwrap(),
            serde_json::from_str(other).unwrap(),
        );
        assert_eq!(
            ids(&h, &v2, filter(field, "==", default.clone())).await,
            ["old", "zero"],
            "{field} == {default}"
        );
        assert_eq!(
            ids(&h, &v2, filter(field, "!=", default.clone())).await,
            ["set"],
            "{field} != {default}"
        );
        assert_eq!(
            ids(&h, &v2, filter(field, "==", other.clone())).await,
            ["set"],
            "{field} == {other}"
        );
        assert!(
            ids(&h, &v2, filter(field, "==", Value::Null))
                .await
                .is_empty(),
            "{field} is never missing"
        );
        let ordered = ids(
            &h,
            &v2,
            json!({"collection": "items", "orderBy": [{"field": field}]}),
        )
        .await;
        let default_first = !matches!(
            *field,
            "i32" | "i64" | "s32" | "s64" | "sf32" | "sf64" | "fl" | "db"
        );
        let expected = if default_first {
            ["old", "zero", "set"]
        } else {
            ["set", "old", "zero"]
        };
        assert_eq!(ordered, expected, "order by {field}");
    }
    // Indexed prefixes and ranges agree with the default too.
    let both = json!({"collection": "items", "filter": [
        {"field": "color", "op": "==", "value": "COLOR_UNSPECIFIED"}, {"field": "s", "op": "==", "value": ""}]});
    assert_eq!(ids(&h, &v2, both).await, ["old", "zero"]);
    assert_eq!(ids(&h, &v2, filter("i64", "<", json!(0))).await, ["set"]);
    assert_eq!(
        ids(&h, &v2, filter("i64", ">=", json!(0))).await,
        ["old", "zero"]
    );

    // Fields with presence keep it: an unset `optional` or message is missing.
    assert_eq!(
        ids(&h, &v2, filter("maybe", "==", Value::Null)).await,
        ["old", "zero"]
    );
    assert_eq!(ids(&h, &v2, filter("maybe", "==", json!(0))).await, ["set"]);
    assert_eq!(
        ids(&h, &v2, filter("inner.label", "==", Value::Null)).await,
        ["old", "zero"]
    );
    assert_eq!(
        ids(&h, &v2, filter("inner.label", "==", json!(""))).await,
        ["set"]
    );
}

conformance!(absent_fields_read_as_their_proto3_defaults);
