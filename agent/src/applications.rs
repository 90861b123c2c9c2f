//! Reading `<data>/bin/config/applicationspath.config`: which modules run on
//! this server, of which kind, installed where.
//!
//! The format (documented in the README):
//!
//! ```xml
//! <?xml version="1.0" encoding="utf-8"?>
//! <applications>
//!   <application name="ecommerce" kind="web" path="D:\Sites\ecommerce" />
//!   <application name="integration" kind="service" path="D:\Services\integration"
//!                versionFile="bin\version.txt" />
//! </applications>
//! ```
//!
//! One `<application>` node per module. A bad node or a syntax error never
//! stops the agent: it becomes a [`Problem`] naming the file and the line, and
//! the nodes that could be read are still used.

use std::path::{Path, PathBuf};

use flotilla_proto::domain::{ModuleKind, ModuleName, Problem};

use crate::install::platform::Control;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// The name of the file, as the procedure spells it.
pub const FILE_NAME: &str = "applicationspath.config";

/// The version file read in a module's folder when its node names none.
pub const DEFAULT_VERSION_FILE: &str = "version.txt";

/// One `<application>` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDeclaration {
    pub name: ModuleName,
    pub kind: ModuleKind,
    /// The install folder as written in the file.
    pub path: String,
    /// The version file, relative to the install folder.
    pub version_file: String,
    /// How the module is stopped and started during an install.
    pub control: Control,
}

impl ModuleDeclaration {
    /// The install folder; a relative path is taken from the data root.
    pub fn install_dir(&self, data_root: &Path) -> PathBuf {
        let path = Path::new(&self.path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            data_root.join(path)
        }
    }
}

/// What could be read from the file, and what was wrong with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Declarations {
    pub modules: Vec<ModuleDeclaration>,
    pub problems: Vec<Problem>,
}

