//! `swell bench lb`: Swell's load balancer against nginx, measured by wrk.
