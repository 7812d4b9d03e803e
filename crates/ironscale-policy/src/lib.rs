//! ironscale-policy
