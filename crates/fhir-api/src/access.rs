//! What a caller may do with a FHIR service's data, and the check of one interaction
//! against it. The layer that authenticates a request (in the binary) builds an [`Access`]
//! from the token and the service's role assignments and hands it over as a request
//! extension (`Arc<Access>`: one is prepared per verified token and shared by its requests);
//! this crate enforces it on every interaction, bundle entries included.
//!
//! Two things must both allow an interaction (Azure API for FHIR, then SMART on FHIR):
//! - the principal's data rights on the service (FHIR Data Reader/Writer/Contributor/
//!   Exporter role assignments, or an `accessPolicies` entry);
//! - the token's SMART scopes, when it has any (SMART App Launch 2.0 §scopes-and-launch-
//!   context: `patient/`, `user/`, `system/` + a type or `*` + `cruds`, the v1 forms
//!   `read`, `write`, `*`, and the forms Azure took, see [`Scopes::parse`]). A `patient/`
//!   scope reaches only the compartment of the token's `patient`; a `user/` or `system/`
//!   scope for the same type lifts that.
//!
//! Scopes this server cannot honour exactly (v2 scopes with search parameters, unknown
//! forms) grant nothing: deny when unsure.

use std::fmt;

/// An interaction, as scopes and roles see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Op {
    fn letter(self) -> char {
        match self {
            Op::Create => 'c',
            Op::Read => 'r',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Search => 's',
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Create => "create",
            Op::Read => "read",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Search => "search",
        })
    }
}

/// The principal's data rights on the service (from its role assignments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub delete: bool,
    pub export: bool,
    /// `$import` (FHIR Data Importer).
    pub import: bool,
}

impl Rights {
    pub const ALL: Rights = Rights {
        read: true,
        write: true,
        delete: true,
        export: true,
        import: true,
    };

    fn allow(self, op: Op) -> bool {
        match op {
            Op::Read | Op::Search => self.read,
            Op::Create | Op::Update => self.write,
            Op::Delete => self.delete,
        }
    }
}

/// Whose data a scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Patient,
    User,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    context: Context,
    /// `None` for `*`.
    rtype: Option<String>,
    /// The `cruds` letters granted.
    ops: String,
}

/// The SMART scopes of a token that grant access to resources.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    scopes: Vec<Scope>,
}

impl Scopes {
    /// The resource scopes among a token's scopes (`openid`, `fhirUser`, `launch/patient`
    /// and the like are not about resources and are left out). Returns `None` when there
    /// are none at all: then the role rights alone decide.
    ///
    /// Besides SMART's `patient/Observation.rs`, the forms Azure API for FHIR took are
    /// resource scopes too: `.` or `$` after the context and `all` for `*`
    /// (`patient.Observation.read`, `patient.all.read`, `user$Patient.rs`). Microsoft Entra ID
    /// cannot name a scope with a `/`, so that is what its tokens for a SMART app carry in
    /// `scp`; left out, they would let such a token do all its roles allow instead of narrowing
    /// it. A dotted scope without both a type and an access (`user.read`) is none of these.
    pub fn parse<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Option<Scopes> {
        let mut out = Vec::new();
        let mut any = false;
        for s in scopes {
            let Some(at) = s.find(['/', '.', '$']) else {
                continue;
            };
            let (ctx, rest) = (&s[..at], &s[at + 1..]);
            let context = match ctx {
                "patient" => Context::Patient,
                "user" => Context::User,
                "system" => Context::System,
                _ => continue,
            };
            if s.as_bytes()[at] != b'/' && !rest.contains('.') {
                continue;
            }
            any = true;
            if let Some(scope) = parse_one(context, rest) {
                out.push(scope);
            }
        }
        any.then_some(Scopes { scopes: out })
    }
}

