//! ironscale-derp
