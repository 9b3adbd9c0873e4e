//! The table of settings: every `JITLOAD_*` environment variable jitload reads at run time,
//! with its kind, default and meaning, and the one parser for each kind.
//!
//! One table so that a setting means the same in every crate and in Python (`JITLOAD_CACHE=off`
//! and `=0` used to differ between readers), and so that `python -m jitload options` can list
//! them all with their values.

/// What values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// On or off: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case).
    Flag,
    /// A whole number within bounds (inclusive).
    Count { min: u64, max: u64 },
    /// A number of seconds from `min` to `max`.
    Seconds { min: f64, max: f64 },
    /// One of the given words (any case); the first word a value maps to is its canonical form.
    Choice(&'static [(&'static str, &'static str)]),
    /// Any non-empty text (a path, a program).
    Text,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, in the form a user would write it ("" for none).
    pub default: &'static str,
    pub doc: &'static str,
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Flag(bool),
    Count(u64),
    Seconds(f64),
    /// The canonical word.
    Choice(&'static str),
    Text(String),
}

const fn setting(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Setting {
    Setting { name, kind, default, doc }
}

/// `JITLOAD_X86_LEVEL`'s words: the canonical form is the level's name as `-march` spells it.
const X86_LEVEL_WORDS: &[(&str, &str)] = &[("auto", "auto"), ("baseline", "x86-64"), ("v2", "x86-64-v2"), ("v3", "x86-64-v3"), ("v4", "x86-64-v4")];

/// Every run-time setting.
pub const SETTINGS: &[Setting] = &[
    setting("JITLOAD_DISABLE", Kind::Flag, "off", "the .pth file does not install the import hook at start-up"),
    setting("JITLOAD_PREFER_BITCODE", Kind::Flag, "off", "a .bc beside a .so wins (default: the .so wins)"),
    setting("JITLOAD_C_SOURCE", Kind::Flag, "off", "`import foo` also finds foo.c, compiled to bitcode with clang 22 and cached"),
    setting("JITLOAD_OPT_LEVEL", Kind::Count { min: 0, max: 3 }, "2", "optimisation level of JIT compilation (as -O0..-O3)"),
    setting(
        "JITLOAD_ISOLATION",
        Kind::Choice(&[("fork", "fork"), ("none", "none")]),
        "fork",
        "compile untrusted bitcode in a forked child (fork) or in-process (none, still crash-guarded)",
    ),
    setting(
        "JITLOAD_TIER",
        Kind::Choice(&[("auto", "auto"), ("eager", "eager")]),
        "auto",
        "auto: a cold import compiles functions at -O0 when first called and the whole module at the opt level in the background; eager: everything before import returns",
    ),
    setting("JITLOAD_CACHE", Kind::Flag, "on", "use the persistent object cache"),
    setting("JITLOAD_CACHE_DIR", Kind::Text, "", "where the object cache lives (default $XDG_CACHE_HOME/jitload or ~/.cache/jitload)"),
    setting("JITLOAD_CACHE_MAX_MB", Kind::Count { min: 1, max: 1 << 40 }, "2048", "size bound of the object cache in MB"),
    setting("JITLOAD_FASTLOAD", Kind::Flag, "on", "link cached objects with jitload's LLVM-free loader (off: through LLVM's ORC)"),
    setting("JITLOAD_FAST", Kind::Flag, "on", "typed calls through copy-and-patch wrappers (off: ctypes)"),
    setting("JITLOAD_DEBUGGER", Kind::Flag, "off", "register JIT'd code with gdb (GDB JIT interface)"),
    setting("JITLOAD_PERF_MAP", Kind::Flag, "off", "append JIT'd functions to /tmp/perf-<pid>.map for perf"),
    setting(
        "JITLOAD_TUNE_CPU",
        Kind::Choice(&[("generic", "generic"), ("host", "host"), ("native", "host")]),
        "generic",
        "tune code for the host CPU (host) or LLVM's generic x86-64 model (generic); the host's instructions are used either way",
    ),
    setting(
        "JITLOAD_X86_LEVEL",
        Kind::Choice(X86_LEVEL_WORDS),
        "auto",
        "the highest x86-64 level whose bitcode variant a module may load (auto: the host's; baseline, v2, v3, v4)",
    ),
    setting(
        "JITLOAD_BUILD_LEVELS",
        Kind::Choice(&[("v3", "v3"), ("all", "all"), ("none", "none")]),
        "v3",
        "x86-64 levels the build tools compile besides the baseline: v3, all (v2, v3, v4) or none",
    ),
    setting("JITLOAD_CODEGEN_THREADS", Kind::Count { min: 1, max: 8 }, "", "threads for code generation of large modules (default: the cores, at most 8)"),
    setting("JITLOAD_COMPILE_TIMEOUT_S", Kind::Seconds { min: 0.1, max: 1e9 }, "600", "how long an isolated compile may run before it is stopped"),
    setting("JITLOAD_COMPILE_MEMORY_MB", Kind::Count { min: 1, max: 1 << 30 }, "1024", "address space the compiler child may add"),
    setting("JITLOAD_COMPILER_STDERR", Kind::Flag, "off", "let the compiler child write to the interpreter's stderr (default: captured)"),
    setting(
        "JITLOAD_CODE_MEMORY",
        Kind::Choice(&[("auto", "auto"), ("mprotect", "mprotect"), ("dualmap", "dualmap")]),
        "auto",
        "how code memory is made executable: mprotect, a dual mapping (for hosts that forbid it), or auto (mprotect, dual mapping once refused)",
    ),
    setting(
        "JITLOAD_STENCIL_MEMORY",
        Kind::Choice(&[("auto", "auto"), ("mprotect", "mprotect"), ("dualmap", "dualmap")]),
        "auto",
        "deprecated name of JITLOAD_CODE_MEMORY",
    ),
    setting("JITLOAD_STENCIL_POOL", Kind::Flag, "on", "small stencil code blocks share pages"),
    setting("JITLOAD_STENCIL_RELAX_CALLS", Kind::Flag, "on", "stencils call helpers directly rather than through a GOT"),
    setting("JITLOAD_LIBLLVM", Kind::Text, "", "the libLLVM 22 file to load (default: the environment's, then the system's)"),
    setting("JITLOAD_CLANG", Kind::Text, "", "the clang 22 the build tools and C-source imports run"),
    setting("JITLOAD_CLANGXX", Kind::Text, "", "the clang++ 22 the build tools run"),
];

/// The setting called `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Parses `raw` as `setting`'s kind. An empty value (after trimming) means "not set": `Ok(None)`.
pub fn parse(setting: &Setting, raw: &str) -> Result<Option<Value>, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let lower = text.to_ascii_lowercase();
    let value = match setting.kind {
        Kind::Flag => match lower.as_str() {
            "1" | "true" | "yes" | "on" => Value::Flag(true),
            "0" | "false" | "no" | "off" => Value::Flag(false),
            _ => return Err("expected 1/0, on/off, true/false or yes/no".into()),
        },
        Kind::Count { min, max } => match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Value::Count(n),
            _ => return Err(format!("expected a whole number from {min} to {max}")),
        },
        Kind::Seconds { min, max } => match text.parse::<f64>() {
            Ok(s) if (min..=max).contains(&s) => Value::Seconds(s),
            _ => return Err(format!("expected a number of seconds from {min} to {max}")),
        },
        Kind::Choice(words) => match words.iter().find(|(word, _)| *word == lower) {
            Some((_, canonical)) => Value::Choice(canonical),
            None => {
                let list: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                return Err(format!("expected one of {}", list.join(", ")));
            }
        },
        Kind::Text => Value::Text(text.to_string()),
    };
    Ok(Some(value))
}

