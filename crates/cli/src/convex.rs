//! A Convex snapshot ZIP (`npx convex export`) as a source for
//! `protosync import`: `_tables/documents.jsonl` names the tables,
//! `<table>/documents.jsonl` holds one document a line, and the lines after
//! the first of `<table>/generated_schema.jsonl` say, per document id, which
//! values are int64 or bytes. `_components/<name>/` repeats that layout.
//! `_id` becomes the document id; `_creationTime` is dropped unless
//! `--field-map` names a field for it. Stored files (`_storage/`) are
//! counted and reported, not imported. The rows then go through the same
//! validation and batching as protosync's own format.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::import::{Sink, short_hex};

/// How Convex names become protosync names.
pub(crate) struct Mapping {
    /// `TABLE` or `COMPONENT/TABLE` → collection.
    tables: HashMap<String, String>,
    /// Convex field → proto JSON field: `TABLE.FIELD` for one table,
    /// `FIELD` for every table.
    fields: HashMap<String, String>,
}

impl Mapping {
    /// Reads `--table-map` and `--field-map` values (`FROM=TO` each).
    pub(crate) fn parse(tables: &[String], fields: &[String]) -> anyhow::Result<Mapping> {
        Ok(Mapping {
            tables: crate::import::pairs("--table-map", tables)?,
            fields: crate::import::pairs("--field-map", fields)?,
        })
    }

    /// The proto JSON name of a top-level Convex field of `table`.
    fn field<'a>(&'a self, table: &str, name: &'a str) -> Option<&'a str> {
        self.fields
            .get(&format!("{table}.{name}"))
            .or(self.fields.get(name))
            .map(String::as_str)
    }

    /// The collection for a table: mapped, else the same name if the
    /// schema has it, else its snake_case.
    fn collection(&self, component: &str, table: &str, sink: &Sink) -> String {
        let qualified = format!("{component}{table}");
        if let Some(to) = self.tables.get(&qualified).or(self.tables.get(table)) {
            return to.clone();
        }
        let snake = snake_case(table);
        if sink.registry.collection(table).is_none() && sink.registry.collection(&snake).is_some() {
            snake
        } else {
            table.to_owned()
        }
    }
}

/// `userProfiles` → `user_profiles`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Per document id, the dotted paths of values generated_schema.jsonl
/// marks with a type (`int64`, `bytes`, …).
type Overrides = HashMap<String, Vec<(String, String)>>;

/// Imports every table of the ZIP at `path` through `sink`.
pub(crate) async fn import(path: &Path, mapping: &Mapping, sink: &mut Sink) -> anyhow::Result<()> {
    let open = || File::open(path).with_context(|| format!("cannot read {}", path.display()));
    // The batches' idempotency keys name the snapshot by its content, so
    // importing the same ZIP again resumes and a different one does not.
    let mut hasher = Sha256::new();
    std::io::copy(&mut open()?, &mut hasher)?;
    let snapshot = short_hex(hasher);
    let mut archive = ZipArchive::new(BufReader::new(open()?))
        .with_context(|| format!("{} is not a ZIP file", path.display()))?;
    let mut components = vec![String::new()];
    components.extend(archive.file_names().filter_map(|name| {
        let rest = name.strip_prefix("_components/")?;
        let component = rest.strip_suffix("/_tables/documents.jsonl")?;
        Some(format!("_components/{component}/"))
    }));
    components.sort();
    let mut tables = Vec::new();
    for component in &components {
        let label = format!("{component}_tables/documents.jsonl");
        let mut names = String::new();
        match archive.by_name(&label) {
            Ok(mut entry) => entry
                .read_to_string(&mut names)
                .with_context(|| format!("cannot read {label}"))?,
            Err(_) => bail!(
                "{}: no {label}; is this a Convex snapshot export?",
                path.display()
            ),
        };
        for (index, line) in names.lines().enumerate() {
            let table: Value = serde_json::from_str(line)
                .with_context(|| format!("{label}:{}: not JSON", index + 1))?;
            let Some(name) = table.get("name").and_then(Value::as_str) else {
                bail!("{label}:{}: no \"name\"", index + 1);
            };
            let rows = match archive.by_name(&format!("{component}{name}/documents.jsonl")) {
                Ok(entry) => BufReader::new(entry).lines().count() as u64,
                Err(_) => 0, // an empty table has no documents file
            };
            tables.push((component.clone(), name.to_owned(), rows));
        }
    }
    sink.expect(tables.iter().map(|(_, _, rows)| rows).sum());
    for (component, table, rows) in tables {
        if rows == 0 {
            continue;
        }
        let overrides = overrides(
            &mut archive,
            &format!("{component}{table}/generated_schema.jsonl"),
        )?;
        let collection = mapping.collection(&component, &table, sink);
        let label = format!("{component}{table}/documents.jsonl");
        let key = format!("import:convex:{snapshot}:{label}");
        let entry = archive.by_name(&label)?;
        sink.table(
            &label,
            &collection,
            &key,
            BufReader::new(entry).lines(),
            1,
            |line| document(line, &table, &overrides, mapping),
        )
        .await?;
    }
    if let Ok(entry) = archive.by_name("_storage/documents.jsonl") {
        let files = BufReader::new(entry).lines().count();
        sink.note(&format!(
            "_storage: {files} stored files are not imported (protosync has no file storage)"
        ));
    }
    Ok(())
}

