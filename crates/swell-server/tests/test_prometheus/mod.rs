//! A private Prometheus (Debian's `prometheus`) on loopback for the tests that need a real
//! one: it scrapes one target every second, with optional alert rules, and is killed
//! when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running Prometheus and its URL.
pub struct TestPrometheus {
    pub url: String,
    child: Child,
}

impl TestPrometheus {
    /// Starts Prometheus in `dir`, scraping `target` (job `swell`) and loading `rules`.
    pub fn start(dir: &Path, target: SocketAddr, rules: Option<&str>) -> TestPrometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("prometheus not found: install Debian's prometheus (scripts/test does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rule_files = match rules {
            Some(rules) => {
                let file = dir.join("rules.yml");
                std::fs::write(&file, rules).unwrap();
                format!("rule_files: ['{}']\n", file.display())
            }
            None => String::new(),
        };
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
                 scrape_configs:\n  - job_name: swell\n    static_configs:\n\
                 \x20     - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        TestPrometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
