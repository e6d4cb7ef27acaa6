//! File mode: a folder of Kubernetes manifests as the configuration source.
//!
//! Data flow: folder -> [`Folder::load`] (parse every `*.yaml`/`*.yml`/`*.json`) -> Index ->
//! [`Publisher`]. A watcher thread reloads on change (debounced), with a slow rescan as a safety
//! net for filesystems that drop events. A file that fails to parse keeps its last good
//! objects, so a half-saved edit never takes routes down; every rejected document is logged
//! with its file, document number and line, and counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use super::publish::Publisher;
use crate::index::{Index, Kind, Object, ObjectKey};
use crate::metrics::TableMetrics;

/// Quiet time after the last change before reloading: editors write files in several steps.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a burst of changes can delay a reload.
pub const RELOAD_MAX_DELAY: Duration = Duration::from_secs(1);
/// Rescan period when no event arrives (network filesystems, ConfigMap volume swaps).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Errors of the folder source itself (not of individual manifests).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder cannot be listed.
    #[error("cannot read manifests folder {dir}: {source}")]
    Unreadable {
        /// The folder.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The path is not a folder.
    #[error("manifests path {0} is not a folder")]
    NotAFolder(PathBuf),
    /// The filesystem watcher could not start.
    #[error("cannot watch manifests folder {dir}: {source}")]
    Watch {
        /// The folder.
        dir: PathBuf,
        /// Cause.
        source: notify::Error,
    },
}

/// Why a manifest document was rejected; also the `reason` label of
/// `erratum_manifest_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The file could not be read.
    Unreadable,
    /// Not valid YAML/JSON.
    Syntax,
    /// Valid YAML, but not a valid object of its kind.
    Schema,
    /// A kind erratum does not use (skipped, the rest of the file still loads).
    UnknownKind,
    /// The same kind and name is defined in an earlier file (the earlier one wins).
    Duplicate,
}

impl Reason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::Syntax => "syntax",
            Reason::Schema => "schema",
            Reason::UnknownKind => "unknown_kind",
            Reason::Duplicate => "duplicate",
        }
    }

    /// Whether the error invalidates the whole file (its last good objects are kept instead).
    fn is_fatal(self) -> bool {
        matches!(self, Reason::Unreadable | Reason::Syntax | Reason::Schema)
    }
}

/// One rejected document, located for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// 1-based document number in a multi-document file.
    pub document: Option<usize>,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Classification.
    pub reason: Reason,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(doc) = self.document {
            write!(f, " (document {doc})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where an object was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based document number.
    pub document: usize,
    /// 1-based first line of the document, where known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, " (document {})", self.document)
    }
}

/// The objects of one file and the documents it rejected.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Objects in document order, with where each was defined.
    pub objects: Vec<(Object, Location)>,
    /// Rejected documents.
    pub errors: Vec<ManifestError>,
}

/// Parses one manifest file: YAML (multi-document) or JSON, each document one object or a
/// `kind: List`.
pub fn parse_manifest(file: &Path, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let is_json = file.extension().is_some_and(|e| e == "json");
    let err = |document, line, reason, message| ManifestError {
        file: file.to_path_buf(),
        document,
        line,
        reason,
        message,
    };

    let mut documents = Vec::new();
    if is_json {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => documents.push((1, Some(1), v)),
            Err(e) => parsed.errors.push(err(Some(1), Some(e.line()), Reason::Syntax, e.to_string())),
        }
    } else {
        let starts = yaml_document_starts(text);
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let line = starts.get(i).copied();
            match serde_json::Value::deserialize(doc) {
                Ok(v) => documents.push((i + 1, line, v)),
                Err(e) => {
                    let line = e.location().map(|l| l.line()).or(line);
                    parsed.errors.push(err(Some(i + 1), line, Reason::Syntax, e.to_string()));
                    break; // the parser cannot resynchronise after a syntax error
                }
            }
        }
    }

    for (doc, line, value) in documents {
        let items = match value {
            serde_json::Value::Null => continue, // empty document
            serde_json::Value::Object(ref m) if m.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                match m.get("items") {
                    Some(serde_json::Value::Array(items)) => items.clone(),
                    _ => {
                        parsed.errors.push(err(Some(doc), line, Reason::Schema, "List without items".into()));
                        continue;
                    }
                }
            }
            other => vec![other],
        };
        for item in items {
            match to_object(item) {
                Ok(obj) => {
                    parsed.objects.push((obj, Location { file: file.to_path_buf(), document: doc, line }))
                }
                Err((reason, message)) => parsed.errors.push(err(Some(doc), line, reason, message)),
            }
        }
    }
    parsed
}

