//! Which entries of a working directory stay out of its archive: the job's
//! `excludes` and the `.gitignore` files the directory holds, both in
//! gitignore's pattern language, as Ray's runtime env reads them (so a
//! project's virtual environment, build outputs and checkpoints stay home
//! without listing them again).
//!
//! The walk in `pack` prunes a directory that is left out, so as in git a
//! negated pattern (`!keep.txt`) brings back an entry only when no
//! directory above it was left out. A `.gitignore` speaks for its own
//! directory and below; the deepest one with a pattern matching an entry
//! decides, and within one file the last matching line does. The job's
//! `excludes` come first: an entry they leave out stays out whatever the
//! `.gitignore` files say. Setting [`IGNORE_GITIGNORE_ENV`] to `1` (Ray's
//! `RAY_RUNTIME_ENV_IGNORE_GITIGNORE`) ships what the `.gitignore` files
//! name too.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Set to `1` in the submitting process to ship the entries the working
/// directory's `.gitignore` files name.
pub const IGNORE_GITIGNORE_ENV: &str = "OXRAY_RUNTIME_ENV_IGNORE_GITIGNORE";

/// The job's `excludes`, and whether `.gitignore` files are read.
#[derive(Debug, Clone)]
pub(crate) struct Excludes {
    patterns: Vec<Pattern>,
    read_gitignore: bool,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            patterns: Vec::new(),
            read_gitignore: true,
        }
    }
}

impl Excludes {
    /// The job's `excludes`; a pattern that could name nothing under the
    /// working directory (`..`, `a//b`, an empty one) is an error naming it.
    pub(crate) fn new(patterns: &[String]) -> Result<Self> {
        let patterns = patterns
            .iter()
            .map(|line| {
                Pattern::parse(line)
                    .filter(|pattern| pattern.names_entries())
                    .ok_or_else(|| Error::WorkingDir {
                        path: format!("excludes: {line:?}"),
                        problem: "not a pattern of names under the working directory".into(),
                    })
            })
            .collect::<Result<_>>()?;
        let read_gitignore = std::env::var(IGNORE_GITIGNORE_ENV).map_or(true, |v| v != "1");
        Ok(Excludes {
            patterns,
            read_gitignore,
        })
    }

    /// The rules for one walk of a directory, which gathers its
    /// `.gitignore` files as it enters each directory.
    pub(super) fn walk(&self) -> ExcludeWalk<'_> {
        ExcludeWalk {
            excludes: self,
            gitignores: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    fn without_gitignore(mut self) -> Self {
        self.read_gitignore = false;
        self
    }
}

/// The rules in force during one walk: the job's `excludes` and the
/// patterns of each `.gitignore` met so far, by the directory holding it.
pub(super) struct ExcludeWalk<'a> {
    excludes: &'a Excludes,
    gitignores: BTreeMap<String, Vec<Pattern>>,
}

impl ExcludeWalk<'_> {
    /// Reads the `.gitignore` of the directory at `relative` (`on_disk`),
    /// if it has one; a file that cannot be read is an error naming it.
    pub(super) fn enter(&mut self, on_disk: &Path, relative: &str) -> Result<()> {
        if !self.excludes.read_gitignore {
            return Ok(());
        }
        let file = on_disk.join(".gitignore");
        if !file.is_file() {
            return Ok(());
        }
        let bytes = std::fs::read(&file).map_err(|e| Error::WorkingDir {
            path: file.display().to_string(),
            problem: e.to_string(),
        })?;
        let patterns: Vec<Pattern> = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(Pattern::parse)
            .collect();
        if !patterns.is_empty() {
            self.gitignores.insert(relative.to_string(), patterns);
        }
        Ok(())
    }

    /// Whether the entry at `relative` (`/`-separated from the working
    /// directory) is left out.
    pub(super) fn excludes(&self, relative: &str, is_dir: bool) -> bool {
        let names: Vec<&str> = relative.split('/').collect();
        if last_match(&self.excludes.patterns, &names, is_dir) == Some(true) {
            return true;
        }
        // The deepest `.gitignore` above the entry with a say decides.
        (0..names.len())
            .rev()
            .find_map(|depth| {
                let patterns = self.gitignores.get(&names[..depth].join("/"))?;
                last_match(patterns, &names[depth..], is_dir)
            })
            .unwrap_or(false)
    }
}

