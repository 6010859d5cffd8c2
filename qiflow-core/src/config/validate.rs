//! The checks of the sections no capability owns (`[service]`), run when a configuration is
//! loaded. Each capability checks its own section (`crate::logging::check`, `crate::alert::check`,
//! …); [`Loader::load`](super::Loader::load) runs them all.

use super::{Config, Findings};

pub(super) fn validate(config: &Config, f: &mut Findings) {
    if config.service.name.trim().is_empty() {
        f.bad("service.name", "must not be empty; name the service");
    }
    let instance = &config.service.instance;
    if !instance.is_empty() && !is_instance_id(instance) {
        f.bad(
            "service.instance",
            format!(
                "{instance:?} is not an instance id: use letters, digits and `.`, `_`, `:`, `-` \
                 (at most {MAX_INSTANCE_LEN}), e.g. \"web-1\"; or leave it unset for a generated one"
            ),
        );
    }
}

/// The longest `[service] instance`.
pub(crate) const MAX_INSTANCE_LEN: usize = 128;

/// An instance id: 1 to [`MAX_INSTANCE_LEN`] of ASCII letters, digits, `.`, `_`, `:` and `-`
/// (safe as a label value, a column value and in a file name).
pub(crate) fn is_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}
