//! The path patterns of BuildKit's file sync: `.dockerignore` exclusions with `!` exceptions,
//! and include patterns, as moby's patternmatcher and fsutil's walker apply them.
//!
//! - A pattern is cleaned (`./a/../b` → `b`, a leading `/` dropped) and matches a path when it
//!   matches the path or one of its parent directories.
//! - `*` and `?` do not cross `/`; `**` is any number of directories; `[…]` is a class.
//! - Exclusions: the last pattern that matches decides; `!pat` re-includes.
//! - A directory that is excluded is still walked when an exception could match below it.
//! - Include patterns: a path is sent when a pattern matches it or a parent, and a directory is
//!   walked when a pattern could match something below it.

/// One cleaned pattern.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    glob: Option<glob::Pattern>,
    negated: bool,
}

const OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A pattern with `.`, `..` and empty segments resolved (a leading `/` dropped), as
/// `filepath.Clean` leaves it.
fn clean(pattern: &str) -> String {
    crate::store::ingest::normalize(pattern.trim())
}

impl Pattern {
    fn parse(raw: &str) -> Option<Pattern> {
        let raw = raw.trim();
        let (negated, body) = match raw.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, raw),
        };
        let text = clean(body);
        if text.is_empty() {
            return None;
        }
        Some(Pattern {
            glob: glob::Pattern::new(&text).ok(),
            text,
            negated,
        })
    }

    /// Whether the pattern matches `path` exactly.
    fn matches_exactly(&self, path: &str) -> bool {
        match &self.glob {
            Some(g) => g.matches_with(path, OPTIONS),
            None => self.text == path,
        }
    }

    /// Whether it matches `path` or one of its parents.
    fn matches(&self, path: &str) -> bool {
        let mut at = path;
        loop {
            if self.matches_exactly(at) {
                return true;
            }
            match at.rsplit_once('/') {
                Some((parent, _)) => at = parent,
                None => return false,
            }
        }
    }

    /// Whether something below the directory `dir` could match.
    fn could_match_below(&self, dir: &str) -> bool {
        let pattern: Vec<&str> = self.text.split('/').collect();
        let dir: Vec<&str> = dir.split('/').collect();
        for (i, component) in dir.iter().enumerate() {
            let Some(p) = pattern.get(i) else {
                // The pattern is shorter: it matched a parent (or not at all).
                return false;
            };
            if *p == "**" {
                return true;
            }
            let matched = glob::Pattern::new(p)
                .map(|g| g.matches_with(component, OPTIONS))
                .unwrap_or(*p == *component);
            if !matched {
                return false;
            }
        }
        pattern.len() > dir.len()
    }
}

/// Include and exclude patterns of one file-sync request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

/// What the filter says of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Sent.
    Send,
    /// Not sent; for a directory, what is below it may still be.
    Descend,
    /// Not sent, and nothing below it is either.
    Skip,
}

impl Filter {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Filter {
        Filter {
            include: include.iter().filter_map(|p| Pattern::parse(p)).collect(),
            exclude: exclude.iter().filter_map(|p| Pattern::parse(p)).collect(),
        }
    }

    fn excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.exclude {
            if p.negated == excluded && p.matches(path) {
                excluded = !p.negated;
            }
        }
        excluded
    }

    /// Decides a path (`is_dir` for directories).
    pub(crate) fn verdict(&self, path: &str, is_dir: bool) -> Verdict {
        let included = self.include.is_empty() || self.include.iter().any(|p| p.matches(path));
        if !included {
            let below = is_dir && self.include.iter().any(|p| p.could_match_below(path));
            return if below {
                Verdict::Descend
            } else {
                Verdict::Skip
            };
        }
        if !self.excluded(path) {
            return Verdict::Send;
        }
        let exception_below = is_dir
            && self
                .exclude
                .iter()
                .any(|p| p.negated && (p.could_match_below(path) || p.text.contains("**")));
        if exception_below {
            Verdict::Descend
        } else {
            Verdict::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Filter::new(&own(include), &own(exclude))
    }

    #[test]
    fn dockerignore_semantics() {
        let f = filter(&[], &["*.log", "secret/", "!keep.log", "build/**/tmp"]);
        assert_eq!(f.verdict("a.log", false), Verdict::Skip);
        assert_eq!(f.verdict("keep.log", false), Verdict::Send);
        assert_eq!(f.verdict("sub/a.log", false), Verdict::Send); // `*` does not cross `/`
        assert_eq!(f.verdict("secret", true), Verdict::Skip);
        assert_eq!(f.verdict("secret/x", false), Verdict::Skip);
        assert_eq!(f.verdict("build/a/b/tmp", true), Verdict::Skip);
        assert_eq!(f.verdict("build/a/b/tmp/x", false), Verdict::Skip);
        assert_eq!(f.verdict("build/a/keep", false), Verdict::Send);
        assert_eq!(f.verdict("src/main.c", false), Verdict::Send);
    }

    #[test]
    fn an_exception_below_an_excluded_directory_is_reached() {
        let f = filter(&[], &["vendor", "!vendor/keep"]);
        assert_eq!(f.verdict("vendor", true), Verdict::Descend);
        assert_eq!(f.verdict("vendor/keep", false), Verdict::Send);
        assert_eq!(f.verdict("vendor/other", false), Verdict::Skip);
        let f = filter(&[], &["**", "!Dockerfile"]);
        assert_eq!(f.verdict("Dockerfile", false), Verdict::Send);
        assert_eq!(f.verdict("x", false), Verdict::Skip);
    }

    #[test]
    fn include_patterns_walk_only_towards_a_match() {
        let f = filter(&[".dockerignore", "sub/Dockerfile"], &[]);
        assert_eq!(f.verdict(".dockerignore", false), Verdict::Send);
        assert_eq!(f.verdict("other", false), Verdict::Skip);
        assert_eq!(f.verdict("sub", true), Verdict::Descend);
        assert_eq!(f.verdict("sub/Dockerfile", false), Verdict::Send);
        assert_eq!(f.verdict("sub/x", false), Verdict::Skip);
        let f = filter(&["dir"], &[]);
        assert_eq!(f.verdict("dir/deep/file", false), Verdict::Send);
    }
}