/// What the last of `patterns` that matches says: `true` left out, `false`
/// brought back (`!`); `None` when none matches.
fn last_match(patterns: &[Pattern], names: &[&str], is_dir: bool) -> Option<bool> {
    patterns
        .iter()
        .rev()
        .find(|pattern| pattern.matches(names, is_dir))
        .map(|pattern| !pattern.negated)
}

/// One line of gitignore's language.
#[derive(Debug, Clone)]
struct Pattern {
    /// `!pattern`: brings back what an earlier line left out.
    negated: bool,
    /// `pattern/`: matches directories only.
    dir_only: bool,
    /// Has a `/` before its end: matched against the path from the
    /// directory whose rules it is in; otherwise against an entry's name at
    /// any depth below it.
    anchored: bool,
    /// The `/`-separated parts; `**` matches any number of directories.
    components: Vec<String>,
}

impl Pattern {
    /// Parses one line; `None` for a blank line or a comment.
    fn parse(line: &str) -> Option<Pattern> {
        let line = line.trim_end_matches(['\r', ' ']);
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (negated, line) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line.strip_prefix('\\').unwrap_or(line)),
        };
        let dir_only = line.ends_with('/');
        let line = line.trim_end_matches('/');
        let anchored = line.contains('/');
        let components = line
            .trim_start_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        Some(Pattern {
            negated,
            dir_only,
            anchored,
            components,
        })
    }

    /// Whether every part could name an entry (no `.`, `..` or empty part).
    fn names_entries(&self) -> bool {
        self.components
            .iter()
            .all(|c| !c.is_empty() && c != "." && c != "..")
    }

    fn matches(&self, names: &[&str], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            components_match(&self.components, names)
        } else {
            names
                .last()
                .is_some_and(|name| wildcard_match(&self.components[0], name))
        }
    }
}

/// Matches a path's names against a pattern's parts, where `**` stands for
/// any number of directories (and, last, for anything inside at least one).
fn components_match(pattern: &[String], names: &[&str]) -> bool {
    match pattern.split_first() {
        None => names.is_empty(),
        Some((first, [])) if first == "**" => !names.is_empty(),
        Some((first, rest)) if first == "**" => {
            components_match(rest, names)
                || (!names.is_empty() && components_match(pattern, &names[1..]))
        }
        Some((first, rest)) => names.split_first().is_some_and(|(name, names)| {
            wildcard_match(first, name) && components_match(rest, names)
        }),
    }
}

