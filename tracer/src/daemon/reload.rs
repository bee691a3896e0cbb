//! SIGHUP: the configuration is read again (file, environment, flags) and
//! what can change live is applied; every other changed setting is named
//! in a warning, so an operator knows a restart is due.

use std::sync::Arc;

use crate::serve::{http::web_config::WebSecurity, shared::Shared};

use super::DaemonOptions;

/// Re-reads the configuration: new options and log level.
pub type Reload = Arc<dyn Fn() -> Result<(DaemonOptions, log::LevelFilter), String> + Send + Sync>;

/// Settings the daemon applies without a restart (the rest of
/// [`crate::cli::settings`] need one). The web config file is read again
/// on every SIGHUP, changed path or not.
pub const LIVE: &[&str] = &[
    "log-level",
    "reconcile-interval",
    "close-wait-threshold",
    "max-sockets",
    "leak-top-n",
    "top-destinations",
    "web-config-file",
];

/// What a reload changed: `(live, needs_restart)`, setting names.
pub fn changes<'a>(old: &DaemonOptions, new: &'a DaemonOptions) -> (Vec<&'a str>, Vec<&'a str>) {
    new.settings
        .changed(&old.settings)
        .into_iter()
        .partition(|key| LIVE.contains(key))
}

/// Applies what can change live and says what needs a restart. The caller
/// applies the new interval to its own timer.
pub fn apply(old: &DaemonOptions, new: &DaemonOptions, level: log::LevelFilter, shared: &Shared) {
    let (changed, restart) = changes(old, new);
    log::set_max_level(level);
    shared.engine().set_config(new.engine.clone());
    log::info!(
        "SIGHUP: configuration reloaded; changed: {}",
        if changed.is_empty() {
            "nothing".to_owned()
        } else {
            changed.join(", ")
        }
    );
    if !restart.is_empty() {
        log::warn!(
            "SIGHUP: {} changed but only take effect after a restart",
            restart.join(", ")
        );
    }
    reload_web_security(new, shared);
}

/// Reads the web config file (if any) at start-up: before capabilities
/// are dropped, so a key file only root may read is fine.
pub fn load_web_security(options: &DaemonOptions) -> anyhow::Result<WebSecurity> {
    match &options.web_config {
        None => Ok(WebSecurity::default()),
        Some(path) => WebSecurity::load(path).map_err(anyhow::Error::msg),
    }
}

/// Re-reads the web config file on SIGHUP (new certificates, new users);
/// on any error the one in force stays.
fn reload_web_security(options: &DaemonOptions, shared: &Shared) {
    match load_web_security(options) {
        Ok(web) => {
            log::info!("SIGHUP: web config: {}", web.describe());
            shared.web_security().set(web);
        }
        Err(e) => log::error!("SIGHUP: web config not reloaded, the old one stays: {e:#}"),
    }
}
