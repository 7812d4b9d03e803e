//! ironscale-state
