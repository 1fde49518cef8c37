//! The [`Access`] check of each interaction, made once per request before its module runs,
//! and the same check for every batch and transaction entry (FHIR R4 http.html#transaction:
//! an entry is processed as the interaction it names, so it is authorized as that
//! interaction). [`permit`] is the one decision, a function of the caller's access and the
//! [`Interaction`]; what it leaves to the data — whether a resource is in a patient's
//! compartment — is decided by [`stored_in_compartment`] and [`written_in_compartment`],
//! the one compartment rule, called by requests and bundle entries alike.
//!
//! Role rights and type-level scopes are checked for every interaction. A `patient/` scope
//! (reach: one Patient's compartment) is enforced too: reads, histories and deletes check
//! that the resource is in the compartment; searches are narrowed to it (a type search
//! becomes the compartment search `Patient/<id>/<type>`); creates and updates check the
//! resource they write (and, for updates, the one they replace). Interactions whose effect
//! cannot be bounded to the compartment — `_include`/`_revinclude`, chained and `_has`
//! parameters, type and system history, PATCH, conditional update and delete — are refused
//! for a patient-scoped token rather than let through.

use axum::body::Body;
use axum::http::StatusCode;
use fhir_model::IssueCode;
use fhir_search::IndexValue;
use fhir_store::StoredResource;
use serde_json::Value;

use crate::access::{Access, Op, Reach, Refusal};
use crate::error::FhirError;
use crate::interaction::{Interaction, JobKind, Level, Scope};
use crate::request::{read_body, Ctx};

/// What an allowed interaction must still respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Nothing more: the caller's access covers it whole.
    All,
    /// A search for a `patient/` reach. `rewrite`: a type search, to run as the compartment
    /// search `Patient/<patient>/<type>` (a compartment search of the patient itself needs
    /// no rewrite). A POST `_search` form must pass [`narrowing_allowed`] too.
    Search { patient: String, rewrite: bool },
    /// An instance interaction for a `patient/` reach: the resource stored at its id (when
    /// `stored`) and the resource it writes (when `written`) must be in the compartment.
    Compartment {
        patient: String,
        stored: bool,
        written: bool,
    },
}

fn forbid(r: Refusal) -> FhirError {
    FhirError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, r.0)
}

fn patient_only(what: &str) -> FhirError {
    FhirError::new(
        StatusCode::FORBIDDEN,
        IssueCode::Forbidden,
        format!("{what} is not allowed with a patient/ scope: its results could reach beyond the patient's compartment"),
    )
}

