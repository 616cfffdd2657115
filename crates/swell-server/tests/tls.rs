//! The API over TLS (`--tls-cert`, `--tls-key`): a client trusting the certificate
//! logs in and calls the API; one that does not, or that speaks plain HTTP, gets
//! nothing; a key that does not match the certificate stops the start.

use serde_json::{Value, json};
use std::path::Path;
use swell_server::tls::TlsFiles;
use swell_server::{Server, ServerConfig, StartError};

const ADMIN: &str = "tls-admin-password";

/// A self-signed certificate for 127.0.0.1 and localhost, written to `dir`.
fn self_signed(dir: &Path, name: &str) -> (TlsFiles, reqwest::Certificate) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let ca = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    (TlsFiles { cert, key }, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = self_signed(dir.path(), "api");
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN)),
        tls: Some(files.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = trusting
        .get(format!("{url}/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let login: Value = trusting
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_string();
    let audit: Value = trusting
        .get(format!("{url}/v1/audit?all=true"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["entries"][0]["source"], "127.0.0.1",
        "the peer address reaches the audit log over TLS: {audit}"
    );

    // A client that does not trust the certificate: the handshake fails.
    let err = reqwest::Client::new()
        .get(format!("{url}/v1/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP on the TLS port: no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1/health", server.addr()))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP got an answer"
    );
    // The server still serves trusting clients after those failures.
    let health = trusting
        .get(format!("{url}/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    server.shutdown().await;

    // A key that is not the certificate's: the start fails, naming TLS.
    let (other, _) = self_signed(dir.path(), "other");
    let mismatched = TlsFiles {
        cert: files.cert.clone(),
        key: other.key,
    };
    let err = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data2"),
        tls: Some(mismatched),
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("the start fails");
    assert!(matches!(err, StartError::Tls(_)), "{err}");
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        key: files.key,
    };
    let err = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data3"),
        tls: Some(missing),
        ..ServerConfig::default()
    })
    .await
    .err()
    .expect("the start fails");
    assert!(err.to_string().contains("nope.crt"), "{err}");
}
