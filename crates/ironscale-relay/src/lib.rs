//! ironscale-relay
