//! `--baseline FILE`: adopt the gate on a codebase that is not clean yet. The first run
//! records today's violations; later runs fail only on violations not recorded. Entries are
//! keyed by entry, sink and callee, never by line, so unrelated edits do not break them.

use crate::analysis::Violation;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Key {
    pub entry: String,
    pub sink: String,
    pub callee: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    version: u32,
    violations: Vec<Key>,
}

impl Key {
    pub fn of(v: &Violation) -> Key {
        Key {
            entry: v.entry.clone(),
            sink: v.sink.clone(),
            callee: v.callee().to_string(),
        }
    }
}

/// Reads a baseline; `Ok(None)` when the file does not exist yet.
pub fn read(path: &Path) -> Result<Option<Vec<Key>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let file: BaselineFile = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: malformed baseline: {e}", path.display())))?;
    if file.version != 1 {
        return Err(Error::Config(format!(
            "{}: unsupported baseline version {}",
            path.display(),
            file.version
        )));
    }
    Ok(Some(file.violations))
}

/// Records the current violations.
pub fn write(path: &Path, violations: &[Violation]) -> Result<()> {
    let mut keys: Vec<Key> = violations.iter().map(Key::of).collect();
    keys.sort();
    keys.dedup();
    let text = serde_json::to_string_pretty(&BaselineFile {
        version: 1,
        violations: keys,
    })
    .expect("serialisable")
        + "\n";
    std::fs::write(path, text).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Splits violations into new ones (returned), and counts the known ones and the baseline
/// entries nothing matches any more.
pub fn filter(baseline: &[Key], violations: &[Violation]) -> (Vec<Violation>, usize, usize) {
    let known: HashSet<&Key> = baseline.iter().collect();
    let mut matched: HashSet<Key> = HashSet::new();
    let mut fresh = Vec::new();
    for v in violations {
        let k = Key::of(v);
        if known.contains(&k) {
            matched.insert(k);
        } else {
            fresh.push(v.clone());
        }
    }
    let known_count = violations.len() - fresh.len();
    let fixed = known.iter().filter(|k| !matched.contains(**k)).count();
    (fresh, known_count, fixed)
}