/// Whether `access` allows `interaction` with the query `params`, and what it must still
/// respect. Pure: the same interaction gets the same answer as a request and as an entry.
pub(crate) fn permit(
    access: &Access,
    interaction: &Interaction<'_>,
    params: &[(String, String)],
) -> Result<Permit, FhirError> {
    use Interaction as I;
    let instance = |t: &str, op: Op, written: bool| -> Result<Permit, FhirError> {
        Ok(match access.check(t, op).map_err(forbid)? {
            Reach::All => Permit::All,
            Reach::Patient(patient) => Permit::Compartment {
                patient,
                stored: true,
                written,
            },
        })
    };
    match *interaction {
        // The CapabilityStatement and SMART's configuration need no token (the network
        // rules still apply); a batch or transaction is checked entry by entry.
        I::Capabilities | I::SmartConfiguration | I::BatchOrTransaction => Ok(Permit::All),
        // Answered by the authentication layer in front; the router only says there is none.
        I::Token => Ok(Permit::All),
        I::Search {
            scope: Scope::System,
            ..
        }
        | I::History(Scope::System) => {
            access.check_all_types(Op::Search).map_err(forbid)?;
            Ok(Permit::All)
        }
        I::Search {
            scope: Scope::Type(t),
            ..
        } => match access.check(t, Op::Search).map_err(forbid)? {
            Reach::All => Ok(Permit::All),
            Reach::Patient(patient) => {
                narrowing_allowed(params)?;
                if t != "Patient" && fhir_search::compartment::params("Patient", t).is_empty() {
                    return Err(forbid(Refusal(format!(
                        "{t} is not in the Patient compartment, so a patient/ scope cannot reach it"
                    ))));
                }
                Ok(Permit::Search {
                    patient,
                    rewrite: true,
                })
            }
        },
        I::Search {
            scope: Scope::Compartment(ct, cid, t),
            ..
        } => match access.check(t, Op::Search).map_err(forbid)? {
            Reach::All => Ok(Permit::All),
            Reach::Patient(p) if ct == "Patient" && cid == p => {
                narrowing_allowed(params)?;
                Ok(Permit::Search {
                    patient: p,
                    rewrite: false,
                })
            }
            Reach::Patient(_) => Err(forbid(Refusal(format!(
                "a patient/ scope reaches only its own patient's compartment, not {ct}/{cid}"
            )))),
        },
        // Not produced by the parser; deny rather than guess.
        I::Search {
            scope: Scope::Instance(..),
            ..
        } => Err(forbid(Refusal(
            "no search is addressed to an instance".into(),
        ))),
        I::History(Scope::Type(t)) => match access.check(t, Op::Read).map_err(forbid)? {
            Reach::All => Ok(Permit::All),
            Reach::Patient(_) => Err(patient_only("type history")),
        },
        I::History(Scope::Instance(t, _) | Scope::Compartment(t, ..)) => {
            instance(t, Op::Read, false)
        }
        I::Read { rtype, .. } | I::Vread { rtype, .. } => instance(rtype, Op::Read, false),
        I::Delete {
            rtype, id: Some(_), ..
        } => instance(rtype, Op::Delete, false),
        I::Update {
            rtype, id: Some(_), ..
        } => instance(rtype, Op::Update, true),
        I::Create { rtype } => Ok(match access.check(rtype, Op::Create).map_err(forbid)? {
            Reach::All => Permit::All,
            Reach::Patient(patient) => Permit::Compartment {
                patient,
                stored: false,
                written: true,
            },
        }),
        I::Update { rtype, id: None } | I::Delete { rtype, id: None } => {
            let (op, what) = if matches!(interaction, I::Update { .. }) {
                (Op::Update, "a conditional update")
            } else {
                (Op::Delete, "a conditional delete")
            };
            match (access.check(rtype, op), access.check(rtype, Op::Search)) {
                (Ok(Reach::All), Ok(Reach::All)) => Ok(Permit::All),
                (Err(e), _) | (_, Err(e)) => Err(forbid(e)),
                _ => Err(patient_only(what)),
            }
        }
        I::Patch { rtype, id: Some(_) } => {
            match access.check(rtype, Op::Update).map_err(forbid)? {
                Reach::All => Ok(Permit::All),
                Reach::Patient(_) => Err(patient_only("PATCH")),
            }
        }
        // A conditional patch searches, too (FHIR R4 http.html#cond-patch).
        I::Patch { rtype, id: None } => {
            match (
                access.check(rtype, Op::Update),
                access.check(rtype, Op::Search),
            ) {
                (Ok(Reach::All), Ok(Reach::All)) => Ok(Permit::All),
                (Err(e), _) | (_, Err(e)) => Err(forbid(e)),
                _ => Err(patient_only("a conditional PATCH")),
            }
        }
        // Bulk export (at any level), its status URL and its files: the export right (FHIR
        // Data Exporter, or a role with resources/*) and a read in full of what is exported:
        // every type (`system/*.read`, `system/*.rs`), or each type `_type` names
        // (`system/Patient.read`, as SMART's backend clients ask for them); a file needs its
        // own type, the status URL some type. A patient/ scope is refused: an export is not
        // bounded to one compartment.
        I::Operation { name: "export", .. } => {
            let types: Vec<&str> = params
                .iter()
                .filter(|(k, _)| k == "_type")
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            export_allowed(access, &types)?;
            Ok(Permit::All)
        }
        I::JobStatus {
            job: JobKind::Export,
            ..
        } => {
            export_right(access)?;
            access.check_some_type(Op::Read).map_err(forbid)?;
            Ok(Permit::All)
        }
        I::JobFile {
            job: JobKind::Export,
            file,
            ..
        } => {
            // `Patient-1.ndjson`, `Patient.000.ndjson`; errors and deletions are
            // OperationOutcome and Bundle files, which a status reader may read.
            let rtype = file.split(['-', '.']).next().unwrap_or_default();
            export_right(access)?;
            match rtype {
                "OperationOutcome" | "Bundle" | "" => {
                    access.check_some_type(Op::Read).map_err(forbid)?
                }
                t => match access.check(t, Op::Read).map_err(forbid)? {
                    Reach::All => {}
                    Reach::Patient(_) => {
                        return Err(forbid(Refusal(
                            "a patient/ scope does not reach export files".into(),
                        )))
                    }
                },
            }
            Ok(Permit::All)
        }
        // Bulk import, its status URL and its error files: the import right (FHIR Data
        // Importer, or a role with resources/*) and a write of every type in full
        // (`system/*.write`, `system/*.cud`); a patient/ scope is refused.
        I::Operation { name: "import", .. }
        | I::JobStatus {
            job: JobKind::Import,
            ..
        }
        | I::JobFile {
            job: JobKind::Import,
            ..
        } => {
            import_allowed(access)?;
            Ok(Permit::All)
        }
        // A patient's whole record: a read of the patient, then each type's own read check
        // inside the operation (everything.rs). A patient/ scope reaches its own only.
        I::Operation {
            name: "everything",
            level: Level::Instance("Patient", id),
            ..
        } => match access.check("Patient", Op::Read).map_err(forbid)? {
            Reach::All => Ok(Permit::All),
            Reach::Patient(p) if p == id => Ok(Permit::All),
            Reach::Patient(_) => Err(forbid(Refusal(format!(
                "a patient/ scope reaches only its own patient's record, not Patient/{id}"
            )))),
        },
        // $meta reads labels: of one resource or version as its read, of a type as a search
        // of it in full, of the system as a search of every type (FHIR R4
        // resource-operation-meta). A patient/ scope reaches only its compartment's
        // instances, never a whole type.
        I::Operation {
            name: "meta",
            level: Level::Instance(t, _) | Level::Version(t, ..),
            ..
        } => instance(t, Op::Read, false),
        I::Operation {
            name: "meta",
            level: Level::Type(t),
            ..
        } => match access.check(t, Op::Search).map_err(forbid)? {
            Reach::All => Ok(Permit::All),
            Reach::Patient(_) => Err(patient_only("$meta of a whole type")),
        },
        I::Operation {
            name: "meta",
            level: Level::System,
            ..
        } => {
            access.check_all_types(Op::Search).map_err(forbid)?;
            Ok(Permit::All)
        }
        // $meta-add and $meta-delete change the stored resource: an update of it. What they
        // write is labels, not content, so the compartment is decided by what is stored.
        I::Operation {
            name: "meta-add" | "meta-delete",
            level: Level::Instance(t, _) | Level::Version(t, ..),
            ..
        } => instance(t, Op::Update, false),
        // $validate reads: a resource sent to be checked is no stored data, so a read of the
        // type suffices (a patient/ reach included); at the instance level the stored
        // resource is read, so it must be in the compartment.
        I::Operation {
            name: "validate",
            level: Level::Type(t),
            ..
        } => {
            access.check(t, Op::Read).map_err(forbid)?;
            Ok(Permit::All)
        }
        I::Operation {
            name: "validate",
            level: Level::Instance(t, _),
            ..
        } => instance(t, Op::Read, false),
        // Terminology operations read ValueSets and CodeSystems: a read of the type, or of
        // the ValueSet at the id.
        I::Operation {
            name: "expand" | "validate-code",
            level: Level::Type(t @ "ValueSet"),
            ..
        }
        | I::Operation {
            name: "subsumes",
            level: Level::Type(t @ "CodeSystem"),
            ..
        } => {
            access.check(t, Op::Read).map_err(forbid)?;
            Ok(Permit::All)
        }
        I::Operation {
            name: "expand" | "validate-code",
            level: Level::Instance(t @ "ValueSet", _),
            ..
        } => instance(t, Op::Read, false),
        // Da Vinci HRex $member-match looks across every member: searches of Patient and
        // Coverage in full; a patient/ scope cannot be bounded to its compartment.
        I::Operation {
            name: "member-match",
            level: Level::Type("Patient"),
            ..
        } => {
            for t in ["Patient", "Coverage"] {
                if let Reach::Patient(_) = access.check(t, Op::Search).map_err(forbid)? {
                    return Err(patient_only("$member-match"));
                }
            }
            Ok(Permit::All)
        }
        // Azure's $purge-history removes versions: a delete of the resource.
        I::Operation {
            name: "purge-history",
            level: Level::Instance(t, _),
            ..
        } => instance(t, Op::Delete, false),
        // Each operation, as it is added, names the interaction it resembles here (a read,
        // a write, a delete). Deny what has no rule.
        I::Operation { name, .. } => Err(crate::route::unsupported_operation(name)),
    }
}

