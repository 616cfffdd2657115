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
    /// Instead of serving: try a TCP connection to this address (within 3 s) and exit
    /// 0 if it opens, 1 if not. The image has no shell, so tests probe with this
    /// (tenant isolation between container networks).
    #[arg(long, hide = true)]
    probe: Option<SocketAddr>,
}

/// How long `--probe` waits for a connection.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if let Some(target) = args.probe {
        let connect = tokio::net::TcpStream::connect(target);
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(Ok(_)) => {
                println!("connected to {target}");
                std::process::exit(0);
            }
            Ok(Err(e)) => println!("cannot connect to {target}: {e}"),
            Err(_) => println!("cannot connect to {target}: timed out"),
        }
        std::process::exit(1);
    }
    let addr = args
        .listen
        .unwrap_or_else(|| SocketAddr::new(args.host, args.port));
    swell_demo_app::run(addr).await
}
