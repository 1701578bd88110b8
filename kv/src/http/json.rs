//! The JSON forms of keys, values, events and transactions.
//!
//! A value is a JSON string when it is UTF-8 (`"value"`), else base64 (`"value_base64"`); a
//! request may give either. A set of keys is one of `key`, `prefix`, or `start` with an optional
//! `end` (exclusive).

use crate::store::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeySet, KeyValue, Txn, TxnOp, TxnOpResult,
    TxnOutcome,
};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A key with its revisions (and value, if it carries one) as JSON.
pub fn key_value(kv: &KeyValue) -> Value {
    let mut object = Map::new();
    object.insert("key".into(), json!(kv.key));
    if let Some(value) = &kv.value {
        let (name, text) = value_field(value);
        object.insert(name.into(), json!(text));
    }
    object.insert("create_index".into(), json!(kv.create_index));
    object.insert("mod_index".into(), json!(kv.mod_index));
    object.insert("version".into(), json!(kv.version));
    object.insert("lease".into(), json!(kv.lease));
    Value::Object(object)
}

/// `("value", text)` for UTF-8, else `("value_base64", base64)`.
pub fn value_field(value: &Bytes) -> (&'static str, String) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", text.to_owned()),
        Err(_) => (
            "value_base64",
            base64::engine::general_purpose::STANDARD.encode(value),
        ),
    }
}

/// A watch event as JSON: its type, its index, and the key as it is after the change.
pub fn event(event: &Event) -> Value {
    let mut value = key_value(&event.kv);
    if let Value::Object(object) = &mut value {
        let kind = match event.kind {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
        };
        object.insert("type".into(), json!(kind));
        object.insert("index".into(), json!(event.index()));
    }
    value
}

/// A set of keys as a request names it.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub key: Option<String>,
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
}

impl Selector {
    /// The set named: exactly one of `key`, `prefix`, `start` (with `end` only with `start`).
    pub fn key_set(self) -> Result<KeySet, String> {
        match (self.key, self.prefix, self.start, self.end) {
            (Some(key), None, None, None) => Ok(KeySet::Key(key)),
            (None, Some(prefix), None, None) => Ok(KeySet::Prefix(prefix)),
            (None, None, Some(start), end) => Ok(KeySet::Range { start, end }),
            (None, None, None, None) => {
                Err("name the keys: key=K, prefix=P, or start=S with an optional end=E".into())
            }
            _ => Err("name the keys with one of key, prefix, or start (and end)".into()),
        }
    }
}