fn import_allowed(access: &Access) -> Result<(), FhirError> {
    if !access.rights.import {
        return Err(forbid(Refusal(format!(
            "{} may not import data: no FHIR data role with the import right (FHIR Data Importer) is assigned on this service",
            access.principal
        ))));
    }
    // The import right stands for the writes (FHIR Data Importer holds no write action);
    // what remains to ask is whether the token's scopes allow them.
    let scoped = Access {
        rights: crate::access::Rights::ALL,
        ..access.clone()
    };
    scoped
        .check_all_types(Op::Create)
        .and_then(|_| scoped.check_all_types(Op::Update))
        .map_err(|e| {
            forbid(Refusal(format!(
                "an import writes every type: the token needs system/*.write or system/*.cu ({})",
                e.0
            )))
        })
}

fn export_right(access: &Access) -> Result<(), FhirError> {
    if !access.rights.export {
        return Err(forbid(Refusal(format!(
            "{} may not export data: no FHIR data role with the export right (FHIR Data Exporter) is assigned on this service",
            access.principal
        ))));
    }
    Ok(())
}

/// An export of `types` (every type when empty).
fn export_allowed(access: &Access, types: &[&str]) -> Result<(), FhirError> {
    export_right(access)?;
    if types.is_empty() {
        return access.check_all_types(Op::Read).map_err(|e| {
            forbid(Refusal(format!(
                "an export without _type reads every type: the token needs system/*.read or system/*.rs ({})",
                e.0
            )))
        });
    }
    for t in types {
        match access.check(t, Op::Read).map_err(|e| {
            forbid(Refusal(format!(
                "an export of {t} reads every {t}: the token needs system/{t}.read, system/{t}.rs or system/*.read ({})",
                e.0
            )))
        })? {
            Reach::All => {}
            Reach::Patient(_) => {
                return Err(forbid(Refusal(format!(
                    "a patient/ scope does not allow an export of {t}: an export is not bounded to one compartment"
                ))))
            }
        }
    }
    Ok(())
}

