//! The folder source (local mode): every `*.yaml`, `*.yml` and `*.json` file under a folder, read
//! recursively, feeds the index, and changes are picked up while `trellisd` runs.
//!
//! A [`FolderSource`] remembers, per file, its stamp (modification time, size, inode) and the objects of
//! its last good read: their keys and lines, and the objects themselves only while they are not in the
//! index as that file's (a second definition of an object another file defines first), since the index
//! holds the others. [`FolderSource::scan`] lists the folder, re-reads only files whose stamp moved,
//! and applies what changed to the [`SharedIndex`] as one batch: upserts for the objects of files read
//! again (and of objects that changed file), deletes for objects no file holds any more. A file that
//! cannot be read or parsed keeps the objects it had before (its last good version) and is reported as
//! `file:line: ...`, the way `trellis analyze` reports; so is an Istio object that fails validation (it
//! is kept in the index with its errors and translate skips it). When two documents define the same
//! object, the first one (files in path order, documents in file order) is used and the other is
//! reported. [`FolderSource::run`] scans every poll interval.
//!
//! Hidden files and folders (names starting with `.`) are skipped, so editors' swap files and `.git`
//! never count; so are files a writer is still changing (their stamp moved while they were read), which
//! the next scan reads again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trellis_api::analyze::Finding;
use trellis_api::{FieldPath, Issue, Severity, document};

use super::SharedIndex;
use crate::Error;
use crate::index::{Change, Key, Resource, load};

/// How often a running folder source looks for changed files.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// File extensions read from the folder.
pub const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];
/// Deepest folder nesting read (deeper is most likely a symbolic link loop).
pub const MAX_DEPTH: usize = 16;

/// The folder (or a folder in it) could not be listed; nothing in the index changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read folder {path}: {message}")]
pub struct FolderError {
    pub path: PathBuf,
    pub message: String,
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self { modified: meta.modified().ok(), len: meta.len(), inode }
    }
}

/// One object of a file and the line its document starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub resource: Resource,
    pub line: usize,
}

/// What a file held the last time it was read.
#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// The objects of its last good version, in document order.
    objects: Vec<Held>,
}

/// One object of a file as the source keeps it between scans.
#[derive(Debug)]
struct Held {
    key: Key,
    line: usize,
    /// The object, unless the index holds it as this file's (then the index's copy is the only one):
    /// a file read again brings its objects anew, and an object whose owner changes is one the
    /// source kept. Boxed: most are in the index, and a file's list keeps its room for as long as the
    /// file is there (an inline resource is a few hundred bytes, ten thousand of them a few MB).
    resource: Option<Box<Resource>>,
}

impl Held {
    fn new(located: Located) -> Self {
        let resource = located.resource.compact();
        Self { key: resource.key(), line: located.line, resource: Some(Box::new(resource)) }
    }
}

/// What one file's text holds for the index.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Every object of a kind the index holds, in document order (invalid Istio objects included).
    pub objects: Vec<Located>,
    /// Istio objects that failed validation: kept, and skipped by translate.
    pub warnings: Vec<Finding>,
}

/// What one scan saw and did.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files read because they were new or changed, in path order.
    pub read: Vec<PathBuf>,
    /// Files that disappeared.
    pub removed: Vec<PathBuf>,
    /// Files that failed to read or parse and keep their last good objects, with how many.
    pub kept: Vec<(PathBuf, usize)>,
    /// Problems in the files read, as `trellis analyze` prints them.
    pub findings: Vec<Finding>,
    /// Whether the index changed.
    pub changed: bool,
    /// Files and objects the source holds after the scan.
    pub files: usize,
    pub objects: usize,
}

impl Scan {
    /// Logs what happened: each finding, each file kept at its last good version, and a summary when
    /// something was read or removed.
    pub fn log(&self) {
        for finding in &self.findings {
            match finding.issue.severity {
                Severity::Error => tracing::warn!("{finding}"),
                Severity::Warning => tracing::info!("{finding}"),
            }
        }
        for (file, objects) in &self.kept {
            tracing::warn!(file = %file.display(), objects, "keeping the objects of the file's last good version");
        }
        if !self.read.is_empty() || !self.removed.is_empty() {
            tracing::info!(
                read = self.read.len(),
                removed = self.removed.len(),
                changed = self.changed,
                files = self.files,
                objects = self.objects,
                "folder scanned"
            );
        }
    }
}

