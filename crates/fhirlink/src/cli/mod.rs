//! The management command line, modelled on `az`: `fhirlink token` mints a token from the
//! data folder's key; `group`, `fhir`, `network`, `role` and `arm` drive a running server's
//! ARM-shaped API over HTTPS, exactly as an SDK or `az` would, with the paths, JSON bodies
//! and api-versions of the Azure contracts. No command writes to the store directly.

mod arm;
mod backup;
mod bulk;
mod client;
mod console;
mod fhir;
mod netplane;
mod network;
mod output;
mod role;
mod smart;
mod store;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use link_auth::identity::{unix_now, LocalIssuer, MAX_LIFETIME_SECS};
use serde_json::json;

pub(crate) use arm::{run_arm, ArmCommand};
pub(crate) use backup::{backup, restore, BackupArgs, RestoreArgs};
pub(crate) use bulk::{export, import, migrate, ExportArgs, ImportArgs, MigrateArgs};
pub(crate) use console::{console, ConsoleArgs};
pub(crate) use fhir::{run_fhir, FhirCommand};
pub(crate) use netplane::{diagnose, nslookup, DiagnoseArgs, NslookupArgs};
pub(crate) use network::{run_network, NetworkCommand};
pub(crate) use role::{run_role, RoleCommand};
pub(crate) use smart::{run_client, ClientCommand};
pub(crate) use store::{run_store, StoreCommand};

use client::{ArmClient, Connection};
use output::{at, col, Column};

/// The api-versions the CLI sends: those of the contracts fhirlink implements.
pub(crate) mod api {
    pub(crate) const RESOURCES: &str = "2025-04-01";
    pub(crate) const HEALTHCARE: &str = "2024-03-31";
    pub(crate) const NETWORK: &str = "2024-07-01";
    pub(crate) const PRIVATE_DNS: &str = "2024-06-01";
    pub(crate) const AUTHORIZATION: &str = "2022-04-01";
    pub(crate) const COMPUTE: &str = "2024-07-01";
    pub(crate) const INSIGHTS: &str = "2021-05-01-preview";
}

/// Resource ids, built the way ARM spells them.
pub(crate) struct Ids<'a> {
    subscription: &'a str,
    group: &'a str,
}

impl<'a> Ids<'a> {
    pub(crate) fn new(conn: &'a Connection) -> Ids<'a> {
        Ids {
            subscription: &conn.subscription,
            group: &conn.resource_group,
        }
    }

    /// The same subscription, another resource group.
    pub(crate) fn in_group<'b>(&self, group: &'b str) -> Ids<'b>
    where
        'a: 'b,
    {
        Ids {
            subscription: self.subscription,
            group,
        }
    }

    pub(crate) fn group_name(&self) -> &'a str {
        self.group
    }

    pub(crate) fn subscription(&self) -> String {
        format!("/subscriptions/{}", self.subscription)
    }

    pub(crate) fn group(&self) -> String {
        format!("{}/resourceGroups/{}", self.subscription(), self.group)
    }

    /// A top-level resource `provider/type/name` in the resource group.
    pub(crate) fn resource(&self, provider_type: &str, name: &str) -> String {
        format!("{}/providers/{provider_type}/{name}", self.group())
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("data_token").args(["service", "audience"]).multiple(false)))]
pub(crate) struct TokenArgs {
    /// The principal the token names (its `sub`): the id that role assignments name.
    #[arg(long)]
    principal: String,
    /// How long the token is valid: seconds, or a number with s, m, h or d (at most 366d).
    #[arg(long, default_value = "1h")]
    expires: String,
    /// The server's data folder, whose signing key signs the token.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// A data-plane token for this FHIR service: its audience is
    /// `https://<service>.azurehealthcareapis.com` (the default
    /// `authenticationConfiguration.audience`). Without it (and --audience), a management
    /// API token.
    #[arg(long, conflicts_with = "audience")]
    service: Option<String>,
    /// The audience of a data-plane token, when the service's audience is not the default.
    #[arg(long)]
    audience: Option<String>,
    /// SMART scopes of a data-plane token (repeat, or space-separated): `user/*.cruds`,
    /// `patient/Observation.rs`, `system/Patient.r`, …
    #[arg(long = "scope", requires = "data_token")]
    scopes: Vec<String>,
    /// The SMART launch context `patient` (the id a `patient/` scope is limited to).
    #[arg(long, requires = "data_token")]
    patient: Option<String>,
    /// The SMART `fhirUser` claim, e.g. `Practitioner/7`.
    #[arg(long, requires = "data_token")]
    fhir_user: Option<String>,
    /// The client (`azp`) the token is for.
    #[arg(long, requires = "data_token")]
    client_id: Option<String>,
}

