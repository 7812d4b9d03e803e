//! ironscale-testkit
