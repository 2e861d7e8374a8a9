//! What lkpkg needs to know of a Dockerfile: the images it builds from.
//!
//! The graph needs every image a build pulls in: each stage's `FROM` and each `COPY --from=`
//! that names an image rather than a stage, after substituting the `ARG`s declared before the
//! first `FROM` (the only ones `FROM` can see) with the package's build arguments. This is a
//! reader for those instructions, not a full Dockerfile parser: line continuations (joined as
//! BuildKit joins them, empty continuation lines skipped), comments, a leading byte order
//! mark, the `escape` parser directive, heredocs (their bodies are content, scanned only for
//! the arguments they mention), `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` are
//! handled; other instructions are only scanned for which build arguments they mention.

use std::collections::{BTreeMap, BTreeSet};

/// An image a Dockerfile builds from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference after substitution (`linuxkit/base:abc…`).
    pub reference: String,
    /// The text as written (`${BASE}`).
    pub written: String,
    /// 1-based line of the instruction.
    pub line: usize,
    /// `FROM` or `COPY --from`.
    pub instruction: &'static str,
    /// A `FROM --platform=` value, after substitution of the global `ARG`s (BuildKit's
    /// automatic ones, `$BUILDPLATFORM` and `$TARGETPLATFORM`, stay as written).
    pub platform: Option<String>,
}

/// The result of reading a Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerfile {
    /// External images (not `scratch`, not a stage name), in order of appearance.
    pub images: Vec<ImageUse>,
    /// Build arguments mentioned by instructions other than `FROM` (`RUN`, `ENV`, `LABEL`, …).
    /// An argument used only to name a `FROM` image does not reach the image's content except
    /// through that image.
    pub args_used_outside_from: BTreeSet<String>,
    /// The `# syntax=` parser directive (the frontend image BuildKit is asked to run).
    pub syntax: Option<String>,
    /// Whether the last stage (the image built) has a `RUN`, `COPY` or `ADD`: then its image
    /// has a filesystem of its own. One without (`FROM scratch` + `ENTRYPOINT`, say) may be a
    /// metadata-only image, which BuildKit before 0.23 cannot export from a multi-platform
    /// solve (its `oci` exporter dereferences the platform's empty result and the builder
    /// crashes: with the engine's own BuildKit, the whole dockerd). See
    /// [`crate::executor`].
    pub final_stage_writes: bool,
    /// An `ARG` or reference whose expansion passed [`MAX_EXPANSION`] bytes (doubling `ARG`s
    /// grow 2^n from a few bytes): the package's error, not a reason to allocate without bound.
    pub oversized: Option<String>,
    /// The first line longer than BuildKit's parser takes ([`MAX_LINE`]): its 1-based number
    /// and length. The engine would refuse it, with an error that quotes the line (a 10 MB
    /// line makes an error too large for gRPC to carry).
    pub long_line: Option<(usize, usize)>,
}

/// The longest line BuildKit's Dockerfile parser takes, in bytes without the newline (Docker
/// 26.1: "dockerfile line greater than max allowed size of 65535").
pub(crate) const MAX_LINE: usize = 65_535;

/// The most bytes one substitution may produce. BuildKit's own limits on a Dockerfile's
/// values are far below what would need more.
pub const MAX_EXPANSION: usize = 64 * 1024;

/// The `# syntax=` directive of a Dockerfile, as BuildKit reads it: a `#` comment of the form
/// `key=value` among the first lines, before any instruction or other comment.
pub(crate) fn syntax_directive(text: &str) -> Option<String> {
    for line in without_bom(text).lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let directive = trimmed.strip_prefix('#')?;
        let (key, value) = directive.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("syntax") {
            return Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        }
    }
    None
}

struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
    /// The bodies of its heredocs (`RUN <<EOF` … `EOF`), one line after another: content,
    /// never instructions, but a `$VAR` in them is an argument the step uses.
    heredoc: String,
}

/// A heredoc an instruction opens: the word that ends it, and whether leading tabs are
/// stripped before comparing (`<<-EOF`).
struct Heredoc {
    terminator: String,
    strip_tabs: bool,
}