/// Reads and parses the file; a missing or unreadable file is a problem too.
pub fn load(file: &Path) -> Declarations {
    match std::fs::read_to_string(file) {
        Ok(text) => parse(&file.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Declarations {
            modules: Vec::new(),
            problems: vec![Problem {
                file: Some(file.display().to_string()),
                line: None,
                message: "the file does not exist: it must hold one <application> node per module running on this server".into(),
            }],
        },
        Err(e) => Declarations {
            modules: Vec::new(),
            problems: vec![Problem {
                file: Some(file.display().to_string()),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        },
    }
}

/// Parses the text of the file; `file` is only used in problem reports.
pub fn parse(file: &str, text: &str) -> Declarations {
    let mut out = Declarations::default();
    let problem = |offset: u64, message: String| Problem {
        file: Some(file.to_owned()),
        line: Some(line_of(text, offset)),
        message,
    };
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = reader.error_position();
                out.problems
                    .push(problem(at, format!("malformed XML: {e}")));
                break;
            }
        };
        let opens = matches!(event, Event::Start(_));
        match event {
            Event::Eof => {
                if depth > 0 {
                    out.problems.push(problem(
                        start,
                        "malformed XML: the file ends before its elements are closed".into(),
                    ));
                }
                break;
            }
            Event::Start(element) | Event::Empty(element)
                if depth == 1 && element.name().as_ref() == "application" =>
            {
                if opens {
                    depth += 1;
                }
                match declaration(&element) {
                    Ok(module) if out.modules.iter().any(|m| m.name == module.name) => {
                        out.problems.push(problem(
                            start,
                            format!(
                                "module \"{}\" is declared twice; the first node is used",
                                module.name
                            ),
                        ));
                    }
                    Ok(module) => out.modules.push(module),
                    Err(message) => out.problems.push(problem(start, message)),
                }
            }
            Event::Start(element) => {
                if depth == 1 {
                    out.problems.push(problem(start, unexpected(&element)));
                } else if depth == 0 && element.name().as_ref() != "applications" {
                    out.problems.push(problem(
                        start,
                        format!(
                            "the root element must be <applications>, not <{}>",
                            name_of(&element)
                        ),
                    ));
                }
                depth += 1;
            }
            Event::Empty(element) if depth == 1 => {
                out.problems.push(problem(start, unexpected(&element)));
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    out
}

fn unexpected(element: &BytesStart<'_>) -> String {
    format!(
        "unexpected element <{}>: expected one <application name=\"...\" kind=\"...\" path=\"...\"/> per module",
        name_of(element)
    )
}

fn name_of(element: &BytesStart<'_>) -> String {
    element.name().as_ref().to_owned()
}

fn declaration(element: &BytesStart<'_>) -> Result<ModuleDeclaration, String> {
    let mut name = None;
    let mut kind = None;
    let mut path = None;
    let mut version_file = None;
    let (mut service, mut app_pool, mut stop_command, mut start_command) = (None, None, None, None);
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| format!("malformed attribute: {e}"))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("malformed attribute value: {e}"))?
            .into_owned();
        match attribute.key.as_ref() {
            "name" => name = Some(value),
            "kind" => kind = Some(value),
            "path" => path = Some(value),
            "versionFile" => version_file = Some(value),
            "service" => service = Some(value),
            "appPool" => app_pool = Some(value),
            "stopCommand" => stop_command = Some(value),
            "startCommand" => start_command = Some(value),
            _ => {}
        }
    }
    let name = name.ok_or("<application> has no name attribute")?;
    let name = ModuleName::parse(&name).map_err(|e| e.to_string())?;
    let kind = kind.ok_or_else(|| {
        format!("module \"{name}\" has no kind attribute (web, service or database)")
    })?;
    let kind = ModuleKind::parse(&kind).map_err(|e| format!("module \"{name}\": {e}"))?;
    let path = path
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| format!("module \"{name}\" has no path attribute (its install folder)"))?;
    let version_file = version_file.unwrap_or_else(|| DEFAULT_VERSION_FILE.to_owned());
    if Path::new(&version_file).is_absolute()
        || version_file.split(['/', '\\']).any(|part| part == "..")
    {
        return Err(format!(
            "module \"{name}\": versionFile \"{version_file}\" must be a path inside the install folder"
        ));
    }
    let control = match (service, app_pool, stop_command, start_command) {
        (None, None, None, None) => Control::None,
        (Some(service), None, None, None) => Control::Service(service),
        (None, Some(pool), None, None) => Control::AppPool(pool),
        (None, None, Some(stop), Some(start)) => Control::Commands { stop, start },
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            return Err(format!(
                "module \"{name}\": stopCommand and startCommand go together"
            ));
        }
        _ => {
            return Err(format!(
                "module \"{name}\": give one of service, appPool, or stopCommand with startCommand"
            ));
        }
    };
    Ok(ModuleDeclaration {
        name,
        kind,
        path,
        version_file,
        control,
    })
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: u64) -> u32 {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let newlines = text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` and renders what came out, one line per module or
    /// problem, so each case reads as input and expected output.
    fn check(text: &str, expected: &[&str]) {
        let parsed = parse("applicationspath.config", text);
        let mut got: Vec<String> = parsed
            .modules
            .iter()
            .map(|m| format!("{} {} {} {}", m.name, m.kind, m.path, m.version_file))
            .collect();
        got.extend(parsed.problems.iter().map(|p| p.to_string()));
        assert_eq!(got, expected, "for input:\n{text}");
    }

    #[test]
    fn reads_one_node_per_module() {
        check(
            r#"<?xml version="1.0" encoding="utf-8"?>
<applications>
  <application name="ecommerce" kind="web" path="D:\Sites\ecommerce" />
  <application name="integration" kind="Service" path="/srv/integration" versionFile="bin/VERSION"></application>
  <!-- a comment -->
</applications>"#,
            &[
                r"ecommerce web D:\Sites\ecommerce version.txt",
                "integration service /srv/integration bin/VERSION",
            ],
        );
    }

    #[test]
    fn an_unknown_kind_is_named_with_its_line() {
        check(
            "<applications>\n  <application name=\"a\" kind=\"web\" path=\"/a\"/>\n  <application name=\"b\" kind=\"iis\" path=\"/b\"/>\n</applications>",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 3: module \"b\": unknown module kind \"iis\": expected one of web, service, database",
            ],
        );
    }

    #[test]
    fn malformed_xml_names_the_line_and_keeps_what_came_before() {
        check(
            "<applications>\n  <application name=\"a\" kind=\"web\" path=\"/a\"/>\n  <application name=\"b\" kind=\"web\" path=\"/b\"\n</applications>",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 3: malformed attribute: position 56: attribute key must be directly followed by `=` or space",
                "applicationspath.config, line 4: malformed XML: the file ends before its elements are closed",
            ],
        );
    }

    #[test]
    fn missing_attributes_and_bad_names_are_problems() {
        check(
            "<applications>\n<application kind=\"web\" path=\"/a\"/>\n<application name=\"x\" path=\"/x\"/>\n<application name=\"y\" kind=\"web\"/>\n<application name=\"../z\" kind=\"web\" path=\"/z\"/>\n<application name=\"w\" kind=\"web\" path=\"/w\" versionFile=\"../../etc/passwd\"/>\n</applications>",
            &[
                "applicationspath.config, line 2: <application> has no name attribute",
                "applicationspath.config, line 3: module \"x\" has no kind attribute (web, service or database)",
                "applicationspath.config, line 4: module \"y\" has no path attribute (its install folder)",
                "applicationspath.config, line 5: module name \"../z\" may only hold letters, digits, '-', '_' and '.', starting with a letter or digit",
                "applicationspath.config, line 6: module \"w\": versionFile \"../../etc/passwd\" must be a path inside the install folder",
            ],
        );
    }

    #[test]
    fn duplicates_and_strangers_are_reported() {
        check(
            "<applications>\n<application name=\"a\" kind=\"web\" path=\"/a\"/>\n<application name=\"a\" kind=\"service\" path=\"/b\"/>\n<module name=\"c\"/>\n</applications>",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 3: module \"a\" is declared twice; the first node is used",
                "applicationspath.config, line 4: unexpected element <module>: expected one <application name=\"...\" kind=\"...\" path=\"...\"/> per module",
            ],
        );
    }

    #[test]
    fn an_unterminated_document_is_a_syntax_error() {
        check(
            "<applications>\n<application name=\"a\" kind=\"web\" path=\"/a\"/>\n<!-- unterminated",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 3: malformed XML: syntax error: comment not closed: `-->` not found before end of input",
            ],
        );
    }

    /// A wrong root is reported, but the modules under it are still used.
    #[test]
    fn wrong_root_and_unclosed_root() {
        check(
            "<apps>\n<application name=\"a\" kind=\"web\" path=\"/a\"/>\n</apps>",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 1: the root element must be <applications>, not <apps>",
            ],
        );
        check(
            "<applications>\n<application name=\"a\" kind=\"web\" path=\"/a\"/>\n",
            &[
                "a web /a version.txt",
                "applicationspath.config, line 3: malformed XML: the file ends before its elements are closed",
            ],
        );
    }

    #[test]
    fn a_missing_file_says_what_it_should_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(FILE_NAME);
        let loaded = load(&file);
        assert!(loaded.modules.is_empty());
        assert_eq!(loaded.problems.len(), 1);
        let problem = loaded.problems[0].to_string();
        assert!(
            problem.contains(FILE_NAME) && problem.contains("one <application> node per module"),
            "{problem}"
        );
    }
}
