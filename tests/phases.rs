//! docs/phases.md against the code: the phases, the transitions and the
//! ways out it draws must be the ones `src/` has (see "Keeping this page
//! true" there for the rules, and the `// phase:` comment that every
//! `set_phase` call carries).
//!
//! The files are read when the test runs, and `src/` is walked whole, so a
//! `set_phase` call in a file that does not exist yet is found too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The pseudo-state the diagram closes into.
const CLOSED: &str = "Closed";
/// Mermaid's start and end marker.
const START_END: &str = "[*]";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

/// The variant names of `enum <name>` in `src`: the identifiers that open
/// a line of its body (doc comments and attributes skipped).
fn enum_variants(src: &str, name: &str) -> Vec<String> {
    let head = format!("enum {name} {{");
    let start = src
        .find(&head)
        .unwrap_or_else(|| panic!("no `{head}` in the source"));
    let mut variants = Vec::new();
    for line in src[start + head.len()..].lines() {
        let line = line.trim();
        if line == "}" {
            return variants;
        }
        if line.is_empty() || line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        let ident: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !ident.is_empty() && ident.starts_with(|c: char| c.is_ascii_uppercase()) {
            variants.push(ident);
        }
    }
    panic!("`{head}` is not closed");
}

/// One `// phase: From|From -> To (cause)` comment, where it is.
#[derive(Debug)]
struct Annotation {
    at: String,
    from: Vec<String>,
    to: String,
}

/// Parses the text after `// phase:`.
fn parse_annotation(text: &str, at: &str) -> Annotation {
    let (from, rest) = text
        .split_once("->")
        .unwrap_or_else(|| panic!("{at}: `// phase:` without `->`: {text}"));
    let from: Vec<String> = from.split('|').map(|s| s.trim().to_string()).collect();
    let rest = rest.trim();
    let (to, cause) = rest.split_once(' ').unwrap_or((rest, ""));
    let cause = cause.trim();
    assert!(
        cause.starts_with('(') && cause.ends_with(')') && cause.len() > 2,
        "{at}: `// phase:` needs a cause in parentheses: {text}"
    );
    assert!(
        from.iter().all(|f| !f.is_empty()),
        "{at}: an empty source phase: {text}"
    );
    Annotation {
        at: at.to_string(),
        from,
        to: to.to_string(),
    }
}

/// Every `set_phase` call under `src/` with its annotation. Panics on a
/// call without one, on an annotation whose target is not the call's, and
/// on an annotation with no call under it.
fn annotated_calls() -> Vec<Annotation> {
    let mut found = Vec::new();
    for path in rust_files(&root().join("src")) {
        let src = fs::read_to_string(&path).expect("read source");
        let name = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let lines: Vec<&str> = src.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.trim();
            let at = format!("{name}:{}", i + 1);
            if code.starts_with("// phase:") {
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                assert!(
                    next.contains("set_phase(") && !next.starts_with("//"),
                    "{at}: `// phase:` comment with no `set_phase` call on the next line"
                );
                continue;
            }
            if code.starts_with("//")
                || !code.contains("set_phase(")
                || code.contains("fn set_phase")
            {
                continue;
            }
            let above = i
                .checked_sub(1)
                .map_or("", |j| lines[j].trim())
                .strip_prefix("// phase:")
                .unwrap_or_else(|| {
                    panic!(
                        "{at}: `set_phase` call without a `// phase: From -> To (cause)` \
                         comment on the line above it: {code}"
                    )
                });
            let annotation = parse_annotation(above.trim(), &at);
            let target = code
                .split("Phase::")
                .nth(1)
                .map(|t| {
                    t.chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect::<String>()
                })
                .unwrap_or_else(|| panic!("{at}: cannot tell which phase this call sets: {code}"));
            assert_eq!(
                annotation.to, target,
                "{at}: the comment says `-> {}`, the call sets `Phase::{target}`",
                annotation.to
            );
            found.push(annotation);
        }
    }
    found
}

/// A diagram edge: source, target, label.
type Edge = (String, String, String);

/// The body of the first fenced block of `kind` in `doc`.
fn fenced(doc: &str, kind: &str) -> String {
    let open = format!("```{kind}\n");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("docs/phases.md has no ```{kind} block"))
        + open.len();
    let len = doc[start..].find("```").expect("unclosed fenced block");
    doc[start..start + len].to_string()
}

/// The edges of the Mermaid diagram (`A --> B` or `A --> B : label`).
fn mermaid_edges(doc: &str) -> Vec<Edge> {
    let block = fenced(doc, "mermaid");
    assert!(
        block.trim_start().starts_with("stateDiagram-v2"),
        "the mermaid block is not a stateDiagram-v2"
    );
    block
        .lines()
        .filter_map(|line| {
            let (from, rest) = line.split_once("-->")?;
            let (to, label) = rest.split_once(':').unwrap_or((rest, ""));
            Some((
                from.trim().to_string(),
                to.trim().to_string(),
                label.trim().to_string(),
            ))
        })
        .collect()
}

