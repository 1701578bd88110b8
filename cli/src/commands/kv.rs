//! put, get, del, cas.

use super::args::{fail, EndpointArgs, EXIT_NOT_FOUND};
use bytes::Bytes;
use raftor_kv::protocol::Consistency;
use raftor_kv::store::KvOutcome;
use raftor_kv::{Client, ClientError, WriteResult};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

pub async fn put(
    client: &Client,
    endpoints: &EndpointArgs,
    key: &str,
    value: String,
    lease: Option<u64>,
) -> ExitCode {
    let result = match lease {
        None => client.put(key, Bytes::from(value)).await,
        Some(lease) => client
            .put_with_lease(key, Bytes::from(value), lease)
            .await
            .map(|index| WriteResult {
                index,
                outcome: KvOutcome::Put { replaced: false },
            }),
    };
    report_write(endpoints, key, result)
}

pub async fn delete(client: &Client, endpoints: &EndpointArgs, key: &str) -> ExitCode {
    let result = client.delete(key).await;
    report_write(endpoints, key, result)
}

pub async fn cas(
    client: &Client,
    endpoints: &EndpointArgs,
    key: &str,
    expected: Option<String>,
    value: String,
) -> ExitCode {
    let result = client
        .cas(key, expected.map(Bytes::from), Bytes::from(value))
        .await;
    report_write(endpoints, key, result)
}

pub async fn get(
    client: &Client,
    endpoints: &EndpointArgs,
    key: &str,
    consistency: Consistency,
) -> ExitCode {
    match client.get_entry(key, consistency).await {
        Ok(Some(kv)) => {
            let value = kv.value.clone().unwrap_or_default();
            if endpoints.json {
                println!("{}", raftor_kv::http::json::key_value(&kv));
            } else {
                let mut stdout = std::io::stdout();
                let _ = stdout.write_all(&value);
                let _ = stdout.write_all(b"\n");
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            if endpoints.json {
                println!("{}", json!({ "key": key, "value": null }));
            } else {
                eprintln!("{key}: not found");
            }
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(error) => fail(endpoints, &error),
    }
}

fn report_write(
    endpoints: &EndpointArgs,
    key: &str,
    result: Result<WriteResult, ClientError>,
) -> ExitCode {
    match result {
        Ok(WriteResult { index, outcome }) => {
            let (ok, text) = match &outcome {
                KvOutcome::Put { .. } => (true, "ok".to_owned()),
                KvOutcome::Deleted { existed: true } => (true, "deleted".to_owned()),
                KvOutcome::Deleted { existed: false } => {
                    (true, "not found (nothing to delete)".to_owned())
                }
                KvOutcome::Swapped => (true, "swapped".to_owned()),
                KvOutcome::Mismatch { current } => (
                    false,
                    format!(
                        "not swapped: current value is {}",
                        current.as_ref().map_or("absent".to_owned(), |c| format!(
                            "{:?}",
                            String::from_utf8_lossy(c)
                        ))
                    ),
                ),
                other => (false, format!("{other:?}")),
            };
            if endpoints.json {
                let current = match &outcome {
                    KvOutcome::Mismatch { current } => json!(current
                        .as_ref()
                        .map(|c| String::from_utf8_lossy(c).into_owned())),
                    _ => json!(null),
                };
                println!(
                    "{}",
                    json!({ "key": key, "index": index, "ok": ok, "result": text, "current": current })
                );
            } else {
                println!("{key}: {text} (index {index})");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_FOUND)
            }
        }
        Err(error) => fail(endpoints, &error),
    }
}