/// A value given as `value` (UTF-8) or `value_base64`.
fn value_of(
    value: Option<String>,
    value_base64: Option<String>,
    what: &str,
) -> Result<Bytes, String> {
    match (value, value_base64) {
        (Some(value), None) => Ok(Bytes::from(value)),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Bytes::from)
            .map_err(|e| format!("{what}: value_base64 is not base64: {e}")),
        (None, None) => Err(format!("{what}: give value or value_base64")),
        (Some(_), Some(_)) => Err(format!("{what}: give value or value_base64, not both")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareJson {
    key: String,
    op: Option<String>,
    /// Whether the key exists: `version != 0` / `version = 0`.
    exists: Option<bool>,
    value: Option<String>,
    value_base64: Option<String>,
    version: Option<u64>,
    create_index: Option<u64>,
    mod_index: Option<u64>,
    lease: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutJson {
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
    lease: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetJson {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OpJson {
    Put(PutJson),
    Delete(Selector),
    Get(GetJson),
}

/// A transaction as `POST /v1/txn` and `raftor txn` take it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnJson {
    #[serde(default)]
    compare: Vec<CompareJson>,
    #[serde(default)]
    success: Vec<OpJson>,
    #[serde(default)]
    failure: Vec<OpJson>,
}

impl TxnJson {
    pub fn into_txn(self) -> Result<Txn, String> {
        let compare = self
            .compare
            .into_iter()
            .enumerate()
            .map(|(i, c)| compare(c).map_err(|e| format!("compare {i}: {e}")))
            .collect::<Result<_, _>>()?;
        let ops = |ops: Vec<OpJson>, branch: &str| {
            ops.into_iter()
                .enumerate()
                .map(|(i, op)| operation(op).map_err(|e| format!("{branch} {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Txn {
            compare,
            success: ops(self.success, "success")?,
            failure: ops(self.failure, "failure")?,
        })
    }
}

fn compare(c: CompareJson) -> Result<Compare, String> {
    if let Some(exists) = c.exists {
        let others = c.value.is_some()
            || c.value_base64.is_some()
            || c.version.is_some()
            || c.create_index.is_some()
            || c.mod_index.is_some()
            || c.lease.is_some()
            || c.op.is_some();
        if others {
            return Err("exists stands alone: no op and no other target with it".into());
        }
        return Ok(Compare {
            key: c.key,
            op: if exists {
                CompareOp::NotEqual
            } else {
                CompareOp::Equal
            },
            target: CompareTarget::Version(0),
        });
    }
    let op = match c.op.as_deref().unwrap_or("=") {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        other => return Err(format!("op {other:?} is not one of =, !=, >, <")),
    };
    let mut targets = Vec::new();
    if c.value.is_some() || c.value_base64.is_some() {
        targets.push(CompareTarget::Value(value_of(
            c.value,
            c.value_base64,
            "compare",
        )?));
    }
    targets.extend(c.version.map(CompareTarget::Version));
    targets.extend(c.create_index.map(CompareTarget::CreateIndex));
    targets.extend(c.mod_index.map(CompareTarget::ModIndex));
    targets.extend(c.lease.map(CompareTarget::Lease));
    let target =
        match targets.len() {
            1 => targets.remove(0),
            _ => return Err(
                "give exactly one of value, value_base64, version, create_index, mod_index, lease, exists"
                    .into(),
            ),
        };
    Ok(Compare {
        key: c.key,
        op,
        target,
    })
}

fn operation(op: OpJson) -> Result<TxnOp, String> {
    Ok(match op {
        OpJson::Put(put) => TxnOp::Put {
            value: value_of(put.value, put.value_base64, "put")?,
            key: put.key,
            lease: put.lease,
        },
        OpJson::Delete(selector) => TxnOp::Delete(selector.key_set()?),
        OpJson::Get(get) => TxnOp::Get { key: get.key },
    })
}

/// A transaction's outcome as JSON.
pub fn txn_outcome(index: u64, outcome: &TxnOutcome) -> Value {
    let results: Vec<Value> = outcome
        .results
        .iter()
        .map(|result| match result {
            TxnOpResult::Put { replaced } => json!({ "put": { "replaced": replaced } }),
            TxnOpResult::Deleted { count } => json!({ "delete": { "deleted": count } }),
            TxnOpResult::Got(kv) => json!({ "get": kv.as_ref().map(key_value) }),
        })
        .collect();
    json!({ "index": index, "succeeded": outcome.succeeded, "results": results })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_reads_from_json() {
        let text = r#"{
            "compare": [{"key": "lock", "version": 0}, {"key": "n", "op": "!=", "value": "x"}],
            "success": [{"put": {"key": "lock", "value": "me", "lease": 7}},
                        {"delete": {"prefix": "tmp/"}}],
            "failure": [{"get": {"key": "lock"}}]
        }"#;
        let txn = serde_json::from_str::<TxnJson>(text)
            .expect("parses")
            .into_txn()
            .expect("valid");
        assert_eq!(txn.compare[0].target, CompareTarget::Version(0));
        assert_eq!(txn.compare[1].op, CompareOp::NotEqual);
        assert_eq!(txn.success[1], TxnOp::Delete(KeySet::Prefix("tmp/".into())));
        assert_eq!(txn.failure[0], TxnOp::Get { key: "lock".into() });

        let exists =
            r#"{"compare": [{"key": "a", "exists": true}, {"key": "b", "exists": false}]}"#;
        let txn = serde_json::from_str::<TxnJson>(exists)
            .expect("parses")
            .into_txn()
            .expect("valid");
        assert_eq!(
            (txn.compare[0].op, txn.compare[1].op),
            (CompareOp::NotEqual, CompareOp::Equal)
        );
        assert_eq!(txn.compare[0].target, CompareTarget::Version(0));

        let two_targets = r#"{"compare": [{"key": "a", "version": 1, "mod_index": 2}]}"#;
        let error = serde_json::from_str::<TxnJson>(two_targets)
            .expect("parses")
            .into_txn()
            .unwrap_err();
        assert!(error.contains("exactly one"), "{error}");
        let bad_op = r#"{"compare": [{"key": "a", "op": "~", "version": 1}]}"#;
        assert!(serde_json::from_str::<TxnJson>(bad_op)
            .expect("parses")
            .into_txn()
            .is_err());
    }

    #[test]
    fn values_are_text_or_base64() {
        assert_eq!(
            value_field(&Bytes::from_static(b"hi")),
            ("value", "hi".into())
        );
        assert_eq!(
            value_field(&Bytes::from_static(&[0xff, 0])),
            ("value_base64", "/wA=".into())
        );
    }
}