impl TokenArgs {
    fn audience(&self) -> Option<String> {
        self.audience.clone().or_else(|| {
            self.service.as_ref().map(|s| {
                format!(
                    "https://{}.{}",
                    s.to_lowercase(),
                    link_model::SERVICE_DNS_SUFFIX
                )
            })
        })
    }
}

/// `fhirlink token`: the token alone on stdout, so that `$(fhirlink token ...)` works.
pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let lifetime =
        parse_duration(&args.expires).with_context(|| format!("--expires '{}'", args.expires))?;
    let issuer = LocalIssuer::load(&args.data)?;
    let token = match args.audience() {
        None => issuer.mint(&args.principal, unix_now(), lifetime)?,
        Some(audience) => issuer.mint_with(&link_auth::identity::TokenRequest {
            subject: args.principal.clone(),
            audience,
            scopes: args
                .scopes
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_owned)
                .collect(),
            patient: args.patient.clone(),
            fhir_user: args.fhir_user.clone(),
            client_id: args.client_id.clone(),
            now: unix_now(),
            lifetime_secs: lifetime,
        })?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}").context("writing the token")?;
    Ok(())
}

/// `90`, `90s`, `15m`, `12h`, `7d` as seconds.
fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 's'),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a number with s, m, h or d"))?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => anyhow::bail!("unknown unit '{unit}': use s, m, h or d"),
    };
    let secs = n.checked_mul(factor).unwrap_or(i64::MAX);
    anyhow::ensure!(
        (1..=MAX_LIFETIME_SECS).contains(&secs),
        "must be between 1 second and 366 days"
    );
    Ok(secs)
}

#[derive(Args)]
pub(crate) struct GroupCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: GroupAction,
}

#[derive(Subcommand)]
enum GroupAction {
    /// Create (or update) a resource group.
    Create {
        /// Name of the resource group.
        #[arg(short, long)]
        name: String,
        /// Region.
        #[arg(short, long, env = "FHIRLINK_LOCATION", default_value = "westus2")]
        location: String,
    },
    /// List the subscription's resource groups.
    List,
    /// Show a resource group.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Delete a resource group and everything in it.
    Delete {
        #[arg(short, long)]
        name: String,
    },
}

const GROUP_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("Location", |v| at(v, "/location")),
    col("State", |v| at(v, "/properties/provisioningState")),
];

pub(crate) async fn run_group(cmd: GroupCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let ids = Ids::new(&cmd.conn);
    let out = cmd.conn.output;
    let group_id = |name: &str| format!("{}/resourcegroups/{name}", ids.subscription());
    match cmd.action {
        GroupAction::Create { name, location } => {
            let v = client
                .put(
                    &group_id(&name),
                    api::RESOURCES,
                    &json!({"location": location}),
                )
                .await?;
            output::one(out, &v, GROUP_COLUMNS);
        }
        GroupAction::List => {
            let id = format!("{}/resourcegroups", ids.subscription());
            let items = client.list(&id, api::RESOURCES).await?;
            output::many(out, &items, GROUP_COLUMNS);
        }
        GroupAction::Show { name } => {
            let v = client.get(&group_id(&name), api::RESOURCES).await?;
            output::one(out, &v, GROUP_COLUMNS);
        }
        GroupAction::Delete { name } => {
            client.delete(&group_id(&name), api::RESOURCES).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("2H").unwrap(), 7200);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        for bad in [
            "",
            "h",
            "0",
            "-5m",
            "1y",
            "367d",
            "99999999999999999999d",
            "1.5h",
            "ä",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
