//! jitload's settings, read from the environment once, by one parser, into one [`Options`].
//!
//! Every other crate takes its settings from here and reads no environment variable itself.
//! The environment is read the first time anything asks ([`get`]); later changes to the
//! process environment have no effect, as with most programs' settings. A program that must
//! change a setting while running calls [`set`] (from Python, `jitload.set_option`), which
//! goes through the same parser. A value that does not parse, and a `JITLOAD_*` name that is
//! not a setting, are reported in [`Options::problems`] (the Python package turns each into a
//! warning naming the variable) and the default is used.
//!
//! Each of jitload's two native modules links its own copy of this crate; both read the same
//! environment, and `jitload.set_option` sets the value in both.

mod settings;

pub use settings::{edit_distance, find, parse, Kind, Setting, Value, SETTINGS};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How code memory is made executable (`JITLOAD_CODE_MEMORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMemoryMode {
    /// mprotect, switching to a dual mapping the first time the host refuses.
    Auto,
    Mprotect,
    DualMap,
}

/// Every run-time setting, parsed.
#[derive(Debug, Clone)]
pub struct Options {
    pub disable: bool,
    pub prefer_bitcode: bool,
    pub c_source: bool,
    pub opt_level: u8,
    /// Compile untrusted input in a forked child.
    pub isolate: bool,
    /// Compile cold imports in tiers (`JITLOAD_TIER=auto`, see the engine's `tiers`).
    pub tiered: bool,
    pub cache: bool,
    /// Where the object cache lives, if anywhere (`JITLOAD_CACHE_DIR`, XDG rules).
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
    pub fastload: bool,
    pub fast_wrappers: bool,
    pub debugger: bool,
    pub perf_map: bool,
    pub tune_for_host: bool,
    /// The highest x86-64 level (1 = baseline .. 4) whose bitcode variant may be loaded
    /// (`JITLOAD_X86_LEVEL`); None: the highest the host supports.
    pub x86_level: Option<u8>,
    pub codegen_threads: usize,
    pub compile_timeout: Duration,
    pub compile_memory_mb: u64,
    pub compiler_stderr: bool,
    pub code_memory: CodeMemoryMode,
    pub stencil_pool: bool,
    pub stencil_relax_calls: bool,
    pub libllvm: Option<String>,
    pub clang: Option<String>,
    pub clangxx: Option<String>,
    /// `LD_LIBRARY_PATH`'s directories, searched for the libraries a module names.
    pub library_path: Vec<PathBuf>,
    /// What did not parse, one sentence each naming the variable.
    pub problems: Vec<String>,
    /// The settings given (by the environment or [`set`]), as given: for messages.
    given: BTreeMap<&'static str, String>,
    /// Every setting's value, defaults included (for listing).
    values: BTreeMap<&'static str, Value>,
}

impl Options {
    /// Parses the settings among `vars` (name, value pairs; other variables are ignored).
    pub fn from_vars<I: IntoIterator<Item = (OsString, OsString)>>(vars: I) -> Options {
        let vars: BTreeMap<String, String> = vars.into_iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect();
        let mut problems = Vec::new();
        let mut given = BTreeMap::new();
        let mut values = BTreeMap::new();
        // A name close to a setting's is a typo worth a warning; other JITLOAD_* names belong
        // to build scripts and test harnesses, and are none of our business.
        for name in vars.keys().filter(|n| n.starts_with("JITLOAD_")) {
            if find(name).is_none() {
                if let Some(hint) = settings::suggest(name) {
                    problems.push(format!("{name} is not a jitload setting (did you mean {hint}?); ignored"));
                }
            }
        }
        for setting in SETTINGS {
            let parsed = match vars.get(setting.name) {
                Some(raw) => match parse(setting, raw) {
                    Ok(Some(value)) => {
                        given.insert(setting.name, raw.trim().to_string());
                        Some(value)
                    }
                    Ok(None) => None,
                    Err(why) => {
                        let default = if setting.default.is_empty() { String::new() } else { format!(" ({})", setting.default) };
                        problems.push(format!("{}={:?} is not valid: {why}; using the default{default}", setting.name, raw));
                        None
                    }
                },
                None => None,
            };
            if let Some(value) = parsed.or_else(|| parse(setting, setting.default).ok().flatten()) {
                values.insert(setting.name, value);
            }
        }
        let var = |name: &str| vars.get(name).map(OsString::from);
        Options::build(values, given, problems, var("XDG_CACHE_HOME"), var("HOME"), vars.get("LD_LIBRARY_PATH").cloned())
    }

    fn build(
        values: BTreeMap<&'static str, Value>,
        given: BTreeMap<&'static str, String>,
        problems: Vec<String>,
        xdg_cache_home: Option<OsString>,
        home: Option<OsString>,
        ld_library_path: Option<String>,
    ) -> Options {
        let flag = |name| matches!(values.get(name), Some(Value::Flag(true)));
        let count = |name| match values.get(name) {
            Some(Value::Count(n)) => Some(*n),
            _ => None,
        };
        let text = |name| match values.get(name) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let choice = |name| match values.get(name) {
            Some(Value::Choice(c)) => *c,
            _ => "",
        };
        // The new name wins over the deprecated one when both are given.
        let code_memory = match (given.contains_key("JITLOAD_CODE_MEMORY"), choice("JITLOAD_CODE_MEMORY"), choice("JITLOAD_STENCIL_MEMORY")) {
            (false, _, "mprotect") | (true, "mprotect", _) => CodeMemoryMode::Mprotect,
            (false, _, "dualmap") | (true, "dualmap", _) => CodeMemoryMode::DualMap,
            _ => CodeMemoryMode::Auto,
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let seconds = match values.get("JITLOAD_COMPILE_TIMEOUT_S") {
            Some(Value::Seconds(s)) => *s,
            _ => 600.0,
        };
        Options {
            disable: flag("JITLOAD_DISABLE"),
            prefer_bitcode: flag("JITLOAD_PREFER_BITCODE"),
            c_source: flag("JITLOAD_C_SOURCE"),
            opt_level: count("JITLOAD_OPT_LEVEL").unwrap_or(2) as u8,
            isolate: choice("JITLOAD_ISOLATION") != "none",
            tiered: choice("JITLOAD_TIER") != "eager",
            cache: flag("JITLOAD_CACHE"),
            cache_dir: cache_dir(text("JITLOAD_CACHE_DIR").map(OsString::from), xdg_cache_home, home),
            cache_max_bytes: count("JITLOAD_CACHE_MAX_MB").unwrap_or(2048).saturating_mul(1 << 20),
            fastload: flag("JITLOAD_FASTLOAD"),
            fast_wrappers: flag("JITLOAD_FAST"),
            debugger: flag("JITLOAD_DEBUGGER"),
            perf_map: flag("JITLOAD_PERF_MAP"),
            tune_for_host: choice("JITLOAD_TUNE_CPU") == "host",
            x86_level: x86_level_number(choice("JITLOAD_X86_LEVEL")),
            codegen_threads: count("JITLOAD_CODEGEN_THREADS").map_or(cores.min(8), |n| n as usize),
            compile_timeout: Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(600)),
            compile_memory_mb: count("JITLOAD_COMPILE_MEMORY_MB").unwrap_or(1024),
            compiler_stderr: flag("JITLOAD_COMPILER_STDERR"),
            code_memory,
            stencil_pool: flag("JITLOAD_STENCIL_POOL"),
            stencil_relax_calls: flag("JITLOAD_STENCIL_RELAX_CALLS"),
            libllvm: text("JITLOAD_LIBLLVM"),
            clang: text("JITLOAD_CLANG"),
            clangxx: text("JITLOAD_CLANGXX"),
            library_path: ld_library_path.unwrap_or_default().split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
            problems,
            given,
            values,
        }
    }

    /// A setting's value as the user gave it, or "<default>, the default" (for messages that
    /// tell the user which knob to turn).
    pub fn describe(&self, name: &str) -> String {
        match self.given.get(name) {
            Some(v) => v.clone(),
            None => format!("{}, the default", find(name).map_or("", |s| s.default)),
        }
    }

    /// Every setting's effective value (defaults included; a setting with no default and no
    /// value is absent), in the table's order.
    pub fn values(&self) -> Vec<(&'static Setting, Option<&Value>, bool)> {
        SETTINGS.iter().map(|s| (s, self.values.get(s.name), self.given.contains_key(s.name))).collect()
    }
}

/// An x86-64 level's number from its `-march` name (`x86-64` is 1); None for `auto`.
pub fn x86_level_number(name: &str) -> Option<u8> {
    match name {
        "x86-64" => Some(1),
        "x86-64-v2" => Some(2),
        "x86-64-v3" => Some(3),
        "x86-64-v4" => Some(4),
        _ => None,
    }
}

/// The cache directory: `$JITLOAD_CACHE_DIR`, else `$XDG_CACHE_HOME/jitload`, else
/// `$HOME/.cache/jitload`. Empty variables count as unset, and a relative `XDG_CACHE_HOME`
/// is ignored as the XDG specification says.
fn cache_dir(jitload: Option<OsString>, xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(jitload) {
        // Absolute now, so a later change of directory does not move the cache.
        return Some(std::path::absolute(&dir).unwrap_or(dir));
    }
    if let Some(xdg) = set(xdg).filter(|p| p.is_absolute()) {
        return Some(xdg.join("jitload"));
    }
    set(home).map(|home| home.join(".cache").join("jitload"))
}

/// The process's settings: the environment at the first call, then every [`set`].
static CURRENT: RwLock<Option<Arc<Options>>> = RwLock::new(None);
/// The environment as first read, and the values [`set`] since (re-parsed together).
static SOURCES: Mutex<Option<Vec<(OsString, OsString)>>> = Mutex::new(None);

/// The settings in effect.
pub fn get() -> Arc<Options> {
    if let Some(options) = CURRENT.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return options.clone();
    }
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    let vars = sources.get_or_insert_with(|| std::env::vars_os().collect());
    let mut current = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    current.get_or_insert_with(|| Arc::new(Options::from_vars(vars.iter().cloned()))).clone()
}

/// Sets one setting for the rest of the process (`value` as it would be written in the
/// environment; "" restores the default). Code that already read a value keeps it (a
/// session's settings are taken when it is made). Errors name the problem.
pub fn set(name: &str, value: &str) -> Result<(), String> {
    let setting = find(name).ok_or_else(|| {
        let hint = settings::suggest(name).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
        format!("{name} is not a jitload setting{hint}")
    })?;
    parse(setting, value).map_err(|why| format!("{name}={value:?} is not valid: {why}"))?;
    get();
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    let vars = sources.get_or_insert_with(Vec::new);
    vars.retain(|(k, _)| k != name);
    vars.push((name.into(), value.into()));
    let mut options = Options::from_vars(vars.iter().cloned());
    // Problems were reported when the environment was first read.
    options.problems.clear();
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(options));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(vars: &[(&str, &str)]) -> Options {
        Options::from_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    #[test]
    fn defaults() {
        let o = options(&[("HOME", "/h")]);
        assert!(o.cache && o.fastload && o.fast_wrappers && o.isolate && o.stencil_pool && o.stencil_relax_calls);
        assert!(!o.debugger && !o.perf_map && !o.tune_for_host && !o.prefer_bitcode);
        assert_eq!(o.opt_level, 2);
        assert_eq!(o.x86_level, None);
        assert_eq!(o.cache_max_bytes, 2048 << 20);
        assert_eq!(o.compile_timeout, Duration::from_secs(600));
        assert_eq!(o.code_memory, CodeMemoryMode::Auto);
        assert_eq!(o.cache_dir, Some(PathBuf::from("/h/.cache/jitload")));
        assert!(o.problems.is_empty());
        assert_eq!(o.describe("JITLOAD_COMPILE_MEMORY_MB"), "1024, the default");
    }

    #[test]
    fn bad_values_fall_back_and_are_named() {
        let o = options(&[
            ("JITLOAD_CACHE", "nope"),
            ("JITLOAD_OPT_LEVEL", "7"),
            ("JITLOAD_CACH", "0"),
            ("JITLOAD_BLESS", "1"),
            ("JITLOAD_SOME_TEST_HARNESS_VARIABLE", "1"),
        ]);
        assert!(o.cache);
        assert_eq!(o.opt_level, 2);
        assert_eq!(o.problems.len(), 3, "{:?}", o.problems);
        assert!(o.problems.iter().any(|p| p.starts_with("JITLOAD_CACHE=\"nope\" is not valid")));
        assert!(o.problems.iter().any(|p| p.contains("JITLOAD_OPT_LEVEL=\"7\"") && p.contains("from 0 to 3")));
        assert!(o.problems.iter().any(|p| p.contains("JITLOAD_CACH is not a jitload setting (did you mean JITLOAD_CACHE?)")));
    }

    #[test]
    fn given_values() {
        let o = options(&[
            ("JITLOAD_CACHE", "off"),
            ("JITLOAD_TUNE_CPU", "native"),
            ("JITLOAD_STENCIL_MEMORY", "dualmap"),
            ("JITLOAD_COMPILE_MEMORY_MB", " 300 "),
            ("LD_LIBRARY_PATH", "/a::/b"),
            ("JITLOAD_X86_LEVEL", "baseline"),
        ]);
        assert_eq!(o.x86_level, Some(1));
        assert!(!o.cache && o.tune_for_host);
        assert_eq!(o.code_memory, CodeMemoryMode::DualMap);
        assert_eq!(o.compile_memory_mb, 300);
        assert_eq!(o.describe("JITLOAD_COMPILE_MEMORY_MB"), "300");
        assert_eq!(o.library_path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let both = options(&[("JITLOAD_STENCIL_MEMORY", "dualmap"), ("JITLOAD_CODE_MEMORY", "mprotect")]);
        assert_eq!(both.code_memory, CodeMemoryMode::Mprotect);
    }

    #[test]
    fn cache_dir_precedence() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(cache_dir(s("/c"), s("/x"), s("/h")), Some(PathBuf::from("/c")));
        assert_eq!(cache_dir(s(""), s("/x"), s("/h")), Some(PathBuf::from("/x/jitload")));
        assert_eq!(cache_dir(None, s("relative"), s("/h")), Some(PathBuf::from("/h/.cache/jitload")));
        assert_eq!(cache_dir(None, None, None), None);
    }

    #[test]
    fn set_goes_through_the_parser() {
        assert!(set("JITLOAD_OPT_LEVEL", "9").unwrap_err().contains("from 0 to 3"));
        assert!(set("JITLOAD_OPTLEVEL", "1").unwrap_err().contains("did you mean JITLOAD_OPT_LEVEL"));
        set("JITLOAD_CODEGEN_THREADS", "3").unwrap();
        assert_eq!(get().codegen_threads, 3);
        assert_eq!(get().describe("JITLOAD_CODEGEN_THREADS"), "3");
        set("JITLOAD_CODEGEN_THREADS", "").unwrap();
        assert_ne!(get().describe("JITLOAD_CODEGEN_THREADS"), "3");
    }
}