fn parse_one(context: Context, rest: &str) -> Option<Scope> {
    // v2 scopes may narrow with search parameters (`Observation.rs?category=…`); this
    // server does not apply those, so such a scope grants nothing rather than everything.
    if rest.contains('?') {
        return None;
    }
    let (rtype, perms) = rest.split_once('.')?;
    let rtype = match rtype {
        "*" | "all" => None,
        t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(t.to_owned()),
        _ => return None,
    };
    let ops = match perms {
        // SMART v1.
        "read" => "rs".to_owned(),
        "write" => "cud".to_owned(),
        "*" | "all" => "cruds".to_owned(),
        // SMART v2: letters in the order c r u d s, each at most once.
        p if !p.is_empty() && is_cruds(p) => p.to_owned(),
        _ => return None,
    };
    Some(Scope {
        context,
        rtype,
        ops,
    })
}

fn is_cruds(p: &str) -> bool {
    let order = "cruds";
    let mut last = None;
    for c in p.chars() {
        let Some(i) = order.find(c) else {
            return false;
        };
        if last.is_some_and(|l| i <= l) {
            return false;
        }
        last = Some(i);
    }
    true
}

/// How a service's clients authenticate, for the CapabilityStatement's `rest.security` and
/// SMART's `/.well-known/smart-configuration` (a request extension set by the authentication
/// layer; without it there is no SMART configuration to serve).
///
/// What an external issuer's discovery document says is filled in as far as the layer knows
/// it: for the SMART configuration it asks the issuer, for the CapabilityStatement it takes
/// only what is cached, so that the statement never waits for the identity provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The issuer as the service is configured with it (its authority, or fhirlink's own).
    pub issuer: String,
    pub audience: String,
    /// Where a client gets a token, for an external issuer whose discovery document says
    /// (SMART App Launch 1.0's `oauth-uris` extension, which Azure's statement carried).
    pub authorize_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// The `issuer` the discovery document names, the `iss` of its tokens (Entra ID v1's
    /// differs from its authority's URL).
    pub discovered_issuer: Option<String>,
    /// The issuer's key set, from its discovery document.
    pub jwks_uri: Option<String>,
    pub grant_types_supported: Option<Vec<String>>,
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// fhirlink's own issuer hands out tokens to registered SMART Backend Services clients at
    /// `[base]/auth/token` (`client_credentials` with a `private_key_jwt` assertion).
    pub backend_services: bool,
}

/// Where fhirlink's own token endpoint is under a service's base URL.
pub const TOKEN_ENDPOINT_PATH: &str = "/auth/token";

/// The signature algorithms client assertions may use at fhirlink's token endpoint.
pub const ASSERTION_ALGORITHMS: [&str; 4] = ["RS384", "ES384", "RS256", "ES256"];

impl Security {
    /// The token endpoint clients are told of for a service at `base`: the external issuer's,
    /// or fhirlink's own at `[base]/auth/token` when it has one.
    pub fn token_endpoint_at(&self, base: &str) -> Option<String> {
        self.token_endpoint.clone().or_else(|| {
            self.backend_services
                .then(|| format!("{}{TOKEN_ENDPOINT_PATH}", base.trim_end_matches('/')))
        })
    }
}

/// How far an allowed interaction reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Any resource of the type.
    All,
    /// Only resources in the compartment of this Patient.
    Patient(String),
}

/// Why an interaction was refused (the 403's diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one caller may do, as the authentication layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The principal (object id or subject), for messages and audit.
    pub principal: String,
    pub rights: Rights,
    /// `None`: the token carried no resource scopes.
    pub scopes: Option<Scopes>,
    /// The token's `patient` launch context.
    pub patient: Option<String>,
}

impl Access {
    /// Everything (`--auth none`, for local experiments only).
    pub fn unrestricted(principal: &str) -> Access {
        Access {
            principal: principal.to_owned(),
            rights: Rights::ALL,
            scopes: None,
            patient: None,
        }
    }

