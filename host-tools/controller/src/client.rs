//! A blocking client of the controller's JSON API, for the CLI verbs and
//! the tests: each call returns the decoded answer or an error that carries
//! the controller's own message (field errors included).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::engine::Submitted;
use crate::model::{FieldError, TaskId};
use crate::views::{NodeJson, TaskJson, Timeline};

/// Why a call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The controller could not be reached.
    #[error("cannot reach the controller at {url}: {detail} (is `tern controller` running? --controller / TERN_CONTROLLER)")]
    Unreachable {
        /// Its URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The controller refused, with field errors.
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Fields {
        /// HTTP status.
        status: u16,
        /// The mistakes.
        errors: Vec<FieldError>,
    },
    /// The controller refused.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer did not decode.
    #[error("unexpected answer from the controller: {0}")]
    Decode(String),
}

/// A connection to the controller's API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the controller at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(&body.unwrap_or_default()[..])
            }
        };
        let mut response = result.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("{e}: {text}")))?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        if let Some(errors) = value.get("errors") {
            if let Ok(errors) = serde_json::from_value::<Vec<FieldError>>(errors.clone()) {
                return Err(ClientError::Fields { status, errors });
            }
        }
        Err(ClientError::Refused {
            status,
            message: value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or(&text)
                .to_string(),
        })
    }

    fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Submits a body (one task, an array, or a batch).
    pub fn submit(&self, body: Vec<u8>) -> Result<Submitted, ClientError> {
        let v = self.call("POST", "/api/tasks", Some(body))?;
        Ok(Submitted {
            batch: v["batch"].as_i64().unwrap_or_default(),
            tasks: Self::decode(v["tasks"].clone())?,
            policy: Self::decode(v["policy"].clone())?,
            placement_ms: v["placement_ms"].as_f64().unwrap_or_default(),
            waiting: Self::decode(v["waiting"].clone())?,
        })
    }

    /// Every task.
    pub fn tasks(&self) -> Result<Vec<TaskJson>, ClientError> {
        Self::decode(self.call("GET", "/api/tasks", None)?)
    }

    /// Cancels a task.
    pub fn cancel(&self, task: TaskId) -> Result<(), ClientError> {
        self.call("DELETE", &format!("/api/tasks/{task}"), None)
            .map(drop)
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<NodeJson>, ClientError> {
        Self::decode(self.call("GET", "/api/nodes", None)?)
    }

    /// Adds a node; returns its id.
    pub fn add_node(&self, addr: &str, local: bool) -> Result<i64, ClientError> {
        let body = serde_json::json!({ "addr": addr, "local": local }).to_string();
        let v = self.call("POST", "/api/nodes", Some(body.into_bytes()))?;
        v["id"]
            .as_i64()
            .ok_or_else(|| ClientError::Decode(v.to_string()))
    }

    /// Drains a node.
    pub fn drain(&self, node: i64) -> Result<(), ClientError> {
        self.call("POST", &format!("/api/nodes/{node}/drain"), None)
            .map(drop)
    }

    /// Removes a node.
    pub fn remove(&self, node: i64) -> Result<(), ClientError> {
        self.call("DELETE", &format!("/api/nodes/{node}"), None)
            .map(drop)
    }

    /// A batch's timeline (the latest with `None`).
    pub fn timeline(&self, batch: Option<i64>) -> Result<Timeline, ClientError> {
        let path = batch.map_or("/api/timeline".to_string(), |b| {
            format!("/api/timeline?batch={b}")
        });
        Self::decode(self.call("GET", &path, None)?)
    }
}
