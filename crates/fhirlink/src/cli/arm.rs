//! `fhirlink arm get|put|patch|delete ID [--body FILE]`: any management call by resource id,
//! for everything the named commands do not cover (NSGs, virtual machines, role assignments,
//! diagnostic settings, moves). The api-version is chosen from the id's provider unless given.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::api;
use super::client::{ArmClient, Connection};
use super::output;

#[derive(Args)]
pub(crate) struct ArmCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Args)]
struct Call {
    /// The resource id (path), e.g. /subscriptions/…/resourceGroups/rg/providers/….
    id: String,
    /// The api-version [default: the one fhirlink's contracts use for the id's provider].
    #[arg(long)]
    api_version: Option<String>,
}

#[derive(Args)]
struct CallWithBody {
    #[command(flatten)]
    call: Call,
    /// The JSON body: a file, or `-` for standard input.
    #[arg(long)]
    body: PathBuf,
}

#[derive(Subcommand)]
enum Verb {
    /// GET a resource or a list (lists print their `value`, every page).
    Get(Call),
    /// PUT a resource.
    Put(CallWithBody),
    /// PATCH a resource.
    Patch(CallWithBody),
    /// DELETE a resource.
    Delete(Call),
    /// POST an action (e.g. moveResources, checkNameAvailability).
    Post(CallWithBody),
}

pub(crate) async fn run_arm(cmd: ArmCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let (method, call, body) = match cmd.verb {
        Verb::Get(c) => (Method::GET, c, None),
        Verb::Delete(c) => (Method::DELETE, c, None),
        Verb::Put(c) => (Method::PUT, c.call, Some(read_body(&c.body)?)),
        Verb::Patch(c) => (Method::PATCH, c.call, Some(read_body(&c.body)?)),
        Verb::Post(c) => (Method::POST, c.call, Some(read_body(&c.body)?)),
    };
    let version = call
        .api_version
        .clone()
        .unwrap_or_else(|| api_version_for(&call.id).to_string());
    let value = if method == Method::GET {
        let first = client.get(&call.id, &version).await?;
        if first.get("value").is_some_and(Value::is_array) && first.get("id").is_none() {
            Value::Array(client.list(&call.id, &version).await?)
        } else {
            first
        }
    } else {
        client
            .call(method, &call.id, &version, body.as_ref())
            .await?
    };
    if !value.is_null() {
        output::print_json(&value);
    }
    Ok(())
}

fn read_body(path: &PathBuf) -> anyhow::Result<Value> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the body from standard input")?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// The api-version for a resource id: by the type of its last provider segment.
fn api_version_for(id: &str) -> &'static str {
    let path = id
        .split('?')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(i) = path.rfind("/providers/") else {
        return api::RESOURCES;
    };
    let rest = &path[i + "/providers/".len()..];
    let mut parts = rest.split('/');
    let namespace = parts.next().unwrap_or_default();
    let first_type = parts.next().unwrap_or_default();
    match (namespace, first_type) {
        ("microsoft.healthcareapis", _) => api::HEALTHCARE,
        ("microsoft.network", "privatednszones") => api::PRIVATE_DNS,
        ("microsoft.network", _) => api::NETWORK,
        ("microsoft.authorization", _) => api::AUTHORIZATION,
        ("microsoft.compute", _) => api::COMPUTE,
        ("microsoft.insights", _) => api::INSIGHTS,
        _ => api::RESOURCES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_by_provider() {
        let rg = "/subscriptions/s/resourceGroups/rg";
        assert_eq!(api_version_for(rg), api::RESOURCES);
        assert_eq!(
            api_version_for(&format!("{rg}/moveResources")),
            api::RESOURCES
        );
        let svc = format!("{rg}/providers/Microsoft.HealthcareApis/services/s1");
        assert_eq!(api_version_for(&svc), api::HEALTHCARE);
        assert_eq!(
            api_version_for(&format!(
                "{svc}/providers/Microsoft.Insights/diagnosticSettings/d"
            )),
            api::INSIGHTS
        );
        assert_eq!(
            api_version_for(&format!(
                "{rg}/providers/Microsoft.Network/privateDnsZones/z/ALL"
            )),
            api::PRIVATE_DNS
        );
        assert_eq!(
            api_version_for(&format!(
                "{rg}/providers/microsoft.network/virtualNetworks/v"
            )),
            api::NETWORK
        );
        assert_eq!(
            api_version_for("/providers/Microsoft.Authorization/roleAssignments/x"),
            api::AUTHORIZATION
        );
    }
}