/// How an admitted request continues.
pub(crate) enum Admitted {
    /// As it came.
    AsIs,
    /// A type search narrowed to a Patient's compartment: run it as `Patient/<id>/<type>`.
    InCompartment(String),
}

/// Checks one request before its module runs: [`permit`], then what the permit leaves to the
/// data. A check that reads the body (a write in a compartment, a POST `_search` form) puts
/// it back as it was; a refusal leaves it unread.
pub(crate) async fn authorize(
    ctx: &Ctx,
    interaction: &Interaction<'_>,
    body: &mut Body,
) -> Result<Admitted, FhirError> {
    match permit(&ctx.access, interaction, &ctx.params)? {
        Permit::All => Ok(Admitted::AsIs),
        Permit::Search { patient, rewrite } => {
            if matches!(interaction, Interaction::Search { post: true, .. }) {
                // POST _search: the form body holds more parameters.
                let bytes =
                    read_body(std::mem::take(body), ctx.state.inner.config.max_body_bytes).await?;
                let form: Vec<(String, String)> =
                    form_urlencoded::parse(&bytes).into_owned().collect();
                *body = Body::from(bytes);
                narrowing_allowed(&form)?;
            }
            Ok(if rewrite {
                Admitted::InCompartment(patient)
            } else {
                Admitted::AsIs
            })
        }
        Permit::Compartment {
            patient,
            stored,
            written,
        } => {
            let (rtype, id) = interaction.target();
            let rtype = rtype.unwrap_or_default();
            if let (true, Some(id)) = (stored, id) {
                let current = ctx.state.inner.store.read(&ctx.service, rtype, id).await?;
                stored_in_compartment(ctx, &patient, rtype, id, current.as_ref()).await?;
            }
            if written {
                let bytes =
                    read_body(std::mem::take(body), ctx.state.inner.config.max_body_bytes).await?;
                let resource: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))?;
                *body = Body::from(bytes);
                written_in_compartment(Some(&resource), rtype, id, &patient)?;
            }
            Ok(Admitted::AsIs)
        }
    }
}

