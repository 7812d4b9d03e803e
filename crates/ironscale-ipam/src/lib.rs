//! ironscale-ipam