/// Matches one name: `*` any run of characters, `?` any one, `[a-z]` /
/// `[!a-z]` one of (or none of) a set, `\x` the character `x`.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and how much of the name it has taken.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(_) => one_char(&pattern[p..], name[n]),
            None => None,
        };
        match (step, star) {
            (Some(width), _) => {
                p += width;
                n += 1;
            }
            (None, Some((star_p, star_n))) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether the pattern's first element matches `c`: how many pattern
/// characters it spans when it does.
fn one_char(pattern: &[char], c: char) -> Option<usize> {
    match pattern {
        ['?', ..] => Some(1),
        ['\\', escaped, ..] => (*escaped == c).then_some(2),
        ['[', rest @ ..] => {
            let (negated, body) = match rest {
                ['!' | '^', body @ ..] => (true, body),
                body => (false, body),
            };
            // A `]` first in the set is a member, not its end; without a
            // closing `]` the `[` is itself.
            let Some(end) = body.iter().skip(1).position(|x| *x == ']') else {
                return (c == '[').then_some(1);
            };
            let end = end + 1;
            let set = &body[..end];
            let mut member = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    member |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    member |= set[i] == c;
                    i += 1;
                }
            }
            (member != negated).then_some(1 + usize::from(negated) + end + 1)
        }
        [literal, ..] => (*literal == c).then_some(1),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(excludes: &Excludes, gitignores: &[(&str, &str)], path: &str, dir: bool) -> bool {
        let mut walk = excludes.walk();
        for (base, text) in gitignores {
            walk.gitignores.insert(
                base.to_string(),
                text.lines().filter_map(Pattern::parse).collect(),
            );
        }
        walk.excludes(path, dir)
    }

    #[test]
    fn wildcards_match_within_one_name() {
        for (pattern, name, matches) in [
            ("*.ckpt", "model.ckpt", true),
            ("*.ckpt", "model.ckpt.bak", false),
            ("run-?", "run-1", true),
            ("run-?", "run-10", false),
            ("*", "", true),
            ("a*b*c", "aXXbYc", true),
            ("a*b*c", "aXXbY", false),
            ("exact", "exact", true),
            ("run-[0-9]", "run-7", true),
            ("run-[0-9]", "run-x", false),
            ("run-[!0-9]", "run-x", true),
            ("run-[!0-9]", "run-7", false),
            ("[]a]b", "]b", true),
            ("\\*.py", "*.py", true),
            ("\\*.py", "a.py", false),
            ("*.[ch]", "x.h", true),
            ("unclosed[", "unclosed[", true),
        ] {
            assert_eq!(wildcard_match(pattern, name), matches, "{pattern} {name}");
        }
    }

    #[test]
    fn patterns_follow_gitignore_rules() {
        let none = Excludes::default();
        // (file at the root, path, is a directory, left out)
        for (gitignore, path, dir, left_out) in [
            ("build", "a/b/build", true, true),
            ("build", "a/b/build", false, true),
            ("build/", "a/build", false, false),
            ("build/", "a/build", true, true),
            ("/build", "a/build", true, false),
            ("/build", "build", true, true),
            ("docs/*.md", "docs/x.md", false, true),
            ("docs/*.md", "docs/sub/x.md", false, false),
            ("**/logs", "a/b/logs", true, true),
            ("**/logs", "logs", true, true),
            ("a/**/z", "a/z", false, true),
            ("a/**/z", "a/b/c/z", false, true),
            ("data/**", "data", true, false),
            ("data/**", "data/x", false, true),
            ("*.log\n!keep.log", "keep.log", false, false),
            ("*.log\n!keep.log", "other.log", false, true),
            ("!keep.log\n*.log", "keep.log", false, true),
            ("# *.py\n\n  ", "a.py", false, false),
            ("\\#notes", "#notes", false, true),
            ("trailing.txt   ", "trailing.txt", false, true),
        ] {
            assert_eq!(
                excluded(&none, &[("", gitignore)], path, dir),
                left_out,
                "{gitignore:?} {path}"
            );
        }
    }

    #[test]
    fn the_deepest_gitignore_decides_and_the_jobs_excludes_win() {
        let none = Excludes::default();
        let files = [("", "*.bin"), ("models", "!best.bin\n/local")];
        assert!(excluded(&none, &files, "data/x.bin", false));
        assert!(!excluded(&none, &files, "models/best.bin", false));
        assert!(excluded(&none, &files, "models/other.bin", false));
        // Anchored to the directory of its file.
        assert!(excluded(&none, &files, "models/local", true));
        assert!(!excluded(&none, &files, "local", true));

        let job = Excludes::new(&["best.bin".into()]).unwrap();
        assert!(excluded(&job, &files, "models/best.bin", false));
        // Without `.gitignore` files, only the job's patterns count.
        let walk_dir = tempfile::tempdir().unwrap();
        std::fs::write(walk_dir.path().join(".gitignore"), "*.bin\n").unwrap();
        let ignoring = Excludes::new(&[]).unwrap().without_gitignore();
        let mut walk = ignoring.walk();
        walk.enter(walk_dir.path(), "").unwrap();
        assert!(!walk.excludes("x.bin", false));
        let reading = Excludes::new(&[]).unwrap();
        let mut walk = reading.walk();
        walk.enter(walk_dir.path(), "").unwrap();
        assert!(walk.excludes("x.bin", false));
    }

    #[test]
    fn excludes_that_name_nothing_are_refused() {
        for bad in ["../up", "a//b", "", "./x", "!"] {
            let error = Excludes::new(&[bad.to_string()]).unwrap_err().to_string();
            assert!(error.contains("excludes"), "{bad}: {error}");
        }
    }
}
