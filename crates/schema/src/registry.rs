//! Compiling a schema directory and collecting its collections.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::Diagnostic;
use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use sha2::{Digest, Sha256};

use crate::action::{self, Action};
use crate::collection::{Collection, FieldPath, FieldType, IndexDef, Rules};
use crate::error::SchemaError;
use crate::options::{self, COLLECTION_EXTENSION, OPTIONS_PROTO, OPTIONS_PROTO_NAME};
use crate::rule_check;
use crate::rules::Rule;
use crate::server_time::{FIELD_EXTENSION, server_time_fields};

/// All collections of one schema, immutable once loaded.
#[derive(Debug, Clone)]
pub struct Registry {
    collections: BTreeMap<String, Arc<Collection>>,
    actions: BTreeMap<String, Arc<Action>>,
    fingerprint: String,
    pool: DescriptorPool,
    descriptor_set: Vec<u8>,
}

impl Registry {
    /// Compiles every `.proto` file under `dir` (imports resolve relative to
    /// `dir`; `protosync/v1/options.proto` and the well-known types are built in).
    pub fn load_dir(dir: &Path) -> Result<Registry, SchemaError> {
        let mut files = Vec::new();
        collect_proto_files(dir, dir, &mut files)?;
        if files.is_empty() {
            return Err(SchemaError::Empty {
                dir: dir.display().to_string(),
            });
        }
        files.sort();
        // Kept to point at a rule's place when the rule is wrong.
        let texts = files
            .iter()
            .filter_map(|f| Some((f.clone(), std::fs::read_to_string(dir.join(f)).ok()?)))
            .collect();
        let mut resolver = ChainFileResolver::new();
        resolver.add(IncludeFileResolver::new(dir.to_owned()));
        Registry::compile(resolver, &files, &texts)
    }

    /// Compiles in-memory sources, given as (file name, text) pairs.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<Registry, SchemaError> {
        let mut resolver = ChainFileResolver::new();
        resolver.add(MemoryResolver(
            sources
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
                .collect(),
        ));
        let names: Vec<String> = sources.iter().map(|(n, _)| (*n).to_owned()).collect();
        let texts = sources
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        Registry::compile(resolver, &names, &texts)
    }

    fn compile(
        mut resolver: ChainFileResolver,
        files: &[String],
        texts: &HashMap<String, String>,
    ) -> Result<Registry, SchemaError> {
        resolver.add(MemoryResolver(HashMap::from([(
            OPTIONS_PROTO_NAME.to_owned(),
            OPTIONS_PROTO.to_owned(),
        )])));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_files(files).map_err(|e| compile_error(&e))?;
        // This encoding keeps extension options (collection names, indexes,
        // rules): a change to any of them changes the fingerprint.
        let descriptor_set = compiler.encode_file_descriptor_set();
        let fingerprint = hex(&Sha256::digest(&descriptor_set));
        let pool = compiler.descriptor_pool();
        let collections = find_collections(&pool)?;
        check_rules(&collections, texts)?;
        let actions = action::find_actions(&pool)?
            .into_iter()
            .map(|a| (a.name.clone(), Arc::new(a)))
            .collect();
        Ok(Registry {
            collections,
            actions,
            fingerprint,
            pool,
            descriptor_set,
        })
    }

    /// The collection named `name` in the API, if the schema declares it.
    pub fn collection(&self, name: &str) -> Option<&Arc<Collection>> {
        self.collections.get(name)
    }

    /// Every collection, by name in byte order.
    pub fn collections(&self) -> impl Iterator<Item = &Arc<Collection>> {
        self.collections.values()
    }

    /// The action named `name` (`<full service name>/<Method>`), if the
    /// schema declares it.
    pub fn action(&self, name: &str) -> Option<&Arc<Action>> {
        self.actions.get(name)
    }

    /// Every action, by name in byte order.
    pub fn actions(&self) -> impl Iterator<Item = &Arc<Action>> {
        self.actions.values()
    }

    /// A hash of the compiled schema: equal schemas have equal fingerprints.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The compiled schema, as descriptors.
    pub fn descriptor_pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The compiled schema as an encoded `FileDescriptorSet` (with its
    /// imports), the form a database records to compare the next schema with.
    pub fn descriptor_set(&self) -> &[u8] {
        &self.descriptor_set
    }
}

