//! ironscale-store