/// 1-based first line of each YAML document, by `---` separators. Used to point at documents
/// whose content (not syntax) is wrong; the YAML parser only locates syntax errors.
fn yaml_document_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut content_before_separator = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            starts.push(i + 2);
        } else if starts.is_empty()
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !content_before_separator
        {
            content_before_separator = true;
            starts.push(1);
        }
    }
    if starts.is_empty() {
        starts.push(1);
    }
    starts
}

/// Deserialises one document into a known kind, with the field path of any error.
fn to_object(value: serde_json::Value) -> Result<Object, (Reason, String)> {
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let name = value.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if api_version.is_empty() || kind.is_empty() {
        return Err((Reason::Schema, "document has no apiVersion or kind".into()));
    }
    if name.is_empty() {
        return Err((Reason::Schema, format!("{kind} has no metadata.name")));
    }
    // Judged as `kubectl apply` would be (super::strict): unknown fields are errors.
    fn de<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
        kind: &str,
        name: &str,
    ) -> Result<T, (Reason, String)> {
        super::strict::deserialize(value).map_err(|e| (Reason::Schema, format!("{kind} {name}: {e}")))
    }
    let obj = match Kind::of_manifest(&api_version, &kind) {
        Some(Kind::IngressClass) => Object::IngressClass(Box::new(de(value, &kind, &name)?)),
        Some(Kind::Ingress) => Object::Ingress(Box::new(de(value, &kind, &name)?)),
        Some(Kind::Service) => Object::Service(Box::new(de(value, &kind, &name)?)),
        Some(Kind::EndpointSlice) => Object::EndpointSlice(Box::new(de(value, &kind, &name)?)),
        Some(Kind::Secret) => Object::Secret(Box::new(de(value, &kind, &name)?)),
        Some(Kind::ConfigMap) => Object::ConfigMap(Box::new(de(value, &kind, &name)?)),
        Some(Kind::ErrorPagePolicy) => {
            // In the API server's order: strict decoding (unknown fields) first, then the
            // CRD's schema and CEL rules, as applied at admission.
            let problems = super::strict::policy_problems(&value);
            if !problems.is_empty() {
                return Err((Reason::Schema, format!("{kind} {name} is invalid: {}", problems.join("; "))));
            }
            Object::ErrorPagePolicy(Box::new(de(value, &kind, &name)?))
        }
        None => {
            return Err((
                Reason::UnknownKind,
                format!("{api_version} {kind} {name} is not a kind erratum uses; skipped"),
            ));
        }
    };
    Ok(obj)
}

/// Result of a reload that found changes.
#[derive(Debug)]
pub struct Loaded {
    /// The merged Index.
    pub index: Index,
    /// Every rejected document (fatal ones fall back to the file's last good objects).
    pub errors: Vec<ManifestError>,
    /// Where each object in the Index was defined.
    pub origins: HashMap<(Kind, ObjectKey), Location>,
}

/// A manifests folder, with the last good objects of each file.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    last_good: HashMap<PathBuf, Vec<(Object, Location)>>,
    fingerprint: Option<u64>,
}

impl Folder {
    /// Opens a folder; fails if it cannot be listed (checked before any port is bound).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let meta =
            std::fs::metadata(&dir).map_err(|source| Error::Unreadable { dir: dir.clone(), source })?;
        if !meta.is_dir() {
            return Err(Error::NotAFolder(dir));
        }
        std::fs::read_dir(&dir).map_err(|source| Error::Unreadable { dir: dir.clone(), source })?;
        Ok(Self { dir, last_good: HashMap::new(), fingerprint: None })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every manifest. Returns `Ok(None)` when nothing changed since the last load.
    pub fn load(&mut self) -> Result<Option<Loaded>, Error> {
        let mut files = Vec::new();
        list_manifests(&self.dir, &mut files)
            .map_err(|source| Error::Unreadable { dir: self.dir.clone(), source })?;
        files.sort();

        let mut errors = Vec::new();
        let mut contents = BTreeMap::new();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    file.hash(&mut hasher);
                    text.hash(&mut hasher);
                    contents.insert(file, Some(text));
                }
                Err(e) => {
                    file.hash(&mut hasher);
                    errors.push(ManifestError {
                        file: file.clone(),
                        document: None,
                        line: None,
                        reason: Reason::Unreadable,
                        message: e.to_string(),
                    });
                    contents.insert(file, None);
                }
            }
        }
        let fingerprint = hasher.finish();
        if self.fingerprint == Some(fingerprint) {
            return Ok(None);
        }
        self.fingerprint = Some(fingerprint);

        self.last_good.retain(|path, _| contents.contains_key(path));
        let mut index = Index::default();
        let mut origins: HashMap<(Kind, ObjectKey), Location> = HashMap::new();
        for (file, text) in &contents {
            let objects = match text {
                Some(text) => {
                    let parsed = parse_manifest(file, text);
                    let fatal = parsed.errors.iter().any(|e| e.reason.is_fatal());
                    errors.extend(parsed.errors);
                    if fatal {
                        self.last_good.get(file).cloned().unwrap_or_default()
                    } else {
                        self.last_good.insert(file.clone(), parsed.objects.clone());
                        parsed.objects
                    }
                }
                None => self.last_good.get(file).cloned().unwrap_or_default(),
            };
            for (obj, at) in objects {
                let id = (obj.kind(), obj.key());
                if let Some(first) = origins.get(&id) {
                    errors.push(ManifestError {
                        file: file.clone(),
                        document: Some(at.document),
                        line: at.line,
                        reason: Reason::Duplicate,
                        message: format!("{} {} is already defined at {first}; ignored", id.0, id.1),
                    });
                    continue;
                }
                origins.insert(id, at);
                index.apply(obj);
            }
        }
        Ok(Some(Loaded { index, errors, origins }))
    }
}