fn find_collections(
    pool: &DescriptorPool,
) -> Result<BTreeMap<String, Arc<Collection>>, SchemaError> {
    let mut collections = BTreeMap::new();
    let Some(extension) = pool.get_extension_by_name(COLLECTION_EXTENSION) else {
        return Ok(collections);
    };
    let field_extension = pool.get_extension_by_name(FIELD_EXTENSION);
    for message in pool.all_messages() {
        let Some(raw) = options::collection_options(&message, &extension) else {
            continue;
        };
        let problem = |problem: String| SchemaError::Collection {
            collection: raw.name.clone(),
            message: message.full_name().to_owned(),
            problem,
        };
        if !is_identifier(&raw.name) {
            return Err(problem(format!(
                "collection name {:?} must be lower case letters, digits and '_', starting with a letter (at most 63 characters)",
                raw.name
            )));
        }
        if let Some(other) = collections.get(&raw.name) {
            let other: &Arc<Collection> = other;
            return Err(problem(format!(
                "the name is already used by message {}",
                other.message.full_name()
            )));
        }
        let mut indexes: Vec<IndexDef> = Vec::new();
        for index in &raw.indexes {
            if !is_identifier(&index.name) {
                return Err(problem(format!(
                    "index name {:?} must be lower case letters, digits and '_', starting with a letter",
                    index.name
                )));
            }
            if indexes.iter().any(|i| i.name == index.name) {
                return Err(problem(format!("index {} is declared twice", index.name)));
            }
            if index.fields.is_empty() {
                return Err(problem(format!("index {} has no fields", index.name)));
            }
            let fields = index
                .fields
                .iter()
                .map(|f| FieldPath::resolve(&message, f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| problem(format!("index {}: {e}", index.name)))?;
            indexes.push(IndexDef {
                name: index.name.clone(),
                fields,
            });
        }
        let id_field = if raw.id_field.is_empty() {
            None
        } else {
            let path = FieldPath::resolve(&message, &raw.id_field)
                .map_err(|e| problem(format!("id_field: {e}")))?;
            if path.ty != FieldType::String || path.segments().len() != 1 {
                return Err(problem(format!(
                    "id_field `{}` must be a top-level string field",
                    raw.id_field
                )));
            }
            Some(path)
        };
        let rule = |kind: &str, text: &str| -> Result<Option<Rule>, SchemaError> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            Rule::compile(text)
                .map(Some)
                .map_err(|e| problem(format!("{kind} rule `{text}` does not compile: {e}")))
        };
        let server_times =
            server_time_fields(&message, field_extension.as_ref()).map_err(problem)?;
        let collection = Collection {
            name: raw.name.clone(),
            message: message.clone(),
            indexes,
            rules: Rules {
                read: rule("read", &raw.read)?,
                write: rule("write", &raw.write)?,
            },
            id_field,
            server_times,
            keep_history: raw.keep_history,
        };
        collections.insert(raw.name.clone(), Arc::new(collection));
    }
    Ok(collections)
}

/// Every rule, against the schema (see `rule_check`).
fn check_rules(
    collections: &BTreeMap<String, Arc<Collection>>,
    texts: &HashMap<String, String>,
) -> Result<(), SchemaError> {
    for collection in collections.values() {
        for (kind, rule) in [
            ("read", &collection.rules.read),
            ("write", &collection.rules.write),
        ] {
            let Some(rule) = rule else { continue };
            if let Err(problem) = rule_check::check(rule, &collection.message, collections) {
                let file = collection.message.parent_file().name().to_owned();
                let place = texts
                    .get(&file)
                    .and_then(|text| {
                        rule_location(text, collection.message.name(), kind, problem.offset)
                    })
                    .map_or(file.clone(), |(line, column)| {
                        format!("{file}:{line}:{column}")
                    });
                return Err(SchemaError::Rule {
                    location: place,
                    collection: collection.name.clone(),
                    kind: kind.to_owned(),
                    message: problem.message,
                });
            }
        }
    }
    Ok(())
}

/// Where (line, column, 1-based) the byte `offset` of the `kind` rule of
/// message `message` lies in the file `text`: the rule is the string after
/// `kind:` in the message's collection option, possibly several adjacent
/// literals, possibly with escapes. `None` when the text does not show it.
fn rule_location(text: &str, message: &str, kind: &str, offset: usize) -> Option<(usize, usize)> {
    let declared = text.find(&format!("message {message}"))?;
    let after = &text[declared..];
    let key = after.match_indices(kind).find_map(|(at, _)| {
        let rest = after[at + kind.len()..].trim_start();
        let before_ok = at == 0 || !after.as_bytes()[at - 1].is_ascii_alphanumeric();
        (before_ok && rest.starts_with(':')).then_some(at)
    })?;
    let start = declared + key;
    // Walk the literals, counting the rule's bytes, until `offset`.
    let bytes = text.as_bytes();
    let mut at = start + text[start..].find(['"', '\''])?;
    let mut counted = 0;
    loop {
        let quote = bytes[at];
        at += 1;
        while at < bytes.len() && bytes[at] != quote {
            if counted == offset {
                return Some(line_column(text, at));
            }
            at += if bytes[at] == b'\\' { 2 } else { 1 };
            counted += 1;
        }
        // An adjacent literal continues the same string.
        let next = text[at + 1..].trim_start();
        if !next.starts_with(['"', '\'']) {
            return Some(line_column(text, at));
        }
        at = text.len() - next.len();
    }
}

fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn collect_proto_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), SchemaError> {
    let unreadable = |e: std::io::Error| SchemaError::Directory {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path: PathBuf = entry.map_err(unreadable)?.path();
        if path.is_dir() {
            collect_proto_files(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Turns a compiler error into "file:line:column: message".
fn compile_error(err: &protox::Error) -> SchemaError {
    let file = err.file().unwrap_or("schema").to_owned();
    let mut location = file;
    if let (Some(label), Some(source)) =
        (err.labels().and_then(|mut l| l.next()), err.source_code())
        && let Ok(span) = source.read_span(label.inner(), 0, 0)
    {
        location = format!("{location}:{}:{}", span.line() + 1, span.column() + 1);
    }
    let mut message = err.to_string();
    if let Some(help) = err.help() {
        message = format!("{message} ({help})");
    }
    SchemaError::Compile { location, message }
}

struct MemoryResolver(HashMap<String, String>);

impl FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
