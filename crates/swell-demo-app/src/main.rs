//! `swell-demo-app`: serves the demo app until SIGTERM or SIGINT.

use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A small HTTP service whose CPU cost per request is set per request
/// (`GET /work?ms=N`, `GET /healthz`, `GET /`).
#[derive(Debug, Parser)]
#[command(name = "swell-demo-app", version)]
struct Args {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on with `--port`.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Full address to listen on; overrides `--host` and `--port`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let addr = args
        .listen
        .unwrap_or_else(|| SocketAddr::new(args.host, args.port));
    swell_demo_app::run(addr).await
}
