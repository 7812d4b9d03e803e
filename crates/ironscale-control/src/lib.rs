//! ironscale-control