    /// Whether `op` on resources of `rtype` is allowed, and how far it reaches.
    pub fn check(&self, rtype: &str, op: Op) -> Result<Reach, Refusal> {
        if !self.rights.allow(op) {
            return Err(Refusal(format!(
                "{} may not {op} {rtype} resources: no FHIR data role grants it on this service",
                self.principal
            )));
        }
        let Some(scopes) = &self.scopes else {
            return Ok(Reach::All);
        };
        let letter = op.letter();
        let matching = scopes
            .scopes
            .iter()
            .filter(|s| s.ops.contains(letter) && s.rtype.as_deref().is_none_or(|t| t == rtype));
        let mut patient_scope = false;
        for s in matching {
            match s.context {
                Context::User | Context::System => return Ok(Reach::All),
                Context::Patient => patient_scope = true,
            }
        }
        if patient_scope {
            return match &self.patient {
                Some(p) => Ok(Reach::Patient(p.clone())),
                None => Err(Refusal(format!(
                    "a patient/ scope allows {op} of {rtype} only with a patient in the token's launch context, and this token has none"
                ))),
            };
        }
        Err(Refusal(format!(
            "the token's scopes do not allow {op} of {rtype} resources"
        )))
    }

    /// Whether a system-wide interaction (`[base]?…`, `[base]/_history`) is allowed: it
    /// needs `op` on every type, in full.
    /// Whether the caller may `op` at least one type in full (not only in a patient's
    /// compartment): what a bulk job's status URL asks of the client that polls it.
    pub fn check_some_type(&self, op: Op) -> Result<(), Refusal> {
        if !self.rights.allow(op) {
            return Err(Refusal(format!(
                "{} may not {op} resources: no FHIR data role grants it on this service",
                self.principal
            )));
        }
        let Some(scopes) = &self.scopes else {
            return Ok(());
        };
        if scopes
            .scopes
            .iter()
            .any(|s| s.ops.contains(op.letter()) && s.context != Context::Patient)
        {
            Ok(())
        } else {
            Err(Refusal(format!(
                "the token's scopes allow no system/ or user/ {op} of any type"
            )))
        }
    }

