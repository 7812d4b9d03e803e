//! Headscale-compatible configuration for ironscale.
//!
//! * [`Config::load`] reads a Headscale `config.yaml` and reports **every**
//!   problem as a [`Diagnostic`] with its file, line and dotted key (what
//!   `ironscale configtest` prints), e.g.
//!   `config.yaml:12: prefixes.v4: "100.64.0.0/33" is not a valid IPv4 prefix (expected e.g. 100.64.0.0/10)`.
//! * Unknown keys are warnings (with a "did you mean"), deprecated Headscale
//!   keys are warnings that name their replacement and are still honoured.
//! * [`Config::from_env_and_file`] adds `IRONSCALE_<KEY>` / `HEADSCALE_<KEY>`
//!   environment overrides (`.` → `_`, upper case; `IRONSCALE_` wins), and with
//!   no file starts from [`Config::default_local`].
//! * Relative paths in a file are relative to the file's directory (as Headscale does).
//!
//! ironscale extensions: `derp.server.tls_listen_addr` (default: the host of
//! `listen_addr`, port 3341) is where the embedded DERP serves TLS with a
//! self-signed certificate (kept at `derp.server.tls_cert_path` /
//! `tls_key_path`, default next to the Noise key) when `server_url` is plain
//! `http://`; with an `https://` server_url DERP is served on the main listener.

mod derpmap;
mod diag;
mod duration;
mod keys;
mod load;
mod model;
mod yaml;

use std::path::Path;

pub use derpmap::{
    derp_map_from_file, derp_map_from_str, derp_regions_from_file, DerpMapFile, DerpNodeCfg,
    DerpRegionCfg,
};
pub use diag::{render, Diagnostic, Severity};
pub use duration::{format_duration, parse_duration};
pub use load::{load_extra_records, parse_listen_addr};
pub use model::*;

/// `Ok`: the configuration and its warnings/notes. `Err`: every diagnostic, at least one an error.
pub type LoadResult = Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>>;

fn finish(c: Config, diags: Vec<Diagnostic>) -> LoadResult {
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok((c, diags))
    }
}

impl Config {
    /// Load a config file, without environment overrides.
    pub fn load(path: &Path) -> LoadResult {
        Self::load_with_env(Some(path), &[])
    }

    /// Load `path` (or, with `None`, the local defaults under [`default_data_dir`])
    /// and apply `IRONSCALE_*` / `HEADSCALE_*` variables from the process environment.
    pub fn from_env_and_file(path: Option<&Path>) -> LoadResult {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// Like [`Config::from_env_and_file`] with an explicit environment (for tests
    /// and for callers that already captured it). With no file, the data
    /// directory is `IRONSCALE_DATA_DIR` from `env`, else `./ironscale-data`.
    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> LoadResult {
        let mut l = load::Loader::new(path);
        let base = match path {
            Some(p) => {
                let text = match std::fs::read_to_string(p) {
                    Ok(t) => t,
                    Err(e) => {
                        l.push(
                            Severity::Error,
                            "",
                            None,
                            format!("cannot read the config file: {e}"),
                        );
                        return Err(l.diags);
                    }
                };
                match yaml::parse(&text) {
                    Ok(root) => l.walk(&root, ""),
                    Err(e) => {
                        l.push(Severity::Error, "", Some(e.line), e.message);
                        return Err(l.diags);
                    }
                }
                Config::headscale_defaults()
            }
            None => {
                let dir = env
                    .iter()
                    .find(|(k, v)| k == "IRONSCALE_DATA_DIR" && !v.is_empty())
                    .map(|(_, v)| std::path::PathBuf::from(v))
                    .unwrap_or_else(|| std::path::PathBuf::from("./ironscale-data"));
                Config::default_local(&dir)
            }
        };
        l.apply_env(env);
        let c = l.build(base);
        finish(c, l.diags)
    }

    /// Parse config text as if read from `path` (which is used for diagnostics
    /// and to resolve relative paths; it need not exist).
    pub fn from_yaml_str(text: &str, path: &Path) -> LoadResult {
        let mut l = load::Loader::new(Some(path));
        match yaml::parse(text) {
            Ok(root) => l.walk(&root, ""),
            Err(e) => {
                l.push(Severity::Error, "", Some(e.line), e.message);
                return Err(l.diags);
            }
        }
        let c = l.build(Config::headscale_defaults());
        finish(c, l.diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key that can be set is read by the build step: a key added to the
    /// table but forgotten in `build` would be silently ignored otherwise.
    #[test]
    fn build_reads_every_set_key() {
        let text = include_str!("../testdata/full.yaml");
        let root = yaml::parse(text).expect("parse");
        let mut l = load::Loader::new(Some(Path::new("/tmp/full.yaml")));
        l.walk(&root, "");
        // Plus every key from the environment, so keys missing from full.yaml count too.
        let env: Vec<(String, String)> = keys::KEYS
            .iter()
            .map(|(k, _)| {
                (
                    format!("IRONSCALE_{}", k.replace('.', "_").to_ascii_uppercase()),
                    "x".into(),
                )
            })
            .collect();
        l.apply_env(&env);
        let _ = l.build(Config::headscale_defaults());
        assert_eq!(l.untouched(), Vec::<&str>::new());
    }
}
