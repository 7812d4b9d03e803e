//! `from_env_and_file` reads the real process environment. The only test in
//! this binary, so setting variables cannot race with other tests.

use ironscale_config::Config;

#[test]
fn from_env_and_file_reads_process_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("IRONSCALE_DATA_DIR", dir.path());
    std::env::set_var("HEADSCALE_SERVER_URL", "http://192.0.2.1:8080");
    std::env::set_var("IRONSCALE_DERP_SERVER_ENABLED", "false");
    std::env::set_var("IRONSCALE_DNS_BASE_DOMAIN", "home.internal");
    let (c, _) = Config::from_env_and_file(None)
        .unwrap_or_else(|d| panic!("{}", ironscale_config::render(&d)));
    assert_eq!(c.server_url, "http://192.0.2.1:8080");
    assert!(!c.derp.server.enabled);
    assert_eq!(c.dns.base_domain, "home.internal");
    assert_eq!(
        c.noise.private_key_path,
        dir.path().join("noise_private.key")
    );
}
