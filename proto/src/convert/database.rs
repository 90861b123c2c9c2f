//! A database command's answer (the review of an upgrade, a script run, a
//! script marked applied, a refusal) to and from its wire message.

use super::link::{non_empty, time};
use crate::database::{
    Change, Discard, Drift, History, Modified, Object, Review, ScriptRun, ScriptView, TableWrites,
};
use crate::domain::ParseError;
use crate::link::DatabaseAnswer;
use crate::v1::{self, database_answer};

impl From<(String, DatabaseAnswer)> for v1::DatabaseAnswer {
    fn from((command_id, answer): (String, DatabaseAnswer)) -> Self {
        let body = match answer {
            DatabaseAnswer::Review(review) => database_answer::Body::Review((*review).into()),
            DatabaseAnswer::Run(run) => database_answer::Body::Run(v1::DatabaseScriptRun {
                script: run.script,
                ok: run.ok,
                duration_ms: run.duration_ms,
                message: run.message,
            }),
            DatabaseAnswer::Marked { script } => database_answer::Body::Marked(script),
            DatabaseAnswer::Discard(d) => database_answer::Body::Discard(discard_report(d)),
            DatabaseAnswer::Restored(d) => database_answer::Body::Restored(discard_report(d)),
            DatabaseAnswer::Refused {
                status,
                code,
                message,
            } => database_answer::Body::Refusal(v1::DatabaseRefusal {
                status: u32::from(status),
                code,
                message,
            }),
        };
        v1::DatabaseAnswer {
            command_id,
            body: Some(body),
        }
    }
}

impl TryFrom<v1::DatabaseAnswer> for (String, DatabaseAnswer) {
    type Error = ParseError;

    fn try_from(wire: v1::DatabaseAnswer) -> Result<Self, ParseError> {
        let answer = match wire.body {
            Some(database_answer::Body::Review(review)) => {
                DatabaseAnswer::Review(Box::new(review.into()))
            }
            Some(database_answer::Body::Run(run)) => DatabaseAnswer::Run(ScriptRun {
                script: run.script,
                ok: run.ok,
                duration_ms: run.duration_ms,
                message: run.message,
            }),
            Some(database_answer::Body::Marked(script)) => DatabaseAnswer::Marked { script },
            Some(database_answer::Body::Discard(d)) => DatabaseAnswer::Discard(from_report(d)),
            Some(database_answer::Body::Restored(d)) => DatabaseAnswer::Restored(from_report(d)),
            Some(database_answer::Body::Refusal(refusal)) => DatabaseAnswer::Refused {
                status: u16::try_from(refusal.status)
                    .ok()
                    .filter(|s| (400..600).contains(s))
                    .ok_or_else(|| {
                        ParseError::new(format!(
                            "refusal status {} is not an error",
                            refusal.status
                        ))
                    })?,
                code: refusal.code,
                message: refusal.message,
            },
            None => {
                return Err(ParseError::new(format!(
                    "the database answer to {} is empty",
                    wire.command_id
                )));
            }
        };
        Ok((wire.command_id, answer))
    }
}