/// The heredocs a `RUN`, `COPY` or `ADD` (also after `ONBUILD`) opens, in order, as
/// BuildKit's parser finds them: each word of the form `[n]<<[-]NAME`, the name possibly
/// quoted (`<<"EOF"`, `<<'EOF'`); each ends at a line that is exactly its name (after leading
/// tabs, for `<<-`).
fn heredocs(keyword: &str, rest: &str) -> Vec<Heredoc> {
    let keyword = match keyword {
        "ONBUILD" => rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase(),
        other => other.to_owned(),
    };
    if !matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
        return Vec::new();
    }
    rest.split_whitespace()
        .filter_map(|word| {
            let word = word.trim_start_matches(|c: char| c.is_ascii_digit());
            let word = word.strip_prefix("<<")?;
            let (strip_tabs, name) = match word.strip_prefix('-') {
                Some(name) => (true, name),
                None => (false, word),
            };
            let name = ['"', '\'']
                .iter()
                .find_map(|q| name.strip_prefix(*q).and_then(|n| n.strip_suffix(*q)))
                .unwrap_or(name);
            (!name.is_empty() && !name.contains('<')).then(|| Heredoc {
                terminator: name.to_owned(),
                strip_tabs,
            })
        })
        .collect()
}

/// `text` without a leading UTF-8 byte order mark, which BuildKit's parser drops (an editor's
/// BOM before `ARG BASE` hid the package's `FROM ${BASE}` dependency from the graph).
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

fn instructions(text: &str) -> Vec<Instruction> {
    let text = without_bom(text);
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut in_directives = true;
    let mut current: Option<Instruction> = None;
    // An instruction whose heredocs are being read, and the heredocs still open.
    let mut in_heredoc: Option<(Instruction, std::collections::VecDeque<Heredoc>)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        if let Some((instruction, open)) = in_heredoc.as_mut() {
            let heredoc = open.front().expect("a heredoc is open");
            let compared = if heredoc.strip_tabs {
                raw.trim_start_matches('\t')
            } else {
                raw
            };
            if compared == heredoc.terminator {
                open.pop_front();
            } else {
                instruction.heredoc.push_str(raw);
                instruction.heredoc.push('\n');
            }
            if open.is_empty() {
                out.extend(in_heredoc.take().map(|(instruction, _)| instruction));
            }
            continue;
        }
        let trimmed = raw.trim_start();
        if in_directives {
            if let Some(directive) = trimmed.strip_prefix('#')
                && let Some((k, v)) = directive.split_once('=')
            {
                if k.trim().eq_ignore_ascii_case("escape") {
                    escape = v.trim().chars().next().unwrap_or('\\');
                }
                continue;
            }
            in_directives = false;
        }
        if trimmed.starts_with('#') {
            continue; // comments, also inside a continuation
        }
        // As BuildKit joins them: a continued line keeps the blanks before its escape and the
        // next line its leading blanks (`FROM base\` then `  AS x` is `FROM base  AS x`).
        if current.is_some() && trimmed.is_empty() {
            continue; // an empty continuation line: BuildKit skips it (and warns)
        }
        let source = if current.is_some() { raw } else { trimmed };
        let (body, continues) = match source.trim_end().strip_suffix(escape) {
            Some(body) => (body, true),
            None => (source, false),
        };
        match current.as_mut() {
            Some(instruction) => {
                instruction.rest.push_str(body);
            }
            None if body.trim().is_empty() => {}
            None => {
                let body = body.trim_start();
                let (keyword, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some(Instruction {
                    line: line_no,
                    keyword: keyword.to_ascii_uppercase(),
                    rest: rest.trim_start().to_owned(),
                    heredoc: String::new(),
                });
            }
        }
        if !continues && let Some(instruction) = current.take() {
            let open: std::collections::VecDeque<Heredoc> =
                heredocs(&instruction.keyword, &instruction.rest).into();
            if open.is_empty() {
                out.push(instruction);
            } else {
                in_heredoc = Some((instruction, open));
            }
        }
    }
    out.extend(current);
    // A heredoc never closed: BuildKit refuses the Dockerfile; what was read is kept.
    out.extend(in_heredoc.map(|(instruction, _)| instruction));
    out
}

