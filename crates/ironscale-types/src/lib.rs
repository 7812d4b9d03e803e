//! ironscale-types
