//! range, del with a prefix or range, txn, watch: the commands over sets of keys.

use super::args::{fail, EndpointArgs, EXIT_FAILED, EXIT_NOT_FOUND};
use clap::Args;
use raftor_kv::http::json;
use raftor_kv::protocol::Consistency;
use raftor_kv::store::{KeySet, RangeQuery, DEFAULT_RANGE_LIMIT, MAX_RANGE_LIMIT};
use raftor_kv::{Client, ClientError};
use serde_json::json;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Which keys: KEY, --prefix P, or --start S [--end E].
#[derive(Args, Debug, Clone)]
pub struct KeySelection {
    /// One key.
    pub key: Option<String>,
    /// Every key that begins with this (an empty prefix is every key).
    #[arg(long, conflicts_with_all = ["key", "start"])]
    pub prefix: Option<String>,
    /// The keys from this one (inclusive)...
    #[arg(long, conflicts_with = "key")]
    pub start: Option<String>,
    /// ...to this one (exclusive; default: to the last key).
    #[arg(long, requires = "start")]
    pub end: Option<String>,
}

impl KeySelection {
    pub fn key_set(&self) -> Result<KeySet, String> {
        let selected = match (&self.key, &self.prefix, &self.start) {
            (Some(key), None, None) => KeySet::Key(key.clone()),
            (None, Some(prefix), None) => KeySet::Prefix(prefix.clone()),
            (None, None, Some(start)) => KeySet::Range {
                start: start.clone(),
                end: self.end.clone(),
            },
            _ => return Err("name the keys: KEY, --prefix P, or --start S [--end E]".into()),
        };
        selected.check(usize::MAX)?;
        Ok(selected)
    }
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("raftor: {message}");
    ExitCode::from(2)
}

/// Print the keys of a set, page after page, at most `limit` of them.
pub async fn range(
    client: &Client,
    endpoints: &EndpointArgs,
    keys: &KeySelection,
    limit: Option<u64>,
    keys_only: bool,
    count: bool,
    consistency: Consistency,
) -> ExitCode {
    let keys = match keys.key_set() {
        Ok(keys) => keys,
        Err(message) => return usage(message),
    };
    let mut query = RangeQuery {
        keys_only,
        count_only: count,
        ..RangeQuery::new(keys)
    };
    let mut printed = 0u64;
    let mut all = Vec::new();
    let mut index = 0;
    loop {
        if let Some(limit) = limit {
            let left = limit.saturating_sub(printed);
            query.limit =
                u32::try_from(left.min(u64::from(MAX_RANGE_LIMIT))).unwrap_or(DEFAULT_RANGE_LIMIT);
        }
        let page = match client.range(query.clone(), consistency).await {
            Ok(page) => page,
            Err(error) => return fail(endpoints, &error),
        };
        index = index.max(page.index);
        if count {
            if endpoints.json {
                println!("{}", json!({ "index": page.index, "count": page.count }));
            } else {
                println!("{}", page.count);
            }
            return ExitCode::SUCCESS;
        }
        printed += page.kvs.len() as u64;
        query.after = page.next_after().map(str::to_owned);
        if endpoints.json {
            all.extend(page.kvs.iter().map(json::key_value));
        } else {
            let mut stdout = std::io::stdout().lock();
            for kv in &page.kvs {
                let _ = stdout.write_all(kv.key.as_bytes());
                if let Some(value) = &kv.value {
                    let _ = stdout.write_all(b"\t");
                    let _ = stdout.write_all(value);
                }
                let _ = stdout.write_all(b"\n");
            }
        }
        let done = query.after.is_none() || limit.is_some_and(|limit| printed >= limit);
        if done {
            let more = query.after.is_some();
            if endpoints.json {
                println!(
                    "{}",
                    json!({ "index": index, "count": printed, "more": more, "kvs": all })
                );
            }
            return ExitCode::SUCCESS;
        }
    }
}

/// Delete every key of a set.
pub async fn delete_range(client: &Client, endpoints: &EndpointArgs, keys: KeySet) -> ExitCode {
    match client.delete_range(keys).await {
        Ok((index, deleted)) => {
            if endpoints.json {
                println!("{}", json!({ "index": index, "deleted": deleted }));
            } else {
                println!("deleted {deleted} keys (index {index})");
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(endpoints, &error),
    }
}

/// Run the transaction in FILE (or stdin), JSON as `POST /v1/txn` takes it.
pub async fn txn(client: &Client, endpoints: &EndpointArgs, file: Option<PathBuf>) -> ExitCode {
    let text = match file.as_deref() {
        None => {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => text,
                Err(error) => return usage(format!("cannot read the transaction: {error}")),
            }
        }
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => text,
                Err(error) => return usage(format!("cannot read the transaction: {error}")),
            }
        }
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => return usage(format!("cannot read {}: {error}", path.display())),
        },
    };
    let txn = match serde_json::from_str::<json::TxnJson>(&text)
        .map_err(|e| format!("not a transaction (JSON with compare, success, failure): {e}"))
        .and_then(json::TxnJson::into_txn)
    {
        Ok(txn) => txn,
        Err(message) => return usage(message),
    };
    match client.txn(txn).await {
        Ok(result) => {
            let answer = json::txn_outcome(result.index, &result.outcome);
            if endpoints.json {
                println!("{answer}");
            } else {
                let branch = if result.outcome.succeeded {
                    "succeeded"
                } else {
                    "failed"
                };
                println!(
                    "compare {branch} (index {}): {}",
                    result.index, answer["results"]
                );
            }
            if result.outcome.succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_FOUND)
            }
        }
        Err(error) => fail(endpoints, &error),
    }
}

/// Print the changes of a set of keys as they happen, until Ctrl-C (or `count` events).
pub async fn watch(
    client: &Client,
    endpoints: &EndpointArgs,
    keys: &KeySelection,
    from_index: Option<u64>,
    progress: bool,
    count: Option<u64>,
) -> ExitCode {
    let keys = match keys.key_set() {
        Ok(keys) => keys,
        Err(message) => return usage(message),
    };
    if from_index == Some(0) {
        return usage("--from-index: log indexes start at 1");
    }
    let mut watch = client.watch(keys, from_index);
    let mut seen = 0u64;
    loop {
        let batch = match watch.next().await {
            Ok(batch) => batch,
            Err(error @ ClientError::Compacted { .. }) => {
                let _ = fail(endpoints, &error);
                return ExitCode::from(EXIT_FAILED);
            }
            Err(error) => return fail(endpoints, &error),
        };
        let mut stdout = std::io::stdout().lock();
        if batch.events.is_empty() && progress {
            let line = if endpoints.json {
                json!({ "type": "progress", "index": batch.through }).to_string()
            } else {
                format!("progress: every change up to index {} seen", batch.through)
            };
            let _ = writeln!(stdout, "{line}");
        }
        for event in &batch.events {
            let line = if endpoints.json {
                json::event(event).to_string()
            } else {
                let value = event
                    .kv
                    .value
                    .as_ref()
                    .map(|v| format!("={}", String::from_utf8_lossy(v)))
                    .unwrap_or_default();
                let kind = json::event(event)["type"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                format!("{kind} {}{value} (index {})", event.kv.key, event.index())
            };
            let _ = writeln!(stdout, "{line}");
            seen += 1;
            if count.is_some_and(|count| seen >= count) {
                let _ = stdout.flush();
                return ExitCode::SUCCESS;
            }
        }
        let _ = stdout.flush();
    }
}
