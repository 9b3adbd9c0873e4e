//! The names a library gives things: a function's private body, a thread-local's emulated-TLS
//! control object, and the user's name behind either.

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
