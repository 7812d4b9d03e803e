//! ironscale-config