/// Lists manifest files under `dir`, recursively, skipping hidden entries (which also skips the
/// `..data` indirection of a mounted ConfigMap while following its visible symlinks).
fn list_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            list_manifests(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads, reports and publishes once. Returns whether a new table was published.
pub fn reload(folder: &mut Folder, publisher: &mut Publisher, metrics: &TableMetrics) -> bool {
    match folder.load() {
        Ok(Some(loaded)) => {
            for e in &loaded.errors {
                metrics.manifest_errors.with_label_values(&[e.reason.as_str()]).inc();
                if e.reason.is_fatal() {
                    tracing::error!(
                        reason = e.reason.as_str(),
                        "{e}; the file's last good objects keep serving"
                    );
                } else {
                    tracing::warn!(reason = e.reason.as_str(), "{e}");
                }
            }
            publisher.publish_located(&loaded.index, |d| {
                d.kind.and_then(|kind| loaded.origins.get(&(kind, d.key.clone()))).map(ToString::to_string)
            });
            true
        }
        Ok(None) => false,
        Err(e) => {
            metrics.manifest_errors.with_label_values(&[Reason::Unreadable.as_str()]).inc();
            tracing::error!("{e}; the last good table keeps serving");
            false
        }
    }
}

/// The running watcher; dropping it without [`Watcher::stop`] leaves the thread to exit when the
/// process does.
#[derive(Debug)]
pub struct Watcher {
    tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Msg {
    Changed,
    Stop,
}

impl Watcher {
    /// Stops watching and waits for the thread.
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching `folder`: the initial load must already have been published. Reloads run
/// on a dedicated thread because parsing and building are synchronous CPU work that must not
/// stall the proxy's workers.
pub fn watch(mut folder: Folder, mut publisher: Publisher, metrics: TableMetrics) -> Result<Watcher, Error> {
    use notify::Watcher as _;
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Any event (or error) means "look again"; the fingerprint filters no-ops.
        let relevant = match &res {
            Ok(ev) => !ev.kind.is_access(),
            Err(_) => true,
        };
        if relevant {
            let _ = events.send(Msg::Changed);
        }
    })
    .map_err(|source| Error::Watch { dir: folder.dir().to_path_buf(), source })?;
    watcher
        .watch(folder.dir(), notify::RecursiveMode::Recursive)
        .map_err(|source| Error::Watch { dir: folder.dir().to_path_buf(), source })?;

    let thread = std::thread::Builder::new()
        .name("erratum-manifests".into())
        .spawn(move || {
            let _watcher = watcher; // keep the OS watch alive for the thread's lifetime
            loop {
                match rx.recv_timeout(RESCAN_INTERVAL) {
                    Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Ok(Msg::Changed) => {
                        // Debounce: wait for a quiet period, bounded so a constant stream of
                        // writes still reloads regularly.
                        let started = std::time::Instant::now();
                        loop {
                            let left = RELOAD_MAX_DELAY.saturating_sub(started.elapsed());
                            match rx.recv_timeout(RELOAD_DEBOUNCE.min(left)) {
                                Ok(Msg::Changed) if !left.is_zero() => continue,
                                Ok(Msg::Stop) => return,
                                _ => break,
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                reload(&mut folder, &mut publisher, &metrics);
            }
        })
        .map_err(|source| Error::Unreadable { dir: PathBuf::from("<thread>"), source })?;
    Ok(Watcher { tx, thread: Some(thread) })
}

#[cfg(test)]
mod tests;
