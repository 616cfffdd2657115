//! swell-api
