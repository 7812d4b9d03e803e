//! Keeping the tailnet's DNS settings current while the server runs:
//! the `dns.extra_records_path` file is watched (checked every second,
//! whether it is rewritten in place or replaced by a rename) and SIGHUP
//! re-reads the configuration's `dns` section. A broken records file or
//! configuration is rejected with its diagnostics (file:line) and what is in
//! force stays; a change reaches every node as a `DNSConfig` delta.

use std::path::PathBuf;
use std::time::Duration;

use ironscale_config::{Config, Diagnostic, Severity};
use ironscale_state::{DnsSettings, ExtraRecord, State};

use crate::hangup::Hangups;
use crate::watch::{fingerprint, Fingerprint};

fn records(r: &[ironscale_config::ExtraRecord]) -> Vec<ExtraRecord> {
    r.iter()
        .map(|r| ExtraRecord {
            name: r.name.clone(),
            r#type: r.record_type.clone(),
            value: r.value.to_string(),
        })
        .collect()
}

/// The DNS settings of a configuration (its `dns` section, with the records
/// of `extra_records_path` as the loader read them).
pub fn dns_settings(cfg: &Config) -> DnsSettings {
    let d = &cfg.dns;
    DnsSettings {
        magic_dns: d.magic_dns,
        base_domain: d.base_domain.clone(),
        override_local_dns: d.override_local_dns,
        nameservers: d.nameservers.global.iter().map(|n| n.to_string()).collect(),
        split: d
            .nameservers
            .split
            .iter()
            .map(|(dom, ns)| (dom.clone(), ns.iter().map(|n| n.to_string()).collect()))
            .collect(),
        search_domains: d.search_domains.clone(),
        extra_records: records(&d.extra_records),
        magic_dns_aaaa: d.magic_dns_aaaa,
    }
}

fn log_warnings(diags: &[Diagnostic]) {
    for d in diags.iter().filter(|d| d.severity == Severity::Warning) {
        tracing::warn!("{d}");
    }
}

struct DnsWatch {
    state: State,
    /// The configuration file SIGHUP re-reads (`None`: the built-in defaults
    /// and the environment).
    config_path: Option<PathBuf>,
    current: Config,
    last: Option<Fingerprint>,
}

impl DnsWatch {
    fn records_path(&self) -> Option<&PathBuf> {
        self.current.dns.extra_records_path.as_ref()
    }

    /// The records file changed: install its records, or keep the old ones.
    async fn reload_records(&mut self) {
        let Some(path) = self.records_path().cloned() else {
            return;
        };
        match ironscale_config::load_extra_records(&path) {
            Ok((recs, warnings)) => {
                log_warnings(&warnings);
                let mut d = (*self.state.dns()).clone();
                d.extra_records = records(&recs);
                let n = d.extra_records.len();
                self.current.dns.extra_records = recs;
                if self.state.set_dns(d).await {
                    tracing::info!(path = %path.display(), records = n, "extra records reloaded");
                }
            }
            Err(diags) => tracing::error!(
                path = %path.display(),
                "extra records rejected, the previous records stay in force:\n{}",
                ironscale_config::render(&diags).trim_end()
            ),
        }
    }

    /// SIGHUP: re-read the configuration and install its DNS settings.
    async fn reload_config(&mut self) {
        // The records file as it is before the loader reads it: an edit
        // while the configuration loads is then seen by the next poll.
        let before = self.records_path().and_then(|p| fingerprint(p));
        let loaded = match &self.config_path {
            Some(p) => Config::from_env_and_file(Some(p)),
            None => Config::from_env_and_file(None),
        };
        let (cfg, warnings) = match loaded {
            Ok(x) => x,
            Err(diags) => {
                tracing::error!(
                    "SIGHUP: the configuration has errors, nothing was changed:\n{}",
                    ironscale_config::render(&diags).trim_end()
                );
                return;
            }
        };
        log_warnings(&warnings);
        let changed = self.state.set_dns(dns_settings(&cfg)).await;
        let mut rest = cfg.clone();
        rest.dns = self.current.dns.clone();
        if rest != self.current {
            tracing::warn!(
                "SIGHUP: settings outside `dns` changed in the configuration; they take effect after a restart (SIGHUP reloads `dns` and the policy file)"
            );
        }
        let same_file = self.current.dns.extra_records_path == cfg.dns.extra_records_path;
        self.current = cfg;
        self.last = if same_file { before } else { None };
        tracing::info!(changed, "SIGHUP: DNS settings reloaded");
    }
}

