//! ironscale-noise