/// Feeds a [`SharedIndex`] from a folder of YAML and JSON files.
#[derive(Debug)]
pub struct FolderSource {
    root: PathBuf,
    index: SharedIndex,
    files: BTreeMap<Arc<Path>, FileState>,
    /// The file each object in the index came from: one allocation of its path per file, shared by
    /// the file's objects (ten thousand objects from a thousand files hold a thousand paths).
    owners: BTreeMap<Key, Arc<Path>>,
}

impl FolderSource {
    /// A source for the folder `root` (nothing is read before the first [`FolderSource::scan`]).
    pub fn new(root: impl Into<PathBuf>, index: SharedIndex) -> Self {
        Self { root: root.into(), index, files: BTreeMap::new(), owners: BTreeMap::new() }
    }

    /// The folder this source reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads what changed since the last scan and applies it to the index as one batch.
    ///
    /// Fails, changing nothing, when the folder cannot be listed.
    pub fn scan(&mut self) -> Result<Scan, FolderError> {
        let listing = list(&self.root)?;
        let mut scan = Scan::default();
        let gone: Vec<Arc<Path>> = self.files.keys().filter(|p| !listing.contains_key(p.as_ref())).cloned().collect();
        for path in gone {
            self.files.remove(&path);
            scan.removed.push(path.to_path_buf());
        }
        let mut read_now: BTreeSet<Arc<Path>> = BTreeSet::new();
        for (path, stamp) in &listing {
            let held = self.files.get_key_value(path.as_path());
            if held.is_some_and(|(_, state)| state.stamp == *stamp) {
                continue;
            }
            // The file's one allocation of its path, kept while the file is there.
            let path: Arc<Path> = held.map_or_else(|| Arc::from(path.as_path()), |(shared, _)| shared.clone());
            let Some(outcome) = read_settled(&path, *stamp) else { continue };
            let name = path.display().to_string();
            scan.read.push(path.to_path_buf());
            read_now.insert(path.clone());
            match outcome.map_err(|message| vec![whole_file(&name, 1, message)]).and_then(|b| parse(&name, &b)) {
                Ok(parsed) => {
                    scan.findings.extend(parsed.warnings);
                    // A list of its own size (`collect` would keep the larger list of parsed objects).
                    let mut objects = Vec::with_capacity(parsed.objects.len());
                    objects.extend(parsed.objects.into_iter().map(Held::new));
                    self.files.insert(path.clone(), FileState { stamp: *stamp, objects });
                }
                Err(findings) => {
                    scan.findings.extend(findings);
                    let state =
                        self.files.entry(path.clone()).or_insert(FileState { stamp: *stamp, objects: Vec::new() });
                    state.stamp = *stamp;
                    scan.kept.push((path.to_path_buf(), state.objects.len()));
                }
            }
        }
        if !scan.removed.is_empty() || !read_now.is_empty() {
            let changes = self.changes(&read_now, &mut scan.findings);
            scan.changed = self.index.apply(changes);
            self.share_keys(&read_now);
        }
        scan.files = self.files.len();
        scan.objects = self.owners.len();
        Ok(scan)
    }