    pub fn check_all_types(&self, op: Op) -> Result<(), Refusal> {
        match self.check("*", op) {
            Ok(Reach::All) => {
                // `*` matched literally only by `*` scopes: check("*") asks exactly that.
                Ok(())
            }
            Ok(Reach::Patient(_)) => Err(Refusal(format!(
                "a patient/ scope does not allow a {op} across all types; {op} one type at a time"
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(scopes: &[&str], patient: Option<&str>, rights: Rights) -> Access {
        Access {
            principal: "p".into(),
            rights,
            scopes: Scopes::parse(scopes.iter().copied()),
            patient: patient.map(str::to_owned),
        }
    }

    fn reach(a: &Access, t: &str, op: Op) -> String {
        match a.check(t, op) {
            Ok(Reach::All) => "all".into(),
            Ok(Reach::Patient(p)) => format!("patient {p}"),
            Err(_) => "denied".into(),
        }
    }

    #[test]
    fn roles_come_first() {
        let reader = Rights {
            read: true,
            ..Rights::default()
        };
        let a = access(&[], None, reader);
        assert_eq!(reach(&a, "Observation", Op::Read), "all");
        assert_eq!(reach(&a, "Observation", Op::Search), "all");
        assert_eq!(reach(&a, "Observation", Op::Create), "denied");
        assert_eq!(reach(&a, "Observation", Op::Delete), "denied");
        // Scopes never add to the roles.
        let a = access(&["user/*.cruds"], None, reader);
        assert_eq!(reach(&a, "Observation", Op::Update), "denied");
    }

    #[test]
    fn smart_v2_scopes() {
        let a = access(
            &[
                "patient/Observation.rs",
                "user/Patient.r",
                "openid",
                "fhirUser",
            ],
            Some("123"),
            Rights::ALL,
        );
        assert_eq!(reach(&a, "Observation", Op::Read), "patient 123");
        assert_eq!(reach(&a, "Observation", Op::Search), "patient 123");
        assert_eq!(reach(&a, "Observation", Op::Create), "denied");
        assert_eq!(reach(&a, "Patient", Op::Read), "all");
        assert_eq!(reach(&a, "Patient", Op::Search), "denied");
        assert_eq!(reach(&a, "Encounter", Op::Read), "denied");
        assert!(a.check_all_types(Op::Search).is_err());
    }

    #[test]
    fn smart_v1_scopes_and_wildcards() {
        let a = access(&["patient/*.read"], Some("7"), Rights::ALL);
        assert_eq!(reach(&a, "Condition", Op::Search), "patient 7");
        assert_eq!(reach(&a, "Condition", Op::Update), "denied");
        let a = access(&["system/*.*"], None, Rights::ALL);
        assert_eq!(reach(&a, "Condition", Op::Delete), "all");
        assert!(a.check_all_types(Op::Search).is_ok());
        let a = access(&["user/Observation.write"], None, Rights::ALL);
        assert_eq!(reach(&a, "Observation", Op::Create), "all");
        assert_eq!(reach(&a, "Observation", Op::Read), "denied");
    }

    #[test]
    fn azure_scope_forms_narrow_as_smart_ones() {
        let a = access(
            &["patient.all.read", "launch.patient"],
            Some("7"),
            Rights::ALL,
        );
        assert_eq!(reach(&a, "Condition", Op::Search), "patient 7");
        assert_eq!(reach(&a, "Condition", Op::Create), "denied");
        let a = access(&["patient.Observation.rs"], Some("7"), Rights::ALL);
        assert_eq!(reach(&a, "Observation", Op::Read), "patient 7");
        assert_eq!(reach(&a, "Patient", Op::Read), "denied");
        let a = access(&["user$Patient.read", "system.all.all"], None, Rights::ALL);
        assert_eq!(reach(&a, "Patient", Op::Read), "all");
        assert_eq!(reach(&a, "Encounter", Op::Delete), "all");
        let a = access(&["user/all.write"], None, Rights::ALL);
        assert_eq!(reach(&a, "Encounter", Op::Update), "all");
        assert_eq!(reach(&a, "Encounter", Op::Read), "denied");
        // Still a patient scope without a patient: nothing, not the roles' all.
        let a = access(&["patient.all.read"], None, Rights::ALL);
        assert_eq!(reach(&a, "Observation", Op::Read), "denied");
        // Malformed dotted resource scopes grant nothing either.
        for s in [
            "patient.Observation.x",
            "user.Obs-ervation.r",
            "user$.r",
            "user.all.rr",
        ] {
            let a = access(&[s], Some("1"), Rights::ALL);
            assert_eq!(reach(&a, "Observation", Op::Read), "denied", "{s}");
        }
        // Dotted scopes that name no type and access are not resource scopes: roles decide.
        let a = access(
            &["user.read", "user_impersonation", "patient.launch"],
            None,
            Rights::ALL,
        );
        assert_eq!(reach(&a, "Observation", Op::Delete), "all");
    }

    #[test]
    fn a_patient_scope_needs_a_patient() {
        let a = access(&["patient/Observation.rs"], None, Rights::ALL);
        assert_eq!(reach(&a, "Observation", Op::Read), "denied");
    }

    #[test]
    fn unknown_or_narrowed_scopes_grant_nothing() {
        for s in [
            "patient/Observation.rs?category=laboratory",
            "user/Observation.sr",
            "user/Observation.rr",
            "user/Observation.x",
            "user/Obs-ervation.r",
            "user/.r",
        ] {
            let a = access(&[s], Some("1"), Rights::ALL);
            assert_eq!(reach(&a, "Observation", Op::Read), "denied", "{s}");
        }
        // No resource scopes at all: roles decide.
        let a = access(&["openid", "offline_access"], None, Rights::ALL);
        assert_eq!(reach(&a, "Observation", Op::Delete), "all");
    }
}
