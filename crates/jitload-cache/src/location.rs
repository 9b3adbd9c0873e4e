//! Where the cache lives by default (XDG base-directory rules).

use std::ffi::OsString;
use std::path::PathBuf;

/// `$JITLOAD_CACHE_DIR`, else `$XDG_CACHE_HOME/jitload`, else `$HOME/.cache/jitload`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name);
    choose(var("JITLOAD_CACHE_DIR"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// The rules, apart from the environment so they can be tested. Empty variables count as
/// unset, and a relative `XDG_CACHE_HOME` is ignored as the XDG specification says.
fn choose(
    jitload: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(jitload) {
        return Some(dir);
    }
    if let Some(xdg) = set(xdg).filter(|p| p.is_absolute()) {
        return Some(xdg.join("jitload"));
    }
    set(home).map(|home| home.join(".cache").join("jitload"))
}

#[cfg(test)]
mod tests {
    use super::choose;
    use std::path::PathBuf;

    fn s(v: &str) -> Option<std::ffi::OsString> {
        Some(v.into())
    }

    #[test]
    fn precedence() {
        assert_eq!(choose(s("/c"), s("/x"), s("/h")), Some(PathBuf::from("/c")));
        assert_eq!(
            choose(None, s("/x"), s("/h")),
            Some(PathBuf::from("/x/jitload"))
        );
        assert_eq!(
            choose(s(""), s("/x"), s("/h")),
            Some(PathBuf::from("/x/jitload"))
        );
        assert_eq!(
            choose(None, s("rel"), s("/h")),
            Some(PathBuf::from("/h/.cache/jitload"))
        );
        assert_eq!(
            choose(None, None, s("/h")),
            Some(PathBuf::from("/h/.cache/jitload"))
        );
        assert_eq!(choose(None, s(""), s("")), None);
    }
}
