//! The statements of an upgrade script, as far as Flotilla must know them:
//! where each starts and its first words. Comments (`--`, `/* */`, nested
//! in PostgreSQL), string literals (`'…'` with `''`, `E'…'`), quoted
//! identifiers (`"…"`) and dollar-quoted bodies (`$tag$…$tag$`) are skipped,
//! so a `;` or a `COMMIT` inside a function body is not a statement.
//!
//! Used to refuse, when a package is built, a script that would break the
//! all-or-nothing upgrade: one that commits or rolls back itself, or a
//! `no-transaction` script of several statements (each would commit alone).

/// A statement: the line it starts on (1-based) and its first two words,
/// upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub words: Vec<String>,
}

/// The non-empty statements of `sql`.
pub fn statements(sql: &str) -> Vec<Statement> {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut line = 1;
    let mut start: Option<usize> = None;
    let mut text = String::new();
    let mut i = 0;
    let finish = |start: &mut Option<usize>, text: &mut String, found: &mut Vec<Statement>| {
        if let Some(line) = start.take() {
            let words: Vec<String> = text
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .filter(|w| !w.is_empty())
                .take(2)
                .map(str::to_ascii_uppercase)
                .collect();
            found.push(Statement { line, words });
        }
        text.clear();
    };
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                text.push(' ');
            }
            b'-' if next == Some(b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if bytes[i] == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                text.push(' ');
            }
            b';' => {
                finish(&mut start, &mut text, &mut found);
                i += 1;
            }
            b'\'' | b'"' => {
                start.get_or_insert(line);
                let quote = c;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    // E'…' strings escape with a backslash; a backslash
                    // before the closing quote never ends a standard string
                    // either way it is read, so skipping it is safe.
                    if bytes[i] == b'\\' && quote == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                text.push_str(" _ ");
            }
            b'$' if dollar_tag(&bytes[i..]).is_some() => {
                start.get_or_insert(line);
                let tag = dollar_tag(&bytes[i..]).unwrap_or_default();
                i += tag.len();
                while i < bytes.len() && !bytes[i..].starts_with(tag) {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += tag.len();
                text.push_str(" _ ");
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    start.get_or_insert(line);
                }
                text.push(char::from(c));
                i += 1;
            }
        }
    }
    finish(&mut start, &mut text, &mut found);
    found
}

/// `$tag$` or `$$` at the start of `bytes`, if it opens a dollar quote.
fn dollar_tag(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes[1..].iter().position(|b| *b == b'$')? + 1;
    let tag = &bytes[1..end];
    let valid = tag.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && !tag.first().is_some_and(u8::is_ascii_digit);
    valid.then(|| &bytes[..=end])
}

/// Why a script cannot be part of an all-or-nothing upgrade, with the line.
pub fn problem(sql: &str, transactional: bool) -> Option<(usize, String)> {
    let statements = statements(sql);
    if transactional {
        return statements.iter().find_map(|s| {
            let first = s.words.first().map(String::as_str).unwrap_or_default();
            let second = s.words.get(1).map(String::as_str).unwrap_or_default();
            let controls = match first {
                "COMMIT" | "BEGIN" | "END" => true,
                "ROLLBACK" => second != "TO",
                "START" => second == "TRANSACTION",
                _ => false,
            };
            controls.then(|| {
                (
                    s.line,
                    format!(
                        "{} ends or starts a transaction itself: Flotilla runs each script in its own transaction and commits it with the history row (remove it, or make the script `{}` with one statement)",
                        s.words.join(" "),
                        super::NO_TRANSACTION
                    ),
                )
            })
        });
    }
    statements.get(1).map(|second| {
        (
            second.line,
            format!(
                "a `{}` script runs one statement, and this is its second of {}: split it into one script per statement",
                super::NO_TRANSACTION,
                statements.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str, transactional: bool) -> Option<(usize, String)> {
        problem(sql, transactional)
            .map(|(line, text)| (line, text.split(':').next().unwrap_or_default().to_owned()))
    }

    #[test]
    fn statements_start_where_their_first_word_is_and_skip_what_is_quoted() {
        let sql = "-- a comment; not a statement\nCREATE TABLE t (a text DEFAULT 'x;y');\n\n/* block; */ INSERT INTO t VALUES ($$;COMMIT;$$);\nCREATE FUNCTION f() RETURNS void AS $body$ BEGIN COMMIT; END $body$ LANGUAGE plpgsql;\n  \n";
        let found = statements(sql);
        assert_eq!(
            found,
            [
                Statement {
                    line: 2,
                    words: vec!["CREATE".into(), "TABLE".into()]
                },
                Statement {
                    line: 4,
                    words: vec!["INSERT".into(), "INTO".into()]
                },
                Statement {
                    line: 5,
                    words: vec!["CREATE".into(), "FUNCTION".into()]
                },
            ]
        );
    }

    #[test]
    fn transaction_control_in_a_script_is_refused_with_its_line() {
        assert_eq!(
            check("CREATE TABLE a (x int);\nCOMMIT;\n", true),
            Some((2, "COMMIT ends or starts a transaction itself".into()))
        );
        assert_eq!(
            check("BEGIN;\nCREATE TABLE a (x int);\n", true).map(|p| p.0),
            Some(1)
        );
        assert_eq!(
            check("INSERT INTO a VALUES (1);\n  rollback;", true).map(|p| p.0),
            Some(2)
        );
        assert_eq!(check("start transaction;", true).map(|p| p.0), Some(1));
        // Inside a transaction these are fine.
        assert_eq!(
            check(
                "SAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nSELECT 'COMMIT;';\n",
                true
            ),
            None
        );
        assert_eq!(check("DO $$ BEGIN PERFORM 1; END $$;", true), None);
    }

    #[test]
    fn a_no_transaction_script_holds_one_statement() {
        let one = "-- flotilla: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n";
        assert_eq!(check(one, false), None);
        let two = "-- flotilla: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\nCREATE INDEX CONCURRENTLY j ON t (b);\n";
        assert_eq!(check(two, false).map(|p| p.0), Some(4));
    }
}
