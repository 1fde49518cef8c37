//! Forms: what a user typed, and the ARM error of its submission shown beside the field it
//! concerns. A failed submission renders the same page again with the typed values, so
//! nothing is lost.

use std::collections::HashMap;

use maud::{html, Markup};

use crate::api::ArmFailure;

/// A submitted form: its values and, after a failure, the error and the field it concerns.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormState {
    /// Which form of the page was submitted (its hidden `form` field).
    pub(crate) form: String,
    pub(crate) values: HashMap<String, String>,
    pub(crate) error: Option<(String, ArmFailure)>,
}

impl FormState {
    pub(crate) fn value(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Which field of a form an ARM error concerns: ARM's `target` when it names a field, else
/// the first field whose keywords occur in the message, else `default`.
pub(crate) fn field_for(err: &ArmFailure, fields: &[(&str, &[&str])], default: &str) -> String {
    if let Some(t) = &err.target {
        let t = t.to_ascii_lowercase();
        if let Some((f, _)) = fields
            .iter()
            .find(|(f, _)| t.ends_with(&f.to_ascii_lowercase()))
        {
            return (*f).to_owned();
        }
    }
    let message = err.message.to_ascii_lowercase();
    fields
        .iter()
        .find(|(_, words)| words.iter().any(|w| message.contains(w)))
        .map(|(f, _)| (*f).to_owned())
        .unwrap_or_else(|| default.to_owned())
}

/// One form of a page: its id and, when it was just submitted, its state.
#[derive(Clone, Copy)]
pub(crate) struct Form<'a> {
    pub(crate) id: &'a str,
    pub(crate) state: Option<&'a FormState>,
}

/// The form `id` of a page whose submitted form (if any) is `submitted`.
pub(crate) fn form<'a>(submitted: Option<&'a FormState>, id: &'a str) -> Form<'a> {
    Form {
        id,
        state: submitted.filter(|f| f.form == id),
    }
}

/// The message of an error, as ARM gave it.
pub(crate) fn error_text(err: &ArmFailure) -> Markup {
    html! { span.error role="alert" { strong { (err.code) } ": " (err.message) } }
}

impl<'a> Form<'a> {
    fn error_of(&self, name: &str) -> Option<&'a ArmFailure> {
        self.state
            .and_then(|s| s.error.as_ref())
            .filter(|(f, _)| f == name)
            .map(|(_, e)| e)
    }

    fn field_id(&self, name: &str) -> String {
        format!("{}-{name}", self.id)
    }

    /// The hidden fields of every form: the CSRF token, the form's id and the page to
    /// render again on an error.
    pub(crate) fn hidden(&self, csrf: &str, back: &str) -> Markup {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="form" value=(self.id);
            input type="hidden" name="back" value=(back);
        }
    }

    /// A labelled text field, with the typed value kept and its error beside it.
    pub(crate) fn text(&self, name: &str, label: &str, default: &str, hint: &str) -> Markup {
        let value = match self.state {
            Some(s) => s.value(name),
            None => default,
        };
        let id = self.field_id(name);
        let err = self.error_of(name);
        html! {
            div.field {
                label for=(id) { (label) }
                input type="text" id=(id) name=(name) value=(value)
                    aria-invalid=[err.map(|_| "true")]
                    aria-describedby=[err.map(|_| format!("{id}-error"))];
                @if !hint.is_empty() { small.hint { (hint) } }
                @if let Some(e) = err { div id=(format!("{id}-error")) { (error_text(e)) } }
            }
        }
    }

    /// A labelled choice among `(value, label)` options.
    pub(crate) fn select(
        &self,
        name: &str,
        label: &str,
        options: &[(String, String)],
        default: &str,
    ) -> Markup {
        let chosen = self
            .state
            .map(|s| s.value(name))
            .filter(|v| !v.is_empty())
            .unwrap_or(default);
        let id = self.field_id(name);
        let err = self.error_of(name);
        html! {
            div.field {
                label for=(id) { (label) }
                select id=(id) name=(name) aria-invalid=[err.map(|_| "true")]
                    aria-describedby=[err.map(|_| format!("{id}-error"))] {
                    @for (v, l) in options {
                        option value=(v) selected[v == chosen] { (l) }
                    }
                }
                @if let Some(e) = err { div id=(format!("{id}-error")) { (error_text(e)) } }
            }
        }
    }

    /// A checkbox, checked by `default` until the form is submitted.
    pub(crate) fn checkbox(&self, name: &str, label: &str, default: bool) -> Markup {
        let checked = match self.state {
            Some(s) => !s.value(name).is_empty(),
            None => default,
        };
        let id = self.field_id(name);
        html! {
            div.field.check {
                input type="checkbox" id=(id) name=(name) value="true" checked[checked];
                label for=(id) { (label) }
            }
        }
    }

    /// The error that concerns no one field (shown above the form's button).
    pub(crate) fn error(&self) -> Markup {
        html! {
            @if let Some((f, e)) = self.state.and_then(|s| s.error.as_ref()) {
                @if f.is_empty() { div.form-error { (error_text(e)) } }
            }
        }
    }
}