/// Reads `text`, substituting `args` (the package's build arguments, by key).
pub fn read(text: &str, args: &BTreeMap<String, String>) -> Dockerfile {
    let mut result = Dockerfile {
        syntax: syntax_directive(text),
        long_line: text
            .lines()
            .enumerate()
            .find(|(_, line)| line.len() > MAX_LINE)
            .map(|(index, line)| (index + 1, line.len())),
        ..Dockerfile::default()
    };
    // ARGs declared before the first FROM, with their effective values.
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let mut seen_from = false;
    let mut stages: BTreeSet<String> = BTreeSet::new();
    for instruction in instructions(text) {
        match instruction.keyword.as_str() {
            "ARG" if !seen_from => {
                for declaration in instruction.rest.split_whitespace() {
                    let (name, default) = match declaration.split_once('=') {
                        Some((n, d)) => (n, Some(unquote(d))),
                        None => (declaration, None),
                    };
                    declared.insert(name.to_owned());
                    let value = args
                        .get(name)
                        .cloned()
                        .or_else(|| default.map(|d| substitute(&d, &global)));
                    if value.as_ref().is_some_and(|v| v.len() > MAX_EXPANSION) {
                        result
                            .oversized
                            .get_or_insert_with(|| format!("ARG {name}"));
                    }
                    if let Some(value) = value {
                        global.insert(name.to_owned(), value);
                    }
                }
            }
            "FROM" => {
                seen_from = true;
                result.final_stage_writes = false;
                let words: Vec<&str> = instruction
                    .rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let Some(written) = words.first() else {
                    continue;
                };
                let reference = substitute(written, &global);
                let platform = instruction
                    .rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("--platform="))
                    .map(|p| {
                        let mut vars = global.clone();
                        for automatic in ["BUILDPLATFORM", "TARGETPLATFORM"] {
                            vars.entry(automatic.to_owned())
                                .or_insert_with(|| format!("${automatic}"));
                        }
                        substitute(p, &vars)
                    });
                if let [_, as_kw, name] = words[..]
                    && as_kw.eq_ignore_ascii_case("as")
                {
                    stages.insert(name.to_ascii_lowercase());
                }
                let is_stage = stages.contains(&reference.to_ascii_lowercase())
                    && !words
                        .get(2)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&reference));
                if reference != "scratch" && !is_stage && !reference.is_empty() {
                    result.images.push(ImageUse {
                        reference,
                        written: written.to_string(),
                        line: instruction.line,
                        instruction: "FROM",
                        platform,
                    });
                }
            }
            keyword => {
                if matches!(keyword, "RUN" | "COPY" | "ADD") {
                    result.final_stage_writes = true;
                }
                if keyword == "COPY" || keyword == "ADD" {
                    for word in instruction.rest.split_whitespace() {
                        if let Some(from) = word.strip_prefix("--from=") {
                            let reference = substitute(from, &global);
                            let is_stage = stages.contains(&reference.to_ascii_lowercase())
                                || reference.parse::<usize>().is_ok();
                            if !is_stage {
                                result.images.push(ImageUse {
                                    reference,
                                    written: from.to_owned(),
                                    line: instruction.line,
                                    instruction: "COPY --from",
                                    platform: None,
                                });
                            }
                        }
                    }
                }
                for name in mentioned(&instruction.rest)
                    .into_iter()
                    .chain(mentioned(&instruction.heredoc))
                {
                    result.args_used_outside_from.insert(name);
                }
                if keyword == "ARG" {
                    for declaration in instruction.rest.split_whitespace() {
                        let name = declaration.split('=').next().unwrap_or_default();
                        // An ARG redeclared inside a stage brings the value into RUN's
                        // environment: the argument reaches the image content.
                        result.args_used_outside_from.insert(name.to_owned());
                    }
                }
            }
        }
    }
    result
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    s.to_owned()
}

