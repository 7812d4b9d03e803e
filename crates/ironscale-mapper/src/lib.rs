//! ironscale-mapper
