//! The checks of the sections no capability owns (`[service]`), run when a configuration is
//! loaded. Each capability checks its own section (`crate::logging::check`, `crate::alert::check`,
//! …); [`Loader::load`](super::Loader::load) runs them all.

use super::{Config, Findings};

pub(super) fn validate(config: &Config, f: &mut Findings) {
    if config.service.name.trim().is_empty() {
        f.bad("service.name", "must not be empty; name the service");
    }
}