/// Reads a generated_schema.jsonl: its first line is the inferred shape
/// (not needed: the proto schema decides); each later line is
/// `{"<document id>": {"<field path>": "<type>"}}`.
fn overrides(archive: &mut ZipArchive<BufReader<File>>, label: &str) -> anyhow::Result<Overrides> {
    let mut out = Overrides::new();
    let Ok(entry) = archive.by_name(label) else {
        return Ok(out);
    };
    let mut text = String::new();
    BufReader::new(entry).read_to_string(&mut text)?;
    for (index, line) in text.lines().enumerate().skip(1) {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{label}:{}: not JSON", index + 1))?;
        let Value::Object(ids) = value else {
            bail!(
                "{label}:{}: expected {{\"<id>\": {{\"<field>\": \"<type>\"}}}}",
                index + 1
            );
        };
        for (id, fields) in ids {
            let Value::Object(fields) = fields else {
                bail!(
                    "{label}:{}: {id}: expected an object of field types",
                    index + 1
                );
            };
            let entry = out.entry(id).or_default();
            for (field, kind) in fields {
                entry.push((field, kind.as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    Ok(out)
}

/// One Convex document line → (id, proto JSON document), before validation.
fn document(
    line: &str,
    table: &str,
    overrides: &Overrides,
    mapping: &Mapping,
) -> Result<(String, Value), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("not a JSON object".into());
    };
    let Some(Value::String(id)) = fields.remove("_id") else {
        return Err("no \"_id\" string".into());
    };
    let created = fields.remove("_creationTime");
    for (path, kind) in overrides.get(&id).into_iter().flatten() {
        retype(&mut fields, path, kind).map_err(|e| format!("{id}: {path}: {e}"))?;
    }
    let mut doc: Map<String, Value> = fields
        .into_iter()
        .map(|(name, value)| {
            (
                mapping
                    .field(table, &name)
                    .map_or(name.clone(), str::to_owned),
                value,
            )
        })
        .collect();
    if let (Some(to), Some(ms)) = (
        mapping.field(table, "_creationTime"),
        created.as_ref().and_then(Value::as_f64),
    ) {
        let Some(at) = chrono::DateTime::from_timestamp_millis(ms as i64) else {
            return Err(format!("{id}: _creationTime {ms} is out of range"));
        };
        doc.insert(
            to.to_owned(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    Ok((id, Value::Object(doc)))
}

/// Puts a value generated_schema.jsonl marks as int64 or bytes into its
/// proto JSON form: int64 as a decimal string, bytes as the base64 string
/// the export already holds. Other types are left as they are.
fn retype(fields: &mut Map<String, Value>, path: &str, kind: &str) -> Result<(), String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut value = fields.get_mut(first);
    for part in parts {
        // Array elements are addressed by their index.
        value = value.and_then(|v| match part.parse::<usize>() {
            Ok(index) if v.is_array() => v.get_mut(index),
            _ => v.get_mut(part),
        });
    }
    let Some(value) = value else {
        return Err(format!("marked {kind} but absent"));
    };
    match (kind, &*value) {
        ("int64", Value::Number(n)) if n.is_i64() => *value = Value::String(n.to_string()),
        ("int64", Value::String(s)) if s.parse::<i64>().is_ok() => {}
        ("int64", other) => return Err(format!("marked int64 but {other} is not an integer")),
        ("bytes", Value::String(_)) => {}
        ("bytes", other) => return Err(format!("marked bytes but {other} is not a base64 string")),
        _ => {}
    }
    Ok(())
}