    /// The changes that bring the index to what the files hold now, given the files read in this scan;
    /// records the new owner of every object, and drops the source's copy of every object the index
    /// now holds as its owner's (moved into the change that puts it there, not copied).
    ///
    /// Every object's first definition is looked up again, but nothing is copied for the objects whose
    /// owner stays: a change of one file among a thousand costs a pass over borrowed keys, not ten
    /// thousand copies of keys and paths (which made every change allocate and free a few MB).
    fn changes(&mut self, read_now: &BTreeSet<Arc<Path>>, findings: &mut Vec<Finding>) -> Vec<Change> {
        let mut deletes: Vec<Key> = Vec::new();
        let mut upserts: Vec<(Arc<Path>, usize)> = Vec::new();
        // Objects whose owner changes: the key, the new owner, and the old one if there was one.
        let mut moves: Vec<(Key, Arc<Path>, Option<Arc<Path>>)> = Vec::new();
        {
            // Each key's first definition (files in path order, documents in file order): file and position.
            let mut wanted: BTreeMap<&Key, (&Arc<Path>, usize)> = BTreeMap::new();
            for (path, state) in &self.files {
                let fresh = read_now.contains(path);
                for (position, held) in state.objects.iter().enumerate() {
                    match wanted.get(&held.key) {
                        Some((first, used)) => {
                            if fresh || read_now.contains(*first) {
                                let used_line = self.files[*first].objects[*used].line;
                                findings.push(duplicate(path, held.line, &held.key, first, used_line));
                            }
                        }
                        None => {
                            wanted.insert(&held.key, (path, position));
                        }
                    }
                }
            }
            deletes.extend(self.owners.keys().filter(|key| !wanted.contains_key(*key)).cloned());
            for (key, (path, position)) in wanted {
                let owner = self.owners.get(key);
                let same_owner = owner.is_some_and(|owner| owner == path);
                if !same_owner {
                    moves.push((key.clone(), path.clone(), owner.cloned()));
                }
                if !same_owner || read_now.contains(path) {
                    upserts.push((path.clone(), position));
                }
            }
        }
        let mut changes: Vec<Change> = Vec::with_capacity(deletes.len() + upserts.len());
        for key in deletes {
            self.owners.remove(&key);
            changes.push(Change::Delete(key));
        }
        // An object whose file is not read again and that another file now defines first goes back
        // to being held whole, from the index, which still has it as that file's.
        let moved: Vec<(&Key, &Arc<Path>)> =
            moves.iter().filter_map(|(key, _, old)| Some((key, old.as_ref()?))).collect();
        if !moved.is_empty() {
            let index = self.index.read();
            for (key, path) in moved {
                let Some(state) = self.files.get_mut(path) else { continue };
                if let Some(held) = state.objects.iter_mut().find(|h| h.key == *key && h.resource.is_none()) {
                    held.resource = index.get(key).map(|entry| Box::new(entry.resource.clone()));
                }
            }
        }
        for (key, path, _) in moves {
            self.owners.insert(key, path);
        }
        // Files in path order (objects new to the index rank in the order they are indexed).
        upserts.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, position) in upserts {
            let Some(held) = self.files.get_mut(&path).and_then(|state| state.objects.get_mut(position)) else {
                continue;
            };
            match held.resource.take() {
                Some(resource) => changes.push(Change::upsert(*resource)),
                // Not reachable: an object not yet in the index as this file's is held whole.
                None => tracing::error!(key = %held.key, file = %path.display(), "an object to index was not kept"),
            }
        }
        changes
    }

    /// Makes the keys of the objects of the files just read the index's own (one allocation of each
    /// key's texts for the index, the files and the owners, not three).
    fn share_keys(&mut self, read_now: &BTreeSet<Arc<Path>>) {
        let index = self.index.read();
        for path in read_now {
            let Some(state) = self.files.get_mut(path) else { continue };
            for held in &mut state.objects {
                let Some(key) = index.key(&held.key) else { continue };
                if let Some(owner) = self.owners.remove(&held.key) {
                    self.owners.insert(key.clone(), owner);
                }
                held.key = key.clone();
            }
        }
    }

    /// Scans every `interval` until the task is dropped, logging what each scan found. A folder that
    /// cannot be listed is logged once per distinct error and leaves the index as it was.
    pub async fn run(self, interval: Duration) {
        let mut source = self;
        let mut last_error: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            let scanned = tokio::task::spawn_blocking(move || {
                let scan = source.scan();
                (source, scan)
            })
            .await;
            let scan;
            (source, scan) = match scanned {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::error!(error = %err, "the folder scan failed; no more updates from the folder");
                    return;
                }
            };
            match scan {
                Ok(scan) => {
                    if last_error.take().is_some() {
                        tracing::info!(folder = %source.root.display(), "the folder is readable again");
                    }
                    scan.log();
                }
                Err(err) => {
                    let text = err.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!("{text}; keeping every object as it is");
                        last_error = Some(text);
                    }
                }
            }
        }
    }
}

/// Reads `path` if its stamp is still `stamp` once read; `None` when a writer changed it meanwhile (the
/// next scan reads it again), `Some(Err)` when it cannot be read.
fn read_settled(path: &Path, stamp: Stamp) -> Option<Result<Vec<u8>, String>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => return Some(Err(format!("cannot read the file: {err}"))),
    };
    let after = std::fs::metadata(path).ok().map(|meta| Stamp::of(&meta));
    (after == Some(stamp)).then_some(Ok(bytes))
}

