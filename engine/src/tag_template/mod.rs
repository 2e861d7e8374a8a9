//! linuxkit's tag templates: Go's `text/template`, executed over `map[string]string{"Hash":
//! <hash>}` (`pkglib.NewFromConfig`).
//!
//! What a tag template can use is small, so this is the part of `text/template` that applies to
//! that data, with Go's semantics: text and actions with `{{-`/`-}}` trimming and `{{/* */}}`
//! comments; pipelines with `|` and parentheses; `.Hash` (a missing key prints `<no value>`),
//! `.`, string, raw-string, integer and boolean literals; `if`/`else if`/`else`/`end` and
//! `with`; the built-in functions `printf`, `print`, `println`, `len`, `index`, `slice`, `eq`,
//! `ne`, `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`. Anything else (`range`, variables,
//! `define`/`template`, other functions) is refused with an error naming it. Parse errors say
//! `invalid tag template: …`, execution errors `failed to execute tag template: …`, as
//! linuxkit's do.

mod eval;
mod functions;
mod lexer;
mod parser;

use eval::{Value, exec};
use parser::parse;

/// Renders `template` for `hash`.
pub(crate) fn render(template: &str, hash: &str) -> Result<String, String> {
    let nodes =
        parse(template).map_err(|e| format!("invalid tag template: template: tag:1: {e}"))?;
    let mut out = String::new();
    exec(&nodes, &Value::Data, hash, &mut out)
        .map_err(|e| format!("failed to execute tag template: template: tag:1: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::render;

    const HASH: &str = "5d529eb3f79a058cacd3033328aad7792e49b436";

    /// Expected values are what Go's text/template gives for the same template and data (the
    /// linuxkit-run cases in tests/compat/cases cover more).
    #[test]
    fn go_template_semantics() {
        let r = |t: &str| render(t, HASH).unwrap();
        assert_eq!(r("{{.Hash}}"), HASH);
        assert_eq!(r("v-{{ .Hash }}-x"), format!("v-{HASH}-x"));
        assert_eq!(r("plain"), "plain");
        assert_eq!(r("{{.Nope}}"), "<no value>");
        assert_eq!(r("{{slice .Hash 0 7}}"), "5d529eb");
        assert_eq!(r("{{printf \"%.12s\" .Hash}}"), "5d529eb3f79a");
        assert_eq!(r("len{{len .Hash}}"), "len40");
        assert_eq!(r("{{index . \"Hash\"}}"), HASH);
        assert_eq!(r("x-  {{- .Hash -}}  -y"), format!("x-{HASH}-y"));
        assert_eq!(r("{{if false}}x{{end}}"), "");
        assert_eq!(r("{{if .Hash}}a{{else}}b{{end}}"), "a");
        assert_eq!(
            r("{{if .Nope}}a{{else if eq .Hash \"x\"}}b{{else}}c{{end}}"),
            "c"
        );
        assert_eq!(r("{{with .Hash}}{{slice . 0 3}}{{end}}"), "5d5");
        assert_eq!(r("{{.Hash | printf \"%.3s\"}}"), "5d5");
        assert_eq!(r("{{printf \"%s-%d\" (slice .Hash 0 2) 7}}"), "5d-7");
        assert_eq!(r("{{/* a comment */}}ok"), "ok");
        assert_eq!(r("{{print 1 2 \"a\" 3}}"), "1 2a3");
        assert_eq!(r("{{index .Hash 0}}"), "53");
        assert_eq!(r("{{-3}}"), "-3");
        let e = render("{{.Hash", HASH).unwrap_err();
        assert!(
            e.starts_with("invalid tag template:") && e.contains("unclosed action"),
            "{e}"
        );
        let e = render("{{slice .Hash 0 99}}", HASH).unwrap_err();
        assert!(
            e.starts_with("failed to execute tag template:")
                && e.contains("index out of range: 99"),
            "{e}"
        );
        assert!(
            render("{{range .}}{{end}}", HASH)
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            render("{{nosuch 1}}", HASH)
                .unwrap_err()
                .contains("not defined")
        );
        assert!(
            render("{{if true}}x", HASH)
                .unwrap_err()
                .contains("unexpected EOF")
        );
    }
}
