//! swell-lb