/// Watch `dns.extra_records_path` and reload the `dns` section on SIGHUP
/// (`hup`). `cfg` is the configuration the state was loaded with, read from
/// `config_path`.
pub fn spawn_dns_watch(cfg: &Config, config_path: Option<PathBuf>, state: State, mut hup: Hangups) {
    let mut w = DnsWatch {
        state,
        config_path,
        current: cfg.clone(),
        last: None,
    };
    // The file as it is now: a change after this call is noticed.
    w.last = w.records_path().and_then(|p| fingerprint(p));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let Some(p) = w.records_path().cloned() else { continue };
                    let now = fingerprint(&p);
                    if now != w.last {
                        w.last = now;
                        if w.last.is_some() {
                            w.reload_records().await;
                        } else {
                            // Gone (mid-rename, or deleted): keep what is in
                            // force until a file is back.
                            tracing::warn!(path = %p.display(), "extra records file is missing; the previous records stay in force");
                        }
                    }
                }
                _ = hup.recv() => w.reload_config().await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    async fn state(dir: &Path, cfg: &Config) -> State {
        let store =
            ironscale_store::Store::open(&ironscale_store::sqlite_config(dir.join("db.sqlite")))
                .await
                .expect("store");
        let settings = ironscale_state::Settings {
            dns: dns_settings(cfg),
            ..Default::default()
        };
        State::load(store, settings, Default::default())
            .await
            .expect("state")
    }

    async fn wait_for(s: &State, what: impl Fn(&DnsSettings) -> bool) -> bool {
        // A bound, not a timing assertion: the watch checks every second.
        for _ in 0..100 {
            if what(&s.dns()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn names(d: &DnsSettings) -> Vec<String> {
        d.extra_records.iter().map(|r| r.name.clone()).collect()
    }

    const ONE: &str = r#"[{"name": "a.tail.test", "type": "A", "value": "100.64.0.10"}]"#;
    const TWO: &str = "[\n  {\"name\": \"a.tail.test\", \"type\": \"A\", \"value\": \"100.64.0.10\"},\n  {\"name\": \"b.tail.test\", \"type\": \"AAAA\", \"value\": \"fd7a:115c:a1e0::b\"}\n]\n";
    const BROKEN: &str =
        "[\n  {\"name\": \"c.tail.test\", \"type\": \"A\", \"value\": \"not-an-ip\"}\n]\n";

    fn config_with_records(dir: &Path, records: &str) -> (PathBuf, Config) {
        let rec = dir.join("records.json");
        std::fs::write(&rec, records).expect("write");
        let file = dir.join("config.yaml");
        std::fs::write(
            &file,
            format!(
                "server_url: http://127.0.0.1:8080\nlisten_addr: 127.0.0.1:8080\nprefixes: {{v4: 100.64.0.0/10, v6: fd7a:115c:a1e0::/48}}\ndatabase: {{type: sqlite, sqlite: {{path: {}}}}}\nnoise: {{private_key_path: {}}}\ndns:\n  magic_dns: true\n  base_domain: tail.test\n  extra_records_path: {}\n",
                dir.join("db.sqlite").display(),
                dir.join("noise.key").display(),
                rec.display()
            ),
        )
        .expect("write config");
        let (cfg, _) = Config::load(&file).expect("config loads");
        (file, cfg)
    }

    #[tokio::test]
    async fn the_records_file_is_reloaded_in_place_or_renamed_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, cfg) = config_with_records(dir.path(), ONE);
        let s = state(dir.path(), &cfg).await;
        assert_eq!(names(&s.dns()), ["a.tail.test"]);
        let (_tx, hup) = Hangups::manual();
        spawn_dns_watch(&cfg, Some(file), s.clone(), hup);
        let rec = dir.path().join("records.json");

        // Rewritten in place.
        std::fs::write(&rec, TWO).expect("write");
        assert!(
            wait_for(&s, |d| d.extra_records.len() == 2).await,
            "in-place rewrite not picked up"
        );
        assert_eq!(s.dns().extra_records[1].value, "fd7a:115c:a1e0::b");

        // A broken file: the two records stay.
        std::fs::write(&rec, BROKEN).expect("write");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(names(&s.dns()), ["a.tail.test", "b.tail.test"]);

        // Replaced by a rename.
        let tmp = dir.path().join(".records.json.tmp");
        std::fs::write(&tmp, ONE.replace("a.tail.test", "z.tail.test")).expect("write");
        std::fs::rename(&tmp, &rec).expect("rename");
        assert!(
            wait_for(&s, |d| names(d) == ["z.tail.test"]).await,
            "renamed file not picked up"
        );
    }

    #[tokio::test]
    async fn sighup_reloads_the_dns_section_and_a_broken_config_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, cfg) = config_with_records(dir.path(), ONE);
        let s = state(dir.path(), &cfg).await;
        let (tx, hup) = Hangups::manual();
        spawn_dns_watch(&cfg, Some(file.clone()), s.clone(), hup);

        let text = std::fs::read_to_string(&file).expect("read");
        std::fs::write(
            &file,
            text.replace(
                "  magic_dns: true\n",
                "  magic_dns: true\n  search_domains: [corp.example]\n  magic_dns_aaaa: false\n",
            ),
        )
        .expect("write");
        tx.hangup();
        assert!(
            wait_for(&s, |d| d.search_domains == ["corp.example"]
                && !d.magic_dns_aaaa)
            .await
        );

        // A broken configuration: nothing changes.
        std::fs::write(
            &file,
            text.replace("base_domain: tail.test", "base_domain: \"not a domain\""),
        )
        .expect("write");
        tx.hangup();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.dns().base_domain, "tail.test");
        assert_eq!(s.dns().search_domains, ["corp.example"]);
    }
}
