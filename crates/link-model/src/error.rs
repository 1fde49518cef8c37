//! ARM errors: the `{"error":{"code","message","target"}}` body and its HTTP status.
//!
//! Every refusal of the control plane is an [`ArmError`] with the code Azure Resource Manager
//! uses for the same situation, so that SDKs and scripts that test codes keep working.

use serde_json::{json, Value};

/// One ARM error: HTTP status, ARM code, human message and optional target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ArmError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ArmError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ArmError {
        ArmError {
            status,
            code: code.to_owned(),
            message: message.into(),
            target: None,
        }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> ArmError {
        self.target = Some(target.into());
        self
    }

    /// The ARM error body.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let (Some(t), Some(obj)) = (&self.target, e.as_object_mut()) {
            obj.insert("target".into(), Value::String(t.clone()));
        }
        json!({ "error": e })
    }
}

pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> ArmError {
    ArmError::new(400, code, message)
}

pub(crate) fn invalid_content(detail: impl std::fmt::Display) -> ArmError {
    ArmError::new(
        400,
        "InvalidRequestContent",
        format!("The request content was invalid and could not be deserialized: '{detail}'."),
    )
}

pub(crate) fn not_found(type_name: &str, name: &str, rg: Option<&str>) -> ArmError {
    let under = rg
        .map(|g| format!(" under resource group '{g}'"))
        .unwrap_or_default();
    ArmError::new(
        404,
        "ResourceNotFound",
        format!("The Resource '{type_name}/{name}'{under} was not found."),
    )
}

pub(crate) fn rg_not_found(rg: &str) -> ArmError {
    ArmError::new(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
    )
}

/// A reference in a body that names nothing, or something in another region.
pub(crate) fn invalid_reference(referenced: &str, by: &str) -> ArmError {
    bad_request(
        "InvalidResourceReference",
        format!(
            "Resource {referenced} referenced by resource {by} was not found. Please make sure \
             that the referenced resource exists, and that both resources are in the same region."
        ),
    )
}
