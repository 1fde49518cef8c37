//! OperationOutcome: the one shape every FHIR error takes (FHIR R4 §2.36 operationoutcome.html).

use serde_json::{json, Map, Value};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code` (the IssueType value set), the codes fhirlink uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    BusinessRule,
    Conflict,
    Exception,
    Informational,
    Throttled,
    MultipleMatches,
    /// The operation was stopped to protect server resources (too long, too large).
    TooCostly,
    /// A time limit passed (FHIR R4 valueset-issue-type `timeout`).
    Timeout,
    /// A passing condition; the same request may succeed later (`transient`).
    Transient,
}

impl IssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invariant => "invariant",
            IssueCode::Security => "security",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Processing => "processing",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Duplicate => "duplicate",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::TooLong => "too-long",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::BusinessRule => "business-rule",
            IssueCode::Conflict => "conflict",
            IssueCode::Exception => "exception",
            IssueCode::Informational => "informational",
            IssueCode::Throttled => "throttled",
            IssueCode::MultipleMatches => "multiple-matches",
            IssueCode::TooCostly => "too-costly",
            IssueCode::Timeout => "timeout",
            IssueCode::Transient => "transient",
        }
    }
}

/// One problem found in a request or a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    /// FHIRPath of the element concerned, e.g. `Patient.birthDate` or `Patient.name[1].given[0]`.
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }

    pub fn is_error(&self) -> bool {
        matches!(self.severity, Severity::Error | Severity::Fatal)
    }

    /// A rule of content rather than of structure (FHIR R4 http.html: 422 rather than 400).
    pub fn is_business_rule(&self) -> bool {
        matches!(self.code, IssueCode::BusinessRule | IssueCode::Invariant)
    }

    /// The issue [`crate::Definitions::validate`] gives when the root `resourceType` is not
    /// an R4 resource type (the API answers 404 for it rather than 400). Unknown types of
    /// nested resources are ordinary `invalid` issues.
    pub fn is_unknown_resource_type(&self) -> bool {
        self.code == IssueCode::Invalid
            && self.expression.as_deref() == Some("resourceType")
            && self
                .diagnostics
                .starts_with(crate::validate::UNKNOWN_RESOURCE_TYPE)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "severity".into(),
            Value::String(self.severity.as_str().into()),
        );
        m.insert("code".into(), Value::String(self.code.as_str().into()));
        m.insert(
            "diagnostics".into(),
            Value::String(self.diagnostics.clone()),
        );
        if let Some(e) = &self.expression {
            m.insert("expression".into(), json!([e]));
        }
        Value::Object(m)
    }
}

/// An OperationOutcome resource holding the given issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}