/// Every file to read under `root`, with its stamp, in path order.
fn list(root: &Path) -> Result<BTreeMap<PathBuf, Stamp>, FolderError> {
    let mut files = BTreeMap::new();
    let meta = std::fs::metadata(root).map_err(|e| FolderError { path: root.to_owned(), message: e.to_string() })?;
    if !meta.is_dir() {
        return Err(FolderError { path: root.to_owned(), message: "not a folder".to_owned() });
    }
    list_into(root, 0, &mut files)?;
    Ok(files)
}

fn list_into(folder: &Path, depth: usize, files: &mut BTreeMap<PathBuf, Stamp>) -> Result<(), FolderError> {
    let fail = |message: String| FolderError { path: folder.to_owned(), message };
    if depth > MAX_DEPTH {
        return Err(fail(format!("nested more than {MAX_DEPTH} folders deep (a symbolic link loop?)")));
    }
    let entries = std::fs::read_dir(folder).map_err(|e| fail(e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| fail(e.to_string()))?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Follows symbolic links; one that points nowhere is not a file to read.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            list_into(&path, depth + 1, files)?;
        } else if meta.is_file() && has_extension(&path) {
            files.insert(path, Stamp::of(&meta));
        }
    }
    Ok(())
}

/// Whether the folder source reads files named like `path`.
pub fn has_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e))
}

/// The objects of one file's bytes, or why the file cannot be used (every problem, located). `name`
/// is the file name findings carry.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Parsed, Vec<Finding>> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(vec![whole_file(name, 1, "not UTF-8 text (is it a binary file?)".to_owned())]);
    };
    let documents = match document::parse(text) {
        Ok(documents) => documents,
        Err(trellis_api::Error::Yaml { line, message }) => {
            return Err(vec![whole_file(name, line, format!("invalid YAML: {message}"))]);
        }
        Err(other) => return Err(vec![whole_file(name, 1, other.to_string())]),
    };
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
    for document in documents {
        match load::value(name, document.line, &document.value) {
            Ok(Some(Change::Upsert { resource, .. })) => {
                if let Resource::Config(config) = &resource {
                    for issue in &config.errors {
                        let mut issue = issue.clone();
                        issue.message = format!("{} (the object is ignored until this is fixed)", issue.message);
                        let line = document.line_of(&issue.path);
                        let object = Some(config.id.clone());
                        parsed.warnings.push(Finding { file: name.to_owned(), line, object, issue });
                    }
                }
                parsed.objects.push(Located { resource, line: document.line });
            }
            Ok(Some(Change::Delete(_)) | None) => {}
            Err(err) => errors.push(located_error(name, document.line, err)),
        }
    }
    if errors.is_empty() { Ok(parsed) } else { Err(errors) }
}

/// A problem with a whole file (or a document at `line` that cannot be identified).
fn whole_file(name: &str, line: usize, message: String) -> Finding {
    Finding {
        file: name.to_owned(),
        line,
        object: None,
        issue: Issue { severity: Severity::Error, path: FieldPath::root(), message },
    }
}

/// A document that cannot become part of the index, at the line of its document when the error has none.
fn located_error(name: &str, document_line: usize, err: Error) -> Finding {
    match err {
        Error::Yaml { line, message, .. } => whole_file(name, line, format!("invalid YAML: {message}")),
        Error::Document { line, message, .. } => whole_file(name, line, message),
        Error::Kubernetes { object, field, message, .. } => {
            whole_file(name, document_line, format!("{object}: {field}: {message}"))
        }
        // The CA's errors never come from a document.
        other => whole_file(name, document_line, other.to_string()),
    }
}

/// The report of an object defined again at `path`, `line` while the one at `first`, `used_line` is used.
fn duplicate(path: &Path, line: usize, key: &Key, first: &Path, used_line: usize) -> Finding {
    let mut finding = whole_file(
        &path.display().to_string(),
        line,
        format!("{key} is also defined at {}:{used_line}, which is used; this one is ignored", first.display()),
    );
    finding.issue.severity = Severity::Warning;
    finding
}

#[cfg(test)]
mod tests;
