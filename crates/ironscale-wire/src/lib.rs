//! ironscale-wire
