//! ironscale-stun