impl From<Review> for v1::DatabaseReviewReport {
    fn from(r: Review) -> Self {
        v1::DatabaseReviewReport {
            module: r.module,
            engine: r.engine,
            from_version: r.from_version,
            to_version: r.to_version,
            installed_version: r.installed_version.unwrap_or_default(),
            standard: r.standard,
            drift: Some(v1::DatabaseDrift {
                missing: r.drift.missing.into_iter().map(object).collect(),
                added: r.drift.added.into_iter().map(object).collect(),
                modified: r
                    .drift
                    .modified
                    .into_iter()
                    .map(|m| v1::DatabaseObjectChange {
                        kind: m.kind,
                        name: m.name,
                        standard: m.standard,
                        actual: m.actual,
                        changes: m
                            .changes
                            .into_iter()
                            .map(|c| v1::DatabaseTableChange {
                                kind: c.kind,
                                name: c.name,
                                change: c.change,
                                standard: c.standard.unwrap_or_default(),
                                actual: c.actual.unwrap_or_default(),
                            })
                            .collect(),
                    })
                    .collect(),
                note: r.drift.note.unwrap_or_default(),
            }),
            summary: r.summary,
            scripts: r
                .scripts
                .into_iter()
                .map(|s| v1::DatabaseScriptState {
                    name: s.name,
                    sql: s.sql,
                    checksum: s.checksum,
                    transactional: s.transactional,
                    state: s.state,
                    message: s.message.unwrap_or_default(),
                    by: s.by.unwrap_or_default(),
                    at_unix_ms: s.at.map_or(0, |t| t.timestamp_millis()),
                })
                .collect(),
            done: r.done,
            history: r
                .history
                .into_iter()
                .map(|h| v1::DatabaseHistory {
                    module: h.module,
                    version: h.version,
                    script: h.script,
                    checksum: h.checksum,
                    applied_by: h.applied_by,
                    applied_at_unix_ms: h.applied_at.timestamp_millis(),
                    duration_ms: h.duration_ms,
                    outcome: h.outcome,
                    message: h.message,
                })
                .collect(),
        }
    }
}

fn discard_report(d: Discard) -> v1::DatabaseDiscardReport {
    v1::DatabaseDiscardReport {
        backup: d.backup,
        taken_at_unix_ms: d.taken_at.map_or(0, |t| t.timestamp_millis()),
        tables: d
            .tables
            .into_iter()
            .map(|t| v1::DatabaseTableWrites {
                table: t.table,
                inserted: t.inserted,
                updated: t.updated,
                deleted: t.deleted,
            })
            .collect(),
        counted: d.counted,
        counters_reset: d.counters_reset,
    }
}

fn from_report(d: v1::DatabaseDiscardReport) -> Discard {
    Discard {
        backup: d.backup,
        taken_at: time(d.taken_at_unix_ms),
        tables: d
            .tables
            .into_iter()
            .map(|t| TableWrites {
                table: t.table,
                inserted: t.inserted,
                updated: t.updated,
                deleted: t.deleted,
            })
            .collect(),
        counted: d.counted,
        counters_reset: d.counters_reset,
    }
}

fn object(o: Object) -> v1::DatabaseObject {
    v1::DatabaseObject {
        kind: o.kind,
        name: o.name,
        definition: o.definition,
        hash: o.hash,
    }
}

fn from_object(o: v1::DatabaseObject) -> Object {
    Object {
        kind: o.kind,
        name: o.name,
        definition: o.definition,
        hash: o.hash,
    }
}

