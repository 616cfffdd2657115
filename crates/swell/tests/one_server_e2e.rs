//! One server per data directory: a second `swell serve` on a held data directory exits
//! at once naming the holder's pid, and the first server's instances are untouched;
//! after `kill -9` of the first, the kernel has dropped its lock and a new server starts
//! and adopts the instances.

mod common;

use common::{Swell, group_doc, never_scale, wait_running};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_held_data_directory_exits_naming_the_holder() {
    let mut s = Swell::start().await;
    let doc = group_doc("web", 2, 3, never_scale()).to_string();
    let a = s
        .request(reqwest::Method::POST, "/v1/groups", Some(&doc))
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let before = common::ids(&wait_running(&s, "web", 2, Duration::from_secs(30)).await);
    let pids_before = s.tagged();

    let started = Instant::now();
    let mut second = Command::new(common::SWELL)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--data-dir")
        .arg(s.data_dir())
        .env("SWELL_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running a second swell serve");
    // Before the lock, a second server ran beside the first: stop it rather than hang.
    let status = loop {
        if let Some(status) = second.try_wait().expect("waiting for it") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server is running on the held data directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("its stderr");
    assert!(!status.success(), "the second server ran: {stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {stderr}");
    assert!(
        stderr.contains(&format!("another swell server (pid {})", s.pid())),
        "the holder's pid: {stderr}"
    );
    assert!(stderr.contains("swell.lock"), "the lock file: {stderr}");

    // The first server's fleet is untouched: same instances, same processes, still
    // served by the first server.
    let after = common::ids(&s.instances("web", false).await);
    assert_eq!(after, before);
    assert_eq!(s.tagged(), pids_before);
    let g = s.get("/v1/groups/web").await;
    assert_eq!(g["desired_capacity"], 2, "{g}");

    // kill -9: no cleanup runs, yet the next server starts (the kernel dropped the
    // lock; no instance inherited it) and adopts the same instances.
    s.kill9();
    s.restart().await;
    let adopted = common::ids(&wait_running(&s, "web", 2, Duration::from_secs(30)).await);
    assert_eq!(adopted, before, "the instances were adopted, not replaced");
    assert_eq!(s.tagged(), pids_before);
}
