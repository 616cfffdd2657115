//! swell-demo-app
