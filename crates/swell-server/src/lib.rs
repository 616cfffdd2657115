//! swell-server