/// A patient-scoped search may not follow references out of the compartment.
pub(crate) fn narrowing_allowed(params: &[(String, String)]) -> Result<(), FhirError> {
    for (k, _) in params {
        let name = k.split(':').next().unwrap_or(k);
        if matches!(name, "_include" | "_revinclude") || name == "_has" || k.contains('.') {
            return Err(patient_only(&format!("the search parameter '{k}'")));
        }
    }
    Ok(())
}

/// Whether a resource's content puts it in `patient`'s compartment (FHIR R4
/// compartmentdefinition-patient: the Patient itself, or a resource whose compartment
/// parameters reference it).
pub(crate) fn in_patient_compartment(
    resource: &Value,
    rtype: &str,
    id: Option<&str>,
    patient: &str,
) -> bool {
    if rtype == "Patient" {
        return id.or_else(|| resource.get("id").and_then(Value::as_str)) == Some(patient);
    }
    let codes = fhir_search::compartment::params("Patient", rtype);
    if codes.is_empty() {
        return false;
    }
    let reg = fhir_search::registry();
    let ids: Vec<u32> = codes
        .iter()
        .filter_map(|c| reg.get(rtype, c))
        .map(|p| p.id)
        .collect();
    fhir_search::extract(resource).iter().any(|e| {
        ids.contains(&e.param)
            && matches!(&e.value, IndexValue::Reference { ttype: Some(tt), tid: Some(ti), .. }
                if tt == "Patient" && ti == patient)
    })
}

fn stored_body_in_compartment(r: &StoredResource, patient: &str) -> bool {
    r.body
        .as_ref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .is_some_and(|v| in_patient_compartment(&v, &r.resource_type, Some(&r.id), patient))
}

/// The compartment rule for what is stored at `rtype/id` (`current`, as the caller read it:
/// from the store for a request, inside the transaction for an entry). A resource outside
/// the compartment answers as if it did not exist (404), so that its existence does not
/// leak — and so does a *deleted* one: whether it is inside is decided by its last version
/// with content, and only a resource that was the patient's may answer 410 Gone or be
/// written again. Nothing stored at the id is nothing to reveal.
pub(crate) async fn stored_in_compartment(
    ctx: &Ctx,
    patient: &str,
    rtype: &str,
    id: &str,
    current: Option<&StoredResource>,
) -> Result<(), FhirError> {
    let Some(current) = current else {
        return Ok(());
    };
    let inside = if rtype == "Patient" {
        id == patient
    } else if current.is_deleted() {
        // A delete writes a version without content; the one before it says whose it was.
        match current.version.checked_sub(1).filter(|v| *v > 0) {
            Some(v) => ctx
                .state
                .inner
                .store
                .vread(&ctx.service, rtype, id, v)
                .await?
                .is_some_and(|r| stored_body_in_compartment(&r, patient)),
            None => false,
        }
    } else {
        stored_body_in_compartment(current, patient)
    };
    if inside {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "{rtype}/{id} is not known in the compartment of Patient/{patient}"
        )))
    }
}

/// The compartment rule for what a create or update writes.
pub(crate) fn written_in_compartment(
    resource: Option<&Value>,
    rtype: &str,
    id: Option<&str>,
    patient: &str,
) -> Result<(), FhirError> {
    if resource.is_some_and(|v| in_patient_compartment(v, rtype, id, patient)) {
        Ok(())
    } else {
        Err(forbid(Refusal(format!(
            "a patient/ scope may only write resources in the compartment of Patient/{patient}"
        ))))
    }
}
