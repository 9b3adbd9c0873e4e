//! The names a library gives things: a function's private body, a thread-local's emulated-TLS
//! control object, and the user's name behind either; and close names for error messages.

/// Prefix of an emulated-TLS control object: thread-local `x` is linked as `__emutls_v.x`.
pub(super) const EMUTLS_CONTROL: &str = "__emutls_v.";

pub(super) fn emutls_name(name: &str) -> String {
    format!("{EMUTLS_CONTROL}{name}")
}

/// The name users know a linked name by (a thread-local's control object by its variable).
pub(super) fn user_name(linked: &str) -> &str {
    linked.strip_prefix(EMUTLS_CONTROL).unwrap_or(linked)
}

/// Names users never see: lowered init functions and emulated-TLS initial-value templates.
pub(super) fn internal_name(name: &str) -> bool {
    name.starts_with("__jitload_") || name.starts_with("__emutls_t.")
}

pub(super) fn body_name(name: &str, module: u64) -> String {
    format!("{name}.jitload.{module}")
}

/// Levenshtein distance, for "did you mean" suggestions.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
