//! A small client of QEMU's machine protocol (QMP): one JSON object per line over a
//! Unix socket, a greeting, `qmp_capabilities`, then commands whose answers are
//! `{"return": …}` or `{"error": …}`, with asynchronous `{"event": …}` lines in between.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one QMP exchange (connect, greeting, a command) may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or broke.
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU did not answer in time.
    #[error("QMP: no answer within {0:?}")]
    Timeout(Duration),
    /// QEMU said something that is not QMP.
    #[error("QMP: unexpected answer: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, …).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// One QMP connection, past the capabilities negotiation.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects to the socket at `path`, reads the greeting and leaves capabilities
    /// negotiation mode.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = within(UnixStream::connect(path)).await??;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` and returns its `return` value; events that
    /// arrive meanwhile are skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        within(self.writer.write_all(line.as_bytes())).await??;
        loop {
            let message = self.read_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            return answer(command, message);
        }
    }

    /// Reads one JSON line.
    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = within(self.reader.read_line(&mut line)).await??;
        if n == 0 {
            return Err(QmpError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed the QMP connection",
            )));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }
}

/// The outcome of `command` from QEMU's answer to it.
fn answer(command: &str, message: Value) -> Result<Value, QmpError> {
    if let Some(value) = message.get("return") {
        return Ok(value.clone());
    }
    if let Some(error) = message.get("error") {
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        return Err(QmpError::Command {
            command: command.to_string(),
            class: field("class"),
            desc: field("desc"),
        });
    }
    Err(QmpError::Protocol(message.to_string()))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> Result<T, QmpError> {
    tokio::time::timeout(QMP_TIMEOUT, f)
        .await
        .map_err(|_| QmpError::Timeout(QMP_TIMEOUT))
}

/// The run state of `query-status` (`running`, `paused`, `shutdown`, …).
pub fn run_state(status: &Value) -> Option<&str> {
    status.get("status").and_then(Value::as_str)
}

/// The host thread id of each vCPU from `query-cpus-fast`, in vCPU order.
pub fn vcpu_threads(cpus: &Value) -> Vec<i32> {
    let Some(list) = cpus.as_array() else {
        return Vec::new();
    };
    let mut threads: Vec<(i64, i32)> = list
        .iter()
        .filter_map(|cpu| {
            let index = cpu.get("cpu-index").and_then(Value::as_i64).unwrap_or(0);
            let tid = cpu.get("thread-id").and_then(Value::as_i64)?;
            Some((index, i32::try_from(tid).ok().filter(|t| *t > 0)?))
        })
        .collect();
    threads.sort_unstable();
    threads.into_iter().map(|(_, tid)| tid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_returns_or_errors() {
        assert_eq!(answer("stop", json!({"return": {}})).unwrap(), json!({}));
        let err = answer(
            "cont",
            json!({"error": {"class": "GenericError", "desc": "no"}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP command `cont` failed: GenericError: no"
        );
        assert!(matches!(
            answer("x", json!({"what": 1})),
            Err(QmpError::Protocol(_))
        ));
    }

    #[test]
    fn vcpu_threads_come_in_cpu_order_and_junk_is_skipped() {
        let cpus = json!([
            {"cpu-index": 1, "thread-id": 200, "target": "x86_64"},
            {"cpu-index": 0, "thread-id": 100, "target": "x86_64"},
            {"cpu-index": 2, "thread-id": -1},
            {"cpu-index": 3},
        ]);
        assert_eq!(vcpu_threads(&cpus), vec![100, 200]);
        assert!(vcpu_threads(&json!({"not": "a list"})).is_empty());
    }

    #[test]
    fn run_states() {
        assert_eq!(
            run_state(&json!({"status": "paused", "running": false})),
            Some("paused")
        );
        assert_eq!(run_state(&json!({})), None);
    }
}