/// Names of variables referenced by `$X` or `${X…}` in `s`.
fn mentioned(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let (name, next) = variable_at(s, i + 1);
            if let Some(name) = name {
                out.push(name.0.to_owned());
            }
            i = next;
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a variable reference starting after `$` at `start`: returns the name and the
/// modifier (`-default`, `+alt`), and the index after the reference.
/// A variable reference: its name and its modifier (`-default`, `+alt`).
type VariableRef<'a> = (&'a str, Option<(char, &'a str)>);

fn variable_at(s: &str, start: usize) -> (Option<VariableRef<'_>>, usize) {
    let rest = &s[start..];
    if let Some(inner) = rest.strip_prefix('{') {
        let Some(end) = inner.find('}') else {
            return (None, s.len());
        };
        let body = &inner[..end];
        let next = start + 1 + end + 1;
        let (name, modifier) = match body.find(":") {
            Some(i) => {
                let op = body[i + 1..].chars().next();
                match op {
                    Some(c @ ('-' | '+')) => (&body[..i], Some((c, &body[i + 2..]))),
                    _ => (&body[..i], None),
                }
            }
            None => (body, None),
        };
        (Some((name, modifier)), next)
    } else {
        let len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return (None, start);
        }
        (Some((&rest[..len], None)), start + len)
    }
}

/// Substitutes `$X`, `${X}`, `${X:-d}`, `${X:+a}` with `vars` (unset → empty).
pub(crate) fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if out.len() > MAX_EXPANSION {
            // Cut short; `read` reports it (see `Dockerfile::oversized`).
            break;
        }
        let c = s[i..].chars().next().unwrap_or_default();
        if c == '$' {
            let (name, next) = variable_at(s, i + 1);
            match name {
                Some((name, modifier)) => {
                    let value = vars.get(name).filter(|v| !v.is_empty());
                    match (modifier, value) {
                        (Some(('-', default)), None) => out.push_str(&substitute(default, vars)),
                        (Some(('+', alt)), Some(_)) => out.push_str(&substitute(alt, vars)),
                        (Some(('+', _)), None) => {}
                        (_, value) => out.push_str(value.map_or("", String::as_str)),
                    }
                    i = next;
                }
                None => {
                    out.push('$');
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_with_args_and_stages() {
        let text = "# syntax=docker/dockerfile:1\nARG BASE=linuxkit/alpine:1\nARG OTHER\nFROM ${BASE} AS build\nRUN echo $OTHER \\\n  && true\nFROM build\nCOPY --from=build /a /b\nCOPY --from=linuxkit/tool:2 /x /y\nFROM --platform=$BUILDPLATFORM ${OTHER:-scratch}\n";
        let d = read(text, &args(&[("BASE", "linuxkit/base:abc")]));
        let refs: Vec<&str> = d.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(refs, ["linuxkit/base:abc", "linuxkit/tool:2"]);
        assert_eq!(d.images[0].line, 4);
        assert!(d.args_used_outside_from.contains("OTHER"));
        assert!(!d.args_used_outside_from.contains("BASE"));
    }

    #[test]
    fn whether_the_last_stage_writes_files() {
        let writes = |text: &str| read(text, &BTreeMap::new()).final_stage_writes;
        assert!(writes("FROM scratch\nENTRYPOINT [\"/x\"]\nCOPY x /\n"));
        assert!(writes("FROM alpine\nrun true\n"));
        assert!(writes("FROM a AS b\nRUN x\nFROM b\nADD y /\n"));
        // Writes only in an earlier stage, or none: the image may have no layer.
        assert!(!writes(
            "FROM a AS b\nRUN x\nFROM scratch\nENTRYPOINT [\"/x\"]\n"
        ));
        assert!(!writes("FROM scratch\nLABEL a=b\n"));
        assert!(!writes(""));
    }

    #[test]
    fn substitution_forms() {
        let vars = args(&[("A", "x"), ("E", "")]);
        assert_eq!(
            substitute("$A/${A}/${E:-d}/${A:+y}/${B:+y}/$", &vars),
            "x/x/d/y//$"
        );
    }

    #[test]
    fn undeclared_arg_is_empty_and_escape_directive() {
        let d = read("# escape=`\nFROM img:`\n1\n", &BTreeMap::new());
        assert_eq!(d.images[0].reference, "img:1");
        let d = read("FROM ${NOPE}x\n", &args(&[("NOPE", "y")]));
        assert_eq!(d.images[0].reference, "x");
    }

    #[test]
    fn from_platform_is_kept_with_automatic_args_unexpanded() {
        let args = BTreeMap::from([("BASE".to_owned(), "linuxkit/base:1".to_owned())]);
        let text = "ARG BASE\nARG P=linux/arm64\nFROM --platform=$BUILDPLATFORM ${BASE} AS t\n\
                    FROM --platform=${P} ${BASE}\nFROM ${BASE}\n";
        let read = read(text, &args);
        let platforms: Vec<Option<&str>> =
            read.images.iter().map(|i| i.platform.as_deref()).collect();
        assert_eq!(
            platforms,
            [Some("$BUILDPLATFORM"), Some("linux/arm64"), None]
        );
        assert_eq!(
            syntax_directive("# syntax=docker/dockerfile:1.7\nFROM x\n").as_deref(),
            Some("docker/dockerfile:1.7")
        );
        assert_eq!(syntax_directive("FROM x\n# syntax=y\n"), None);
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read_as_buildkit_reads_them() {
        let text = "\u{feff}# syntax=docker/dockerfile:1\r\nARG BASE=a/b:1\r\nFROM ${BASE} \\\r\n  AS x\r\n";
        let d = read(text, &BTreeMap::new());
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.images.len(), 1, "{d:?}");
        assert_eq!(d.images[0].reference, "a/b:1");
        let d = read(
            "\u{feff}ARG BASE\nFROM ${BASE}\n",
            &args(&[("BASE", "o/base:t")]),
        );
        assert_eq!(d.images[0].reference, "o/base:t");
        // A continuation joins as BuildKit joins it: the next line's leading blanks stay.
        let d = read(
            "FROM scratch AS base\nFROM base\\\n  AS x\nFROM o/img:1\\\n\tAS y\n",
            &BTreeMap::new(),
        );
        let references: Vec<&str> = d.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(references, ["o/img:1"], "{d:?}");
        // An empty line inside a continuation is skipped, not the instruction's end.
        let d = read("FROM o/img:2 \\\n\n  AS x\nFROM x\n", &BTreeMap::new());
        let references: Vec<&str> = d.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(references, ["o/img:2"], "{d:?}");
    }

    /// Heredoc bodies are content: a `FROM` or `COPY --from=` inside one is no image the
    /// Dockerfile builds from (the graph listed them), a `$VAR` inside one is an argument the
    /// step uses.
    #[test]
    fn heredoc_bodies_are_content_not_instructions() {
        let text = "FROM scratch AS base\n\
                    RUN <<EOF\nFROM inner/image:1\necho $VERSION\nEOF\n\
                    COPY <<-\"ONE\" /a 2<<'TWO' /b\n\tCOPY --from=other/x:2 / /\n\tONE\nFROM y/z:3\nTWO\n\
                    FROM o/real:1\n";
        let d = read(text, &BTreeMap::new());
        let references: Vec<&str> = d.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(references, ["o/real:1"], "{d:?}");
        assert!(d.args_used_outside_from.contains("VERSION"), "{d:?}");
        assert_eq!(d.images[0].line, 11);
        // After ONBUILD too.
        let d = read(
            "FROM scratch\nONBUILD run <<EOF\nFROM not/this:1\nEOF\nFROM o/after:1\n",
            &BTreeMap::new(),
        );
        assert_eq!(d.images.len(), 1, "{d:?}");
        // `<<` inside a word is no heredoc; a JSON-form RUN has none.
        let d = read(
            "FROM scratch\nRUN echo a<<b\nRUN [\"cat\", \"<<EOF\"]\nFROM o/after:1\n",
            &BTreeMap::new(),
        );
        assert_eq!(d.images.len(), 1, "{d:?}");
    }

    #[test]
    fn a_line_longer_than_buildkit_takes_is_reported() {
        let line = |n: usize| format!("LABEL x=\"{}\"", "a".repeat(n - 10));
        let text = format!("FROM scratch\n{}\n", line(MAX_LINE));
        assert_eq!(read(&text, &BTreeMap::new()).long_line, None);
        let text = format!("FROM scratch\n{}\n{}\n", line(MAX_LINE), line(MAX_LINE + 1));
        assert_eq!(
            read(&text, &BTreeMap::new()).long_line,
            Some((3, MAX_LINE + 1))
        );
    }

    /// `ARG A0=xx`, `ARG Ai=${A(i-1)}${A(i-1)}` up to 40: 851 bytes that doubled to 2^41
    /// bytes. The expansion is cut at `MAX_EXPANSION` and reported.
    #[test]
    fn doubling_args_are_bounded_and_reported() {
        let mut text = String::from("ARG A0=xx\n");
        for i in 1..=40 {
            text.push_str(&format!("ARG A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
        }
        text.push_str("FROM scratch\n");
        let d = read(&text, &BTreeMap::new());
        assert_eq!(d.oversized.as_deref(), Some("ARG A16"));
    }
}
