//! A database's schema as a set of named objects (tables with their columns
//! and constraints, indexes, views, functions and procedures, triggers),
//! each with its normalized definition and a hash; and the drift between
//! the standard schema of a version and what a customer's database has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One schema object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// `table`, `index`, `view`, `materialized_view`, `function`,
    /// `procedure`, `trigger`.
    pub kind: String,
    /// Qualified where the engine has schemas: `public.customers`.
    pub name: String,
    /// Normalized: `\n` line endings, no trailing spaces, no blank lines
    /// at either end.
    pub definition: String,
    /// sha256 of the definition, hex.
    pub hash: String,
}

impl Object {
    pub fn new(kind: &str, name: &str, definition: &str) -> Object {
        let definition = normalize(definition);
        Object {
            kind: kind.to_owned(),
            name: name.to_owned(),
            hash: hex(&Sha256::digest(definition.as_bytes())),
            definition,
        }
    }
}

/// A whole schema: its objects by kind and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// `postgres` or `sqlite`.
    pub engine: String,
    pub objects: Vec<Object>,
}

impl Fingerprint {
    pub fn new(engine: &str, mut objects: Vec<Object>) -> Fingerprint {
        objects.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        Fingerprint {
            engine: engine.to_owned(),
            objects,
        }
    }

    /// One hash over every object's kind, name and hash.
    pub fn hash(&self) -> String {
        let mut digest = Sha256::new();
        for o in &self.objects {
            digest.update(format!("{}\t{}\t{}\n", o.kind, o.name, o.hash).as_bytes());
        }
        hex(&digest.finalize())
    }

    fn by_key(&self) -> BTreeMap<(&str, &str), &Object> {
        self.objects
            .iter()
            .map(|o| ((o.kind.as_str(), o.name.as_str()), o))
            .collect()
    }

    /// What `actual` has that differs from this standard.
    pub fn drift(&self, actual: &Fingerprint) -> Drift {
        let standard = self.by_key();
        let found = actual.by_key();
        let mut drift = Drift::default();
        for (key, s) in &standard {
            match found.get(key) {
                None => drift.missing.push((*s).clone()),
                Some(a) if a.hash != s.hash => drift.modified.push(Modified {
                    kind: s.kind.clone(),
                    name: s.name.clone(),
                    standard: s.definition.clone(),
                    actual: a.definition.clone(),
                }),
                Some(_) => {}
            }
        }
        for (key, a) in &found {
            if !standard.contains_key(key) {
                drift.added.push((*a).clone());
            }
        }
        drift
    }
}

/// How a database differs from the standard schema of its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// In the standard, not in the database.
    pub missing: Vec<Object>,
    /// In the database, not in the standard.
    pub added: Vec<Object>,
    /// In both, defined differently.
    pub modified: Vec<Modified>,
}

/// An object defined differently from the standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modified {
    pub kind: String,
    pub name: String,
    pub standard: String,
    pub actual: String,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.added.is_empty() && self.modified.is_empty()
    }

    /// One line per difference: `modified view public.v_orders`.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        lines.extend(
            self.missing
                .iter()
                .map(|o| format!("missing {} {}", o.kind, o.name)),
        );
        lines.extend(
            self.added
                .iter()
                .map(|o| format!("added {} {}", o.kind, o.name)),
        );
        lines.extend(
            self.modified
                .iter()
                .map(|o| format!("modified {} {}", o.kind, o.name)),
        );
        lines
    }
}

/// Line endings to `\n`, trailing spaces and tabs off every line, blank
/// lines off both ends.
pub fn normalize(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches([' ', '\t']))
        .collect();
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |e| e + 1);
    lines[start..end].join("\n")
}

/// sha256 of a script with its line endings normalized, hex: the checksum
/// the history records.
pub fn checksum(script: &str) -> String {
    hex(&Sha256::digest(
        script.replace("\r\n", "\n").replace('\r', "\n").as_bytes(),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_and_trailing_spaces_do_not_count() {
        let a = Object::new("view", "v", "SELECT 1  \r\nFROM t\r\n\r\n");
        let b = Object::new("view", "v", "\nSELECT 1\nFROM t");
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.definition, "SELECT 1\nFROM t");
        assert_eq!(checksum("a\r\nb"), checksum("a\nb"));
    }

    #[test]
    fn the_drift_names_what_is_missing_added_and_modified() {
        let standard = Fingerprint::new(
            "sqlite",
            vec![
                Object::new("table", "t", "CREATE TABLE t (a)"),
                Object::new("index", "i", "CREATE INDEX i ON t (a)"),
                Object::new("view", "v", "CREATE VIEW v AS SELECT a FROM t"),
            ],
        );
        let actual = Fingerprint::new(
            "sqlite",
            vec![
                Object::new("table", "t", "CREATE TABLE t (a)"),
                Object::new("view", "v", "CREATE VIEW v AS SELECT a, 1 FROM t"),
                Object::new("table", "x", "CREATE TABLE x (b)"),
            ],
        );
        let drift = standard.drift(&actual);
        assert_eq!(
            drift.summary(),
            vec!["missing index i", "added table x", "modified view v"]
        );
        assert_eq!(
            drift.modified[0].standard,
            "CREATE VIEW v AS SELECT a FROM t"
        );
        assert!(standard.drift(&standard).is_empty());
        assert_ne!(standard.hash(), actual.hash());
    }
}
