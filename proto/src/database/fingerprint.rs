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
    /// The engine's major version it was read from (`15`), when known:
    /// definitions are printed by the server, and their formatting may
    /// change between major versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_version: Option<String>,
    pub objects: Vec<Object>,
}

impl Fingerprint {
    pub fn new(engine: &str, mut objects: Vec<Object>) -> Fingerprint {
        objects.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        Fingerprint {
            engine: engine.to_owned(),
            major_version: None,
            objects,
        }
    }

    /// Tagged with the engine's major version.
    pub fn with_major_version(mut self, major: Option<String>) -> Fingerprint {
        self.major_version = major;
        self
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

    /// What `actual` has that differs from this standard. Read on
    /// another major version of the engine, a definition that differs only
    /// in spacing and case is formatting, not drift: it is counted in the
    /// drift's note instead.
    pub fn drift(&self, actual: &Fingerprint) -> Drift {
        let standard = self.by_key();
        let found = actual.by_key();
        let mut drift = Drift::default();
        let other_major = match (&self.major_version, &actual.major_version) {
            (Some(s), Some(a)) if s != a => Some((s.clone(), a.clone())),
            _ => None,
        };
        let mut formatting = 0;
        for (key, s) in &standard {
            match found.get(key) {
                None => drift.missing.push((*s).clone()),
                Some(a) if a.hash != s.hash => {
                    if other_major.is_some() && loose(&s.definition) == loose(&a.definition) {
                        formatting += 1;
                        continue;
                    }
                    drift.modified.push(Modified {
                        kind: s.kind.clone(),
                        name: s.name.clone(),
                        changes: if s.kind == "table" {
                            table_changes(&s.name, &s.definition, &a.definition)
                        } else {
                            Vec::new()
                        },
                        standard: s.definition.clone(),
                        actual: a.definition.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        if let Some((standard_major, actual_major)) = other_major {
            drift.note = Some(format!(
                "the standard was read from {} {standard_major}, this database is {} {actual_major}: \
                 {formatting} definition(s) differing only in formatting are not counted; \
                 other differences may still come from the version",
                engine_name(&self.engine),
                engine_name(&actual.engine)
            ));
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
    /// Said when the standard and the database were read from different
    /// major versions of the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An object defined differently from the standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modified {
    pub kind: String,
    pub name: String,
    pub standard: String,
    pub actual: String,
    /// A table's differences one by one: each column and constraint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// One difference inside a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `column` or `constraint`.
    pub kind: String,
    /// Qualified: `public.customer.loyalty_code`.
    pub name: String,
    /// `added`, `missing`, `type`, `nullability`, `default` or `definition`.
    pub change: String,
    /// What the standard has (none when added).
    pub standard: Option<String>,
    /// What this database has (none when missing).
    pub actual: Option<String>,
}

impl Change {
    /// `column public.customer.loyalty_code added (text)`.
    pub fn line(&self) -> String {
        let (kind, name) = (&self.kind, &self.name);
        let standard = self.standard.as_deref().unwrap_or("none");
        let actual = self.actual.as_deref().unwrap_or("none");
        match self.change.as_str() {
            "added" => format!("{kind} {name} added ({actual})"),
            "missing" => format!("{kind} {name} missing (standard: {standard})"),
            "nullability" => format!("{kind} {name} is {actual} (standard: {standard})"),
            change => format!("{kind} {name} {change} {standard} → {actual}"),
        }
    }
}

/// A table's definition as the PostgreSQL fingerprint writes it: one line
/// per column (`name type [NOT NULL] [DEFAULT expr]`), then one per
/// constraint (`CONSTRAINT name definition`). A definition of another shape
/// (SQLite's `CREATE TABLE`) gives no changes: the table is reported whole.
fn table_changes(table: &str, standard: &str, actual: &str) -> Vec<Change> {
    let (Some(standard), Some(actual)) = (table_parts(standard), table_parts(actual)) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    let change = |kind: &str, name: &str, change: &str, s: Option<&str>, a: Option<&str>| Change {
        kind: kind.to_owned(),
        name: format!("{table}.{name}"),
        change: change.to_owned(),
        standard: s.map(str::to_owned),
        actual: a.map(str::to_owned),
    };
    for (name, s) in &standard.columns {
        match actual.columns.get(name) {
            None => changes.push(change("column", name, "missing", Some(&s.whole()), None)),
            Some(a) => {
                if a.data_type != s.data_type {
                    changes.push(change(
                        "column",
                        name,
                        "type",
                        Some(&s.data_type),
                        Some(&a.data_type),
                    ));
                }
                if a.not_null != s.not_null {
                    let nullability =
                        |not_null: bool| if not_null { "NOT NULL" } else { "nullable" };
                    changes.push(change(
                        "column",
                        name,
                        "nullability",
                        Some(nullability(s.not_null)),
                        Some(nullability(a.not_null)),
                    ));
                }
                if a.default != s.default {
                    changes.push(change(
                        "column",
                        name,
                        "default",
                        s.default.as_deref(),
                        a.default.as_deref(),
                    ));
                }
            }
        }
    }
    for (name, a) in &actual.columns {
        if !standard.columns.contains_key(name) {
            changes.push(change("column", name, "added", None, Some(&a.whole())));
        }
    }
    for (name, s) in &standard.constraints {
        match actual.constraints.get(name) {
            None => changes.push(change("constraint", name, "missing", Some(s), None)),
            Some(a) if a != s => {
                changes.push(change("constraint", name, "definition", Some(s), Some(a)))
            }
            Some(_) => {}
        }
    }
    for (name, a) in &actual.constraints {
        if !standard.constraints.contains_key(name) {
            changes.push(change("constraint", name, "added", None, Some(a)));
        }
    }
    changes
}

/// A column as the fingerprint writes it.
#[derive(Debug, PartialEq, Eq)]
struct Column {
    data_type: String,
    not_null: bool,
    default: Option<String>,
}

impl Column {
    fn whole(&self) -> String {
        let mut text = self.data_type.clone();
        if self.not_null {
            text.push_str(" NOT NULL");
        }
        if let Some(default) = &self.default {
            text.push_str(&format!(" DEFAULT {default}"));
        }
        text
    }
}

struct TableParts {
    columns: BTreeMap<String, Column>,
    constraints: BTreeMap<String, String>,
}

/// The columns and constraints of a line-per-part table definition; `None`
/// for a definition of another shape.
fn table_parts(definition: &str) -> Option<TableParts> {
    let mut parts = TableParts {
        columns: BTreeMap::new(),
        constraints: BTreeMap::new(),
    };
    for line in definition.lines() {
        if let Some(rest) = line.strip_prefix("CONSTRAINT ") {
            let (name, body) = split_name(rest)?;
            parts.constraints.insert(name, body.trim().to_owned());
            continue;
        }
        let (name, rest) = split_name(line)?;
        let (rest, default) = match rest.split_once(" DEFAULT ") {
            Some((before, default)) => (before, Some(default.trim().to_owned())),
            None => (rest, None),
        };
        let (data_type, not_null) = match rest.strip_suffix(" NOT NULL") {
            Some(data_type) => (data_type, true),
            None => (rest, false),
        };
        let data_type = data_type.trim();
        if data_type.is_empty() || data_type.starts_with('(') {
            return None;
        }
        parts.columns.insert(
            name,
            Column {
                data_type: data_type.to_owned(),
                not_null,
                default,
            },
        );
    }
    Some(parts)
}

/// An identifier (quoted or not) at the start of `text`, and the rest.
fn split_name(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut end = 0;
        let bytes = quoted.as_bytes();
        while end < bytes.len() {
            if bytes[end] == b'"' {
                if bytes.get(end + 1) == Some(&b'"') {
                    end += 2;
                    continue;
                }
                return Some((format!("\"{}\"", &quoted[..end]), &quoted[end + 1..]));
            }
            end += 1;
        }
        return None;
    }
    let end = text.find(' ')?;
    let name = &text[..end];
    name.chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        .then(|| (name.to_owned(), &text[end..]))
}

/// A definition with its spacing and case folded, to tell formatting from
/// change.
fn loose(definition: &str) -> String {
    definition
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn engine_name(engine: &str) -> &str {
    match engine {
        "postgres" => "PostgreSQL",
        "sqlite" => "SQLite",
        other => other,
    }
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.added.is_empty() && self.modified.is_empty()
    }

    /// One line per difference: `modified view public.v_orders`, and for a
    /// table each column and constraint: `column public.customer.loyalty_code
    /// added (text)`.
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
        for o in &self.modified {
            if o.changes.is_empty() {
                lines.push(format!("modified {} {}", o.kind, o.name));
            } else {
                lines.extend(o.changes.iter().map(Change::line));
            }
        }
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

    #[test]
    fn a_tables_drift_names_each_column_and_constraint() {
        let standard = Fingerprint::new(
            "postgres",
            vec![Object::new(
                "table",
                "public.customer",
                "id integer NOT NULL\nname text NOT NULL\ntotal numeric(10,2) DEFAULT 0\n\"Old Name\" text\nCONSTRAINT customer_pkey PRIMARY KEY (id)\nCONSTRAINT customer_name_check CHECK (name <> ''::text)",
            )],
        );
        let actual = Fingerprint::new(
            "postgres",
            vec![Object::new(
                "table",
                "public.customer",
                "id integer NOT NULL\nname text\ntotal numeric(12,2) DEFAULT 1\nloyalty_code text\nCONSTRAINT customer_pkey PRIMARY KEY (id)\nCONSTRAINT customer_email_key UNIQUE (loyalty_code)",
            )],
        );
        let drift = standard.drift(&actual);
        assert_eq!(
            drift.summary(),
            vec![
                "column public.customer.\"Old Name\" missing (standard: text)",
                "column public.customer.name is nullable (standard: NOT NULL)",
                "column public.customer.total type numeric(10,2) → numeric(12,2)",
                "column public.customer.total default 0 → 1",
                "column public.customer.loyalty_code added (text)",
                "constraint public.customer.customer_name_check missing (standard: CHECK (name <> ''::text))",
                "constraint public.customer.customer_email_key added (UNIQUE (loyalty_code))",
            ]
        );
        assert!(drift.note.is_none());
    }

    #[test]
    fn another_major_version_says_so_and_formatting_is_not_drift() {
        let view = |definition: &str| Object::new("view", "public.v", definition);
        let standard = Fingerprint::new("postgres", vec![view(" SELECT a\n   FROM t;")])
            .with_major_version(Some("16".into()));
        let formatted = Fingerprint::new("postgres", vec![view("SELECT a FROM t;")])
            .with_major_version(Some("15".into()));
        let drift = standard.drift(&formatted);
        assert!(drift.is_empty(), "{drift:?}");
        assert_eq!(
            drift.note.as_deref(),
            Some(
                "the standard was read from PostgreSQL 16, this database is PostgreSQL 15: 1 definition(s) differing only in formatting are not counted; other differences may still come from the version"
            )
        );
        let changed = Fingerprint::new("postgres", vec![view("SELECT a, b FROM t;")])
            .with_major_version(Some("15".into()));
        assert_eq!(
            standard.drift(&changed).summary(),
            ["modified view public.v"]
        );
        // Read on the same version, spacing is a difference.
        let same = Fingerprint::new("postgres", vec![view("SELECT a FROM t;")])
            .with_major_version(Some("16".into()));
        assert_eq!(standard.drift(&same).summary(), ["modified view public.v"]);
    }
}