/// The rows of every Markdown table in `doc`, as trimmed cells without
/// backticks (header and separator rows included; callers filter).
fn table_rows(doc: &str) -> Vec<Vec<String>> {
    doc.lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

/// The words of a label or cell: `PeerClosed, ShutdownDeadline` gives both.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

struct Model {
    phases: Vec<String>,
    reasons: Vec<String>,
    annotations: Vec<Annotation>,
    edges: Vec<Edge>,
    doc: String,
}

fn model() -> Model {
    let connection = read("src/connection/mod.rs");
    let doc = read("docs/phases.md");
    let model = Model {
        phases: enum_variants(&connection, "Phase"),
        reasons: enum_variants(&connection, "CloseReason"),
        annotations: annotated_calls(),
        edges: mermaid_edges(&doc),
        doc,
    };
    assert!(model.phases.len() >= 2, "parsed phases: {:?}", model.phases);
    assert!(
        model.reasons.len() >= 2,
        "parsed reasons: {:?}",
        model.reasons
    );
    assert!(!model.annotations.is_empty(), "no `set_phase` call found");
    assert!(!model.edges.is_empty(), "no edge in the diagram");
    model
}

impl Model {
    fn is_phase(&self, name: &str) -> bool {
        self.phases.iter().any(|p| p == name)
    }

    /// The diagram's edges between two phases, as (from, to).
    fn phase_edges(&self) -> BTreeSet<(String, String)> {
        self.edges
            .iter()
            .filter(|(f, t, _)| self.is_phase(f) && self.is_phase(t))
            .map(|(f, t, _)| (f.clone(), t.clone()))
            .collect()
    }

    /// For each phase with an edge into `Closed`, the words of its label.
    fn closes(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to, label) in &self.edges {
            if to == CLOSED {
                out.entry(from.clone()).or_default().extend(words(label));
            }
        }
        out
    }
}

#[test]
fn every_phase_is_drawn_and_every_state_drawn_is_a_phase() {
    let m = model();
    let drawn: BTreeSet<&str> = m
        .edges
        .iter()
        .flat_map(|(f, t, _)| [f.as_str(), t.as_str()])
        .collect();
    for phase in &m.phases {
        assert!(
            drawn.contains(phase.as_str()),
            "Phase::{phase} is missing from the diagram in docs/phases.md"
        );
    }
    for state in &drawn {
        assert!(
            m.is_phase(state) || *state == CLOSED || *state == START_END,
            "the diagram draws `{state}`, which is not a Phase (phases: {:?})",
            m.phases
        );
    }
    let text = fenced(&m.doc, "text");
    let text_words = words(&text);
    for phase in &m.phases {
        assert!(
            text_words.contains(phase),
            "Phase::{phase} is missing from the text diagram in docs/phases.md"
        );
    }
}

#[test]
fn every_transition_the_code_makes_is_drawn_and_every_one_drawn_is_made() {
    let m = model();
    let drawn = m.phase_edges();
    let mut made = BTreeSet::new();
    for a in &m.annotations {
        for from in &a.from {
            assert!(m.is_phase(from), "{}: `{from}` is not a Phase", a.at);
            assert!(m.is_phase(&a.to), "{}: `{}` is not a Phase", a.at, a.to);
            let edge = (from.clone(), a.to.clone());
            assert!(
                drawn.contains(&edge),
                "{}: the code changes {from} -> {}, which the diagram in docs/phases.md \
                 does not draw",
                a.at,
                a.to
            );
            made.insert(edge);
        }
    }
    for (from, to) in &drawn {
        assert!(
            made.contains(&(from.clone(), to.clone())),
            "docs/phases.md draws {from} -> {to}, but no `// phase:` comment on a \
             `set_phase` call names it"
        );
    }
}

#[test]
fn the_transition_table_lists_the_drawn_edges() {
    let m = model();
    let drawn = m.phase_edges();
    let listed: BTreeSet<(String, String)> = table_rows(&m.doc)
        .into_iter()
        .filter(|row| row.len() >= 2 && m.is_phase(&row[0]) && m.is_phase(&row[1]))
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    for (from, to) in &drawn {
        assert!(
            listed.contains(&(from.clone(), to.clone())),
            "docs/phases.md draws {from} -> {to} but its table has no row for it"
        );
    }
    for (from, to) in &listed {
        assert!(
            drawn.contains(&(from.clone(), to.clone())),
            "the table in docs/phases.md lists {from} -> {to}, which the diagram does not draw"
        );
    }
}

#[test]
fn every_close_reason_is_drawn_and_listed_with_the_phases_it_closes() {
    let m = model();
    let closes = m.closes();
    for from in closes.keys() {
        assert!(
            m.is_phase(from),
            "`{from} --> Closed` in docs/phases.md: `{from}` is not a Phase"
        );
    }
    let rows = table_rows(&m.doc);
    for reason in &m.reasons {
        let drawn_from: BTreeSet<String> = closes
            .iter()
            .filter(|(_, labels)| labels.contains(reason))
            .map(|(from, _)| from.clone())
            .collect();
        assert!(
            !drawn_from.is_empty(),
            "CloseReason::{reason} labels no edge into Closed in docs/phases.md"
        );
        let row = rows
            .iter()
            .find(|row| row.first() == Some(reason))
            .unwrap_or_else(|| panic!("docs/phases.md has no table row for CloseReason::{reason}"));
        let listed_from: BTreeSet<String> = row
            .get(1)
            .map(|cell| words(cell).into_iter().filter(|w| m.is_phase(w)).collect())
            .unwrap_or_default();
        assert_eq!(
            listed_from, drawn_from,
            "CloseReason::{reason}: the table's \"From\" and the diagram's edges into Closed \
             disagree"
        );
    }
    for labels in closes.values() {
        for word in labels {
            if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                assert!(
                    m.reasons.contains(word),
                    "an edge into Closed names `{word}`, which is not a CloseReason"
                );
            }
        }
    }
}