impl From<v1::DatabaseReviewReport> for Review {
    fn from(r: v1::DatabaseReviewReport) -> Self {
        let drift = r.drift.unwrap_or_default();
        Review {
            module: r.module,
            engine: r.engine,
            from_version: r.from_version,
            to_version: r.to_version,
            installed_version: non_empty(r.installed_version),
            standard: r.standard,
            drift: Drift {
                missing: drift.missing.into_iter().map(from_object).collect(),
                added: drift.added.into_iter().map(from_object).collect(),
                modified: drift
                    .modified
                    .into_iter()
                    .map(|m| Modified {
                        kind: m.kind,
                        name: m.name,
                        standard: m.standard,
                        actual: m.actual,
                        changes: m
                            .changes
                            .into_iter()
                            .map(|c| Change {
                                kind: c.kind,
                                name: c.name,
                                change: c.change,
                                standard: non_empty(c.standard),
                                actual: non_empty(c.actual),
                            })
                            .collect(),
                    })
                    .collect(),
                note: non_empty(drift.note),
            },
            summary: r.summary,
            scripts: r
                .scripts
                .into_iter()
                .map(|s| ScriptView {
                    name: s.name,
                    sql: s.sql,
                    checksum: s.checksum,
                    transactional: s.transactional,
                    state: s.state,
                    message: non_empty(s.message),
                    by: non_empty(s.by),
                    at: time(s.at_unix_ms),
                })
                .collect(),
            done: r.done,
            history: r
                .history
                .into_iter()
                .map(|h| History {
                    module: h.module,
                    version: h.version,
                    script: h.script,
                    checksum: h.checksum,
                    applied_by: h.applied_by,
                    applied_at: time(h.applied_at_unix_ms).unwrap_or_default(),
                    duration_ms: h.duration_ms,
                    outcome: h.outcome,
                    message: h.message,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_survives_the_round_trip() {
        let at = chrono::DateTime::from_timestamp_millis(1_796_000_000_000).expect("time");
        let review = Review {
            module: "database".into(),
            engine: "postgres".into(),
            from_version: "1.0.0".into(),
            to_version: "2.0.0".into(),
            installed_version: Some("1.0.0".into()),
            standard: false,
            drift: Drift {
                missing: vec![Object::new(
                    "index",
                    "public.orders_by_date",
                    "CREATE INDEX …",
                )],
                added: vec![Object::new("table", "public.loyalty", "CREATE TABLE …")],
                modified: vec![
                    Modified {
                        kind: "view".into(),
                        name: "public.v_orders".into(),
                        standard: "SELECT 1".into(),
                        actual: "SELECT 2".into(),
                        changes: Vec::new(),
                    },
                    Modified {
                        kind: "table".into(),
                        name: "public.customer".into(),
                        standard: "id integer".into(),
                        actual: "id integer\nloyalty_code text".into(),
                        changes: vec![Change {
                            kind: "column".into(),
                            name: "public.customer.loyalty_code".into(),
                            change: "added".into(),
                            standard: None,
                            actual: Some("text".into()),
                        }],
                    },
                ],
                note: Some("the standard was read from PostgreSQL 16".into()),
            },
            summary: vec!["added table public.loyalty".into()],
            scripts: vec![
                ScriptView {
                    name: "001.sql".into(),
                    sql: "ALTER TABLE …".into(),
                    checksum: "ab".into(),
                    transactional: true,
                    state: "succeeded".into(),
                    message: Some("3 rows".into()),
                    by: Some("carol".into()),
                    at: Some(at),
                },
                ScriptView {
                    name: "002.sql".into(),
                    sql: "CREATE INDEX CONCURRENTLY …".into(),
                    checksum: "cd".into(),
                    transactional: false,
                    state: "pending".into(),
                    message: None,
                    by: None,
                    at: None,
                },
            ],
            done: false,
            history: vec![History {
                module: "database".into(),
                version: "2.0.0".into(),
                script: "001.sql".into(),
                checksum: "ab".into(),
                applied_by: "carol".into(),
                applied_at: at,
                duration_ms: 12,
                outcome: "succeeded".into(),
                message: "3 rows".into(),
            }],
        };
        for answer in [
            DatabaseAnswer::Review(Box::new(review)),
            DatabaseAnswer::Run(ScriptRun {
                script: "001.sql".into(),
                ok: false,
                duration_ms: 4,
                message: "line 3: relation \"x\" does not exist".into(),
            }),
            DatabaseAnswer::Marked {
                script: "002.sql".into(),
            },
            DatabaseAnswer::Refused {
                status: 409,
                code: "conflict".into(),
                message: "run 001.sql first".into(),
            },
        ] {
            let wire = v1::DatabaseAnswer::from(("c1".to_owned(), answer.clone()));
            assert_eq!(
                <(String, DatabaseAnswer)>::try_from(wire).expect("parses"),
                ("c1".to_owned(), answer)
            );
        }
    }

    #[test]
    fn a_refusal_must_carry_an_error_status() {
        let wire = v1::DatabaseAnswer {
            command_id: "c1".into(),
            body: Some(database_answer::Body::Refusal(v1::DatabaseRefusal {
                status: 200,
                code: "ok".into(),
                message: "fine".into(),
            })),
        };
        let e = <(String, DatabaseAnswer)>::try_from(wire).expect_err("refused");
        assert!(e.to_string().contains("200"), "{e}");
    }
}