/// The setting an unknown `name` is a typo of (at most two edits away), for "did you mean".
/// Farther names are not ours: build scripts and test harnesses have `JITLOAD_*` variables too.
pub fn suggest(name: &str) -> Option<&'static str> {
    SETTINGS.iter().map(|s| (edit_distance(s.name, name), s.name)).filter(|(d, _)| *d <= 2).min().map(|(_, n)| n)
}

/// Levenshtein distance between two short names, for "did you mean" suggestions (here and
/// in the engine's symbol lookups; the quadratic table is fine for names).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_mean_the_same_everywhere() {
        let cache = find("JITLOAD_CACHE").unwrap();
        for off in ["0", "off", "OFF", " false ", "no"] {
            assert_eq!(parse(cache, off), Ok(Some(Value::Flag(false))), "{off}");
        }
        for on in ["1", "on", "True", "yes"] {
            assert_eq!(parse(cache, on), Ok(Some(Value::Flag(true))), "{on}");
        }
        assert!(parse(cache, "maybe").is_err());
        assert_eq!(parse(cache, "  "), Ok(None));
    }

    #[test]
    fn numbers_and_choices_are_checked() {
        let opt = find("JITLOAD_OPT_LEVEL").unwrap();
        assert_eq!(parse(opt, "3"), Ok(Some(Value::Count(3))));
        assert!(parse(opt, "4").is_err());
        assert!(parse(opt, "-1").is_err());
        let timeout = find("JITLOAD_COMPILE_TIMEOUT_S").unwrap();
        assert_eq!(parse(timeout, "2.5"), Ok(Some(Value::Seconds(2.5))));
        assert!(parse(timeout, "0").is_err());
        assert!(parse(timeout, "inf").is_err());
        assert!(parse(timeout, "NaN").is_err());
        assert!(parse(timeout, "1e300").is_err());
        let tune = find("JITLOAD_TUNE_CPU").unwrap();
        assert_eq!(parse(tune, "Native"), Ok(Some(Value::Choice("host"))));
        assert!(parse(tune, "znver3").unwrap_err().contains("generic, host, native"));
    }

    #[test]
    fn every_setting_default_parses() {
        for s in SETTINGS {
            assert!(s.name.starts_with("JITLOAD_"), "{}", s.name);
            assert!(parse(s, s.default).is_ok(), "{}'s default {:?}", s.name, s.default);
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("JITLOAD_CACH"), Some("JITLOAD_CACHE"));
        assert_eq!(suggest("JITLOAD_OPTLEVEL"), Some("JITLOAD_OPT_LEVEL"));
        assert_eq!(suggest("JITLOAD_SOMETHING_ELSE_ENTIRELY"), None);
        // A CI script's variable, three edits from JITLOAD_CACHE: not a typo of it.
        assert_eq!(suggest("JITLOAD_CI_CACHE"), None);
    }
}
