//! The blades: each page is rendered from ARM reads made as the signed-in principal, and
//! each action ([`act`]) is one or more ARM writes made the same way. A read the principal
//! may not make shows ARM's refusal in place of the blade; a write it may not make comes back
//! as ARM's `AuthorizationFailed` beside the form.

use std::collections::HashMap;

use http::Method;
use maud::{html, Markup, DOCTYPE};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::api::{versions as v, ArmFailure};
use crate::forms::{error_text, field_for, form, FormState};
use crate::web::Ctx;

/// The zone the seed's DNS integration creates.
pub(crate) const PRIVATE_LINK_ZONE: &str = "privatelink.azurehealthcareapis.com";
const SERVICES: &str = "Microsoft.HealthcareApis/services";
const REGIONS: &[&str] = &[
    "westus2",
    "eastus",
    "eastus2",
    "westus",
    "westus3",
    "centralus",
    "northeurope",
    "westeurope",
    "uksouth",
    "southeastasia",
    "australiaeast",
    "japaneast",
];

/// A console page, parsed from its path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    /// The subscription's resource groups.
    Home,
    /// One ARM resource's blade, on one of its tabs.
    Resource { id: String, tab: String },
    /// The three tabs of a new private endpoint, in a resource group.
    CreateEndpoint { group: String },
    /// The path of a client to a service, step by step.
    Diagnose { service: String, from: String },
    /// Requests and denials over time, from the management API's `/metrics`.
    Metrics,
    /// The audit log, filtered (the filters as `(name, value)`, in [`AUDIT_FILTERS`] order).
    Audit { filters: Vec<(String, String)> },
}

/// The audit log's filters: query name and label.
const AUDIT_FILTERS: &[(&str, &str)] = &[
    ("service", "FHIR service"),
    ("networkPath", "Network path"),
    ("verdict", "Verdict"),
    ("principal", "Principal"),
    ("since", "From (RFC 3339)"),
    ("until", "Until (RFC 3339)"),
];

impl Page {
    /// The page of a console path (with its query); `None` for anything else, so a `back`
    /// field can never send the browser off the console.
    pub(crate) fn parse(target: &str) -> Option<Page> {
        if !target.starts_with('/') || target.starts_with("//") {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let path = percent_decode_str(path).decode_utf8().ok()?;
        match path.as_ref() {
            "/" | "/console" | "/console/" => Some(Page::Home),
            "/console/create-endpoint" => Some(Page::CreateEndpoint {
                group: get("group"),
            }),
            "/console/metrics" => Some(Page::Metrics),
            "/console/audit" => Some(Page::Audit {
                filters: AUDIT_FILTERS
                    .iter()
                    .map(|(k, _)| ((*k).to_owned(), get(k)))
                    .collect(),
            }),
            "/console/diagnose" => Some(Page::Diagnose {
                service: get("service"),
                from: get("from"),
            }),
            p => {
                let id = p.strip_prefix("/console/r")?;
                if !id.starts_with("/subscriptions/") || id.contains("//") || id.contains('?') {
                    return None;
                }
                Some(Page::Resource {
                    id: id.trim_end_matches('/').to_owned(),
                    tab: get("tab"),
                })
            }
        }
    }
}

/// The console link of a resource's blade.
pub(crate) fn blade_url(id: &str) -> String {
    format!("/console/r{id}")
}

fn blade_tab(id: &str, tab: &str) -> String {
    format!("/console/r{id}?tab={tab}")
}

/// A string at a JSON pointer, or "".
fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The last segment of an ARM id (its name).
fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The resource group id an ARM id lies in.
fn group_of(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    parts.iter().take(5).copied().collect::<Vec<_>>().join("/")
}

/// The api-version of an id's resource provider.
fn version_for(id: &str) -> &'static str {
    let l = id.to_ascii_lowercase();
    if l.contains("/providers/microsoft.authorization/") {
        v::AUTHORIZATION
    } else if l.contains("/providers/microsoft.insights/") {
        v::INSIGHTS
    } else if l.contains("/providers/microsoft.healthcareapis/") {
        v::HEALTHCARE
    } else if l.contains("/providers/microsoft.network/privatednszones") {
        v::PRIVATE_DNS
    } else if l.contains("/providers/microsoft.network/") {
        v::NETWORK
    } else if l.contains("/providers/microsoft.compute/") {
        "2024-07-01"
    } else {
        v::RESOURCES
    }
}

/// The page frame: header with the principal and sign-out, navigation, the blade.
fn layout(ctx: &Ctx<'_>, title: &str, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — fhirlink console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body data-live="/console/events" {
                header.top {
                    a.brand href="/" { "fhirlink console" }
                    nav aria-label="Console" {
                        a href="/" { "Resource groups" }
                        a href="/console/diagnose" { "Diagnose" }
                        a href="/console/metrics" { "Metrics" }
                        a href="/console/audit" { "Audit log" }
                    }
                    div.who {
                        span { "Signed in as " strong #principal { (ctx.session.principal) } }
                        form method="post" action="/console/signout" {
                            input type="hidden" name="csrf" value=(ctx.csrf());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    nav.crumbs aria-label="Breadcrumb" {
                        a href="/" { "Home" }
                        @for (href, label) in crumbs { " › " a href=(href) { (label) } }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A blade that could not be read: ARM's answer in its place.
fn failed(ctx: &Ctx<'_>, title: &str, err: &ArmFailure) -> Markup {
    layout(
        ctx,
        title,
        &[],
        html! { div.form-error { (error_text(err)) } },
    )
}

pub(crate) fn not_found(ctx: &Ctx<'_>, target: &str) -> Markup {
    layout(
        ctx,
        "Not found",
        &[],
        html! { p { "No console page at " code { (target) } "." } },
    )
}

/// Renders a page with the submitted form, if any.
/// Renders a page with the submitted form, if any; a page whose read ARM refused is that
/// refusal, with ARM's status (`None`: the page as asked).
pub(crate) async fn render(
    ctx: &Ctx<'_>,
    page: &Page,
    f: Option<&FormState>,
) -> (Option<u16>, Markup) {
    let here = match page {
        Page::Home => "/".to_owned(),
        Page::Resource { id, tab } if tab.is_empty() => blade_url(id),
        Page::Resource { id, tab } => blade_tab(id, tab),
        Page::CreateEndpoint { group } => format!(
            "/console/create-endpoint?group={}",
            form_urlencoded::byte_serialize(group.as_bytes()).collect::<String>()
        ),
        Page::Diagnose { .. } => "/console/diagnose".to_owned(),
        Page::Metrics => "/console/metrics".to_owned(),
        Page::Audit { .. } => "/console/audit".to_owned(),
    };
    let result = match page {
        Page::Home => home(ctx, &here, f).await,
        Page::Resource { id, tab } => resource(ctx, id, tab, &here, f).await,
        Page::CreateEndpoint { group } => create_endpoint(ctx, group, &here, f).await,
        Page::Diagnose { service, from } => diagnose(ctx, service, from, &here, f).await,
        Page::Metrics => metrics(ctx).await,
        Page::Audit { filters } => audit(ctx, filters).await,
    };
    match result {
        Ok(markup) => (None, markup),
        Err(e) => (Some(e.status), failed(ctx, "Error", &e)),
    }
}

fn options(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| (s(i, "/id").to_owned(), s(i, "/name").to_owned()))
        .collect()
}

fn regions() -> Vec<(String, String)> {
    REGIONS
        .iter()
        .map(|r| ((*r).to_owned(), (*r).to_owned()))
        .collect()
}

async fn home(ctx: &Ctx<'_>, here: &str, f: Option<&FormState>) -> Result<Markup, ArmFailure> {
    let groups = ctx
        .api()
        .list(
            &ctx.caller(),
            &format!("{}/resourcegroups", ctx.subscription()),
            v::RESOURCES,
        )
        .await?;
    let create = form(f, "group-create");
    Ok(layout(
        ctx,
        "Resource groups",
        &[],
        html! {
            table {
                caption { "Resource groups of subscription " (ctx.console.subscription) }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Region" } th scope="col" { "State" } } }
                tbody {
                    @for g in &groups {
                        tr {
                            td { a href=(blade_url(s(g, "/id"))) { (s(g, "/name")) } }
                            td { (s(g, "/location")) }
                            td { (s(g, "/properties/provisioningState")) }
                        }
                    }
                }
            }
            section {
                h2 { "Create a resource group" }
                form method="post" action="/console/do/group-create" {
                    (create.hidden(ctx.csrf(), here))
                    (create.text("name", "Resource group name", "", ""))
                    (create.select("location", "Region", &regions(), "westus2"))
                    (create.error())
                    button type="submit" { "Create" }
                }
            }
        },
    ))
}

async fn resource(
    ctx: &Ctx<'_>,
    id: &str,
    tab: &str,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let r = ctx.api().get(&ctx.caller(), id, version_for(id)).await?;
    let kind = s(&r, "/type").to_ascii_lowercase();
    let name = s(&r, "/name").to_owned();
    let group = group_of(id);
    let mut crumbs = Vec::new();
    if group != id && group.split('/').count() == 5 {
        crumbs.push((blade_url(&group), name_of(&group).to_owned()));
    }
    let body = match kind.as_str() {
        "microsoft.resources/resourcegroups" => group_blade(ctx, &r, here, f).await?,
        "microsoft.healthcareapis/services" => service_blade(ctx, &r, tab, here, f).await?,
        "microsoft.network/privateendpoints" => endpoint_blade(ctx, &r).await?,
        "microsoft.network/virtualnetworks" => vnet_blade(ctx, &r, here, f).await?,
        "microsoft.network/networksecuritygroups" => nsg_blade(ctx, &r, here, f)?,
        "microsoft.network/privatednszones" => zone_blade(ctx, &r, here, f).await?,
        _ => html! {
            dl {
                dt { "Type" } dd { (s(&r, "/type")) }
                dt { "Provisioning state" } dd { (s(&r, "/properties/provisioningState")) }
            }
            h2 { "JSON" }
            pre.json { (serde_json::to_string_pretty(&r).unwrap_or_default()) }
        },
    };
    Ok(layout(ctx, &name, &crumbs, body))
}

/// The resources of a type in the subscription, for a choice: from ARM's generic resource
/// list (ids and names only, cheap however large the resources are), or for a principal
/// that may not read it (a Network Contributor) the type's own list; empty when neither
/// may be read (the write decides in the end).
async fn choices(ctx: &Ctx<'_>, resource_type: &str) -> Vec<Value> {
    let sub = ctx.subscription();
    if let Ok(found) = ctx.api().of_type(&ctx.caller(), &sub, resource_type).await {
        return found;
    }
    let typed = format!("{sub}/providers/{resource_type}");
    ctx.api()
        .list(&ctx.caller(), &typed, version_for(&typed))
        .await
        .unwrap_or_default()
}

/// A small delete form for a resource.
fn delete_button(ctx: &Ctx<'_>, id: &str, label: &str, back: &str) -> Markup {
    html! {
        form.inline method="post" action="/console/do/delete" {
            input type="hidden" name="csrf" value=(ctx.csrf());
            input type="hidden" name="form" value="delete";
            input type="hidden" name="back" value=(back);
            input type="hidden" name="id" value=(id);
            button.danger type="submit" aria-label=(format!("{label} {}", name_of(id))) { (label) }
        }
    }
}

async fn group_blade(
    ctx: &Ctx<'_>,
    g: &Value,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let id = s(g, "/id");
    let resources = ctx
        .api()
        .list(&ctx.caller(), &format!("{id}/resources"), v::RESOURCES)
        .await?;
    let svc = form(f, "service-create");
    let vnet = form(f, "vnet-create");
    let nsg = form(f, "nsg-create");
    let zone = form(f, "zone-create");
    let location = s(g, "/location");
    let group_q: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let roles = role_assignments(ctx, id, here, f).await?;
    Ok(html! {
        p { "Region " strong { (location) } " · " (resources.len()) " resources" }
        p { a.button href=(format!("/console/create-endpoint?group={group_q}")) { "Create a private endpoint" } }
        table {
            caption { "Resources" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Region" } } }
            tbody {
                @for r in &resources {
                    tr {
                        td { a href=(blade_url(s(r, "/id"))) { (s(r, "/name")) } }
                        td { (s(r, "/type")) }
                        td { (s(r, "/location")) }
                    }
                }
            }
        }
        div.cards {
            section {
                h2 { "Create a FHIR service" }
                form method="post" action="/console/do/service-create" {
                    (svc.hidden(ctx.csrf(), here))
                    input type="hidden" name="group" value=(id);
                    (svc.text("name", "Service name", "", "3-24 lowercase letters and digits"))
                    (svc.select("location", "Region", &regions(), location))
                    (svc.error())
                    button type="submit" { "Create" }
                }
            }
            section {
                h2 { "Create a virtual network" }
                form method="post" action="/console/do/vnet-create" {
                    (vnet.hidden(ctx.csrf(), here))
                    input type="hidden" name="group" value=(id);
                    (vnet.text("name", "Name", "", ""))
                    (vnet.select("location", "Region", &regions(), location))
                    (vnet.text("prefix", "Address space", "", "e.g. 127.10.0.0/16"))
                    (vnet.text("subnet", "Subnet name", "default", ""))
                    (vnet.text("subnetPrefix", "Subnet address range", "", "e.g. 127.10.1.0/24"))
                    (vnet.error())
                    button type="submit" { "Create" }
                }
            }
            section {
                h2 { "Create a network security group" }
                form method="post" action="/console/do/nsg-create" {
                    (nsg.hidden(ctx.csrf(), here))
                    input type="hidden" name="group" value=(id);
                    (nsg.text("name", "Name", "", ""))
                    (nsg.select("location", "Region", &regions(), location))
                    (nsg.error())
                    button type="submit" { "Create" }
                }
            }
            section {
                h2 { "Create a private DNS zone" }
                form method="post" action="/console/do/zone-create" {
                    (zone.hidden(ctx.csrf(), here))
                    input type="hidden" name="group" value=(id);
                    (zone.text("name", "Zone name", PRIVATE_LINK_ZONE, ""))
                    (zone.error())
                    button type="submit" { "Create" }
                }
            }
        }
        h2 { "Access control (IAM)" }
        (roles)
        h2 { "Delete" }
        (delete_button(ctx, id, "Delete resource group", "/"))
    })
}

async fn service_blade(
    ctx: &Ctx<'_>,
    r: &Value,
    tab: &str,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let id = s(r, "/id");
    let tabs = [
        ("", "Overview"),
        ("networking", "Networking"),
        ("authentication", "Authentication"),
        ("access", "Access control (IAM)"),
        ("diagnostics", "Diagnostic settings"),
    ];
    let content = match tab {
        "networking" => service_networking(ctx, r, here, f),
        "authentication" => html! {
            dl {
                dt { "Authority" } dd { (s(r, "/properties/authenticationConfiguration/authority")) }
                dt { "Audience" } dd { (s(r, "/properties/authenticationConfiguration/audience")) }
                dt { "SMART proxy" } dd { (r.pointer("/properties/authenticationConfiguration/smartProxyEnabled").map(Value::to_string).unwrap_or_default()) }
            }
        },
        "access" => role_assignments(ctx, id, here, f).await?,
        "diagnostics" => {
            let settings = ctx
                .api()
                .list(
                    &ctx.caller(),
                    &format!("{id}/providers/Microsoft.Insights/diagnosticSettings"),
                    v::INSIGHTS,
                )
                .await?;
            html! {
                table {
                    caption { "Diagnostic settings" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Logs" } } }
                    tbody {
                        @for d in &settings {
                            tr {
                                td { (s(d, "/name")) }
                                td { @for l in arr(d, "/properties/logs") { (s(l, "/category")) " " } }
                            }
                        }
                    }
                }
                @if settings.is_empty() { p { "No diagnostic settings." } }
            }
        }
        _ => service_overview(ctx, r).await?,
    };
    Ok(html! {
        nav.tabs aria-label="Service" {
            @for (t, label) in tabs {
                @let href = if t.is_empty() { blade_url(id) } else { blade_tab(id, t) };
                a href=(href) aria-current=[(t == tab || (t.is_empty() && !tabs.iter().any(|(x, _)| *x == tab))).then_some("page")] { (label) }
            }
        }
        (content)
    })
}

async fn service_overview(ctx: &Ctx<'_>, r: &Value) -> Result<Markup, ArmFailure> {
    let name = s(r, "/name").to_ascii_lowercase();
    let mut endpoints = Vec::new();
    for c in arr(r, "/properties/privateEndpointConnections") {
        let pe = s(c, "/properties/privateEndpoint/id");
        let ips = match ctx.api().get(&ctx.caller(), pe, v::NETWORK).await {
            Ok(pe) => arr(&pe, "/properties/customDnsConfigs")
                .iter()
                .flat_map(|d| arr(d, "/ipAddresses"))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e.code,
        };
        endpoints.push((
            pe.to_owned(),
            s(c, "/properties/privateLinkServiceConnectionState/status").to_owned(),
            ips,
        ));
    }
    Ok(html! {
        dl.overview {
            dt { "FHIR endpoint" } dd #endpoint { (format!("https://{name}.{}", link_model::SERVICE_DNS_SUFFIX)) }
            dt { "Provisioning state" } dd { (s(r, "/properties/provisioningState")) }
            dt { "Public network access" } dd #public-access { (s(r, "/properties/publicNetworkAccess")) }
            dt { "Region" } dd { (s(r, "/location")) }
            dt { "Kind" } dd { (s(r, "/kind")) }
        }
        table #endpoints {
            caption { "Private endpoints" }
            thead { tr { th scope="col" { "Private endpoint" } th scope="col" { "Connection state" } th scope="col" { "Private IP" } } }
            tbody {
                @for (pe, state, ips) in &endpoints {
                    tr {
                        td { a href=(blade_url(pe)) { (name_of(pe)) } }
                        td { (state) }
                        td.ip { (ips) }
                    }
                }
            }
        }
    })
}

fn service_networking(ctx: &Ctx<'_>, r: &Value, here: &str, f: Option<&FormState>) -> Markup {
    let id = s(r, "/id");
    let public = s(r, "/properties/publicNetworkAccess");
    let pa = form(f, "public-access");
    html! {
        section {
            h2 { "Public network access" }
            form method="post" action="/console/do/public-access" {
                (pa.hidden(ctx.csrf(), here))
                input type="hidden" name="id" value=(id);
                fieldset {
                    legend { "Public network access" }
                    @for value in ["Enabled", "Disabled"] {
                        div.check {
                            input type="radio" id=(format!("public-{value}")) name="value" value=(value) checked[public == value];
                            label for=(format!("public-{value}")) { (value) }
                        }
                    }
                }
                p.note { "Approving the first private endpoint connection switches public network access to Disabled." }
                (pa.error())
                button type="submit" { "Save" }
            }
        }
        section {
            h2 { "Private endpoint connections" }
            table #connections {
                caption { "Private endpoint connections" }
                thead { tr {
                    th scope="col" { "Connection name" } th scope="col" { "Connection state" }
                    th scope="col" { "Private endpoint" } th scope="col" { "Description" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for c in arr(r, "/properties/privateEndpointConnections") {
                        @let cid = s(c, "/id");
                        @let fid = format!("conn-{}", name_of(cid));
                        @let cf = form(f, &fid);
                        tr data-connection=(s(c, "/name")) {
                            td { (s(c, "/name")) }
                            td.state { (s(c, "/properties/privateLinkServiceConnectionState/status")) }
                            td { a href=(blade_url(s(c, "/properties/privateEndpoint/id"))) { (name_of(s(c, "/properties/privateEndpoint/id"))) } }
                            td { (s(c, "/properties/privateLinkServiceConnectionState/description")) }
                            td {
                                form method="post" action="/console/do/connection" {
                                    (cf.hidden(ctx.csrf(), here))
                                    input type="hidden" name="id" value=(cid);
                                    (cf.text("description", "Description", "", ""))
                                    (cf.error())
                                    button type="submit" name="decision" value="Approved" { "Approve" }
                                    button type="submit" name="decision" value="Rejected" { "Reject" }
                                    button.danger type="submit" name="decision" value="Remove" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn role_assignments(
    ctx: &Ctx<'_>,
    scope: &str,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let items = ctx
        .api()
        .list(
            &ctx.caller(),
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            v::AUTHORIZATION,
        )
        .await?;
    let role_name = |def: &str| -> String {
        let guid = name_of(def);
        link_model::ROLES
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(guid))
            .map(|r| r.name.to_owned())
            .unwrap_or_else(|| guid.to_owned())
    };
    let roles: Vec<(String, String)> = link_model::ROLES
        .iter()
        .map(|r| (r.id.to_owned(), r.name.to_owned()))
        .collect();
    let add = form(f, "role-create");
    Ok(html! {
        table #role-assignments {
            caption { "Role assignments" }
            thead { tr { th scope="col" { "Principal" } th scope="col" { "Role" } th scope="col" { "Scope" } th scope="col" { "Actions" } } }
            tbody {
                @for a in &items {
                    tr {
                        td { (s(a, "/properties/principalId")) }
                        td { (role_name(s(a, "/properties/roleDefinitionId"))) }
                        td { (s(a, "/properties/scope")) }
                        td { (delete_button(ctx, s(a, "/id"), "Remove", here)) }
                    }
                }
            }
        }
        section {
            h2 { "Add role assignment" }
            form method="post" action="/console/do/role-create" {
                (add.hidden(ctx.csrf(), here))
                input type="hidden" name="scope" value=(scope);
                (add.text("principal", "Principal", "", ""))
                (add.select("role", "Role", &roles, link_model::READER))
                (add.error())
                button type="submit" { "Add" }
            }
        }
    })
}

async fn endpoint_blade(ctx: &Ctx<'_>, r: &Value) -> Result<Markup, ArmFailure> {
    let conns: Vec<&Value> = arr(r, "/properties/privateLinkServiceConnections")
        .iter()
        .chain(arr(r, "/properties/manualPrivateLinkServiceConnections"))
        .collect();
    let groups = ctx
        .api()
        .list(
            &ctx.caller(),
            &format!("{}/privateDnsZoneGroups", s(r, "/id")),
            v::NETWORK,
        )
        .await
        .unwrap_or_default();
    Ok(html! {
        dl.overview {
            dt { "Provisioning state" } dd { (s(r, "/properties/provisioningState")) }
            dt { "Region" } dd { (s(r, "/location")) }
            dt { "Subnet" } dd { a href=(blade_url(&group_vnet(s(r, "/properties/subnet/id")))) { (s(r, "/properties/subnet/id")) } }
            dt { "Network interface" } dd { @for n in arr(r, "/properties/networkInterfaces") { a href=(blade_url(s(n, "/id"))) { (name_of(s(n, "/id"))) } " " } }
            dt { "Private IP" } dd #pe-ip { @for d in arr(r, "/properties/customDnsConfigs") { @for ip in arr(d, "/ipAddresses") { (ip.as_str().unwrap_or("")) " " } } }
            dt { "FQDN" } dd { @for d in arr(r, "/properties/customDnsConfigs") { (s(d, "/fqdn")) " " } }
        }
        table {
            caption { "Connections" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Resource" } th scope="col" { "Connection state" } th scope="col" { "Request message" } } }
            tbody {
                @for c in &conns {
                    tr {
                        td { (s(c, "/name")) }
                        td { (s(c, "/properties/privateLinkServiceId")) }
                        td.state { (s(c, "/properties/privateLinkServiceConnectionState/status")) }
                        td { (s(c, "/properties/requestMessage")) }
                    }
                }
            }
        }
        table {
            caption { "DNS configuration (zone groups)" }
            thead { tr { th scope="col" { "Zone group" } th scope="col" { "Private DNS zone" } } }
            tbody {
                @for g in &groups {
                    @for c in arr(g, "/properties/privateDnsZoneConfigs") {
                        tr { td { (s(g, "/name")) } td { a href=(blade_url(s(c, "/properties/privateDnsZoneId"))) { (name_of(s(c, "/properties/privateDnsZoneId"))) } } }
                    }
                }
            }
        }
    })
}

/// The subnets of a virtual network as choices: (id, "vnet / subnet (prefix)").
pub(crate) async fn subnet_options(ctx: &Ctx<'_>, vnet: &str) -> Vec<(String, String)> {
    let Ok(vn) = ctx.api().get(&ctx.caller(), vnet, v::NETWORK).await else {
        return Vec::new();
    };
    arr(&vn, "/properties/subnets")
        .iter()
        .map(|sn| {
            (
                s(sn, "/id").to_owned(),
                format!(
                    "{} / {} ({})",
                    s(&vn, "/name"),
                    s(sn, "/name"),
                    s(sn, "/properties/addressPrefix")
                ),
            )
        })
        .collect()
}

/// The virtual network of a subnet id.
fn group_vnet(subnet: &str) -> String {
    match subnet.to_ascii_lowercase().find("/subnets/") {
        Some(i) => subnet[..i].to_owned(),
        None => subnet.to_owned(),
    }
}

async fn vnet_blade(
    ctx: &Ctx<'_>,
    r: &Value,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let id = s(r, "/id");
    let vnets = choices(ctx, "Microsoft.Network/virtualNetworks").await;
    let nsgs = choices(ctx, "Microsoft.Network/networkSecurityGroups").await;
    let mut nsg_options = vec![(String::new(), "None".to_owned())];
    nsg_options.extend(options(&nsgs));
    let others: Vec<Value> = vnets
        .into_iter()
        .filter(|x| !s(x, "/id").eq_ignore_ascii_case(id))
        .collect();
    let sub = form(f, "subnet-create");
    let peer = form(f, "peering-create");
    Ok(html! {
        dl.overview {
            dt { "Address space" } dd { @for p in arr(r, "/properties/addressSpace/addressPrefixes") { (p.as_str().unwrap_or("")) " " } }
            dt { "Region" } dd { (s(r, "/location")) }
            dt { "Provisioning state" } dd { (s(r, "/properties/provisioningState")) }
        }
        section {
            h2 { "Subnets" }
            table #subnets {
                caption { "Subnets" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Address range" } th scope="col" { "Security group" } } }
                tbody {
                    @for sn in arr(r, "/properties/subnets") {
                        tr {
                            td { (s(sn, "/name")) }
                            td { (s(sn, "/properties/addressPrefix")) }
                            td { @let n = s(sn, "/properties/networkSecurityGroup/id"); @if !n.is_empty() { a href=(blade_url(n)) { (name_of(n)) } } }
                        }
                    }
                }
            }
            form method="post" action="/console/do/subnet-create" {
                (sub.hidden(ctx.csrf(), here))
                input type="hidden" name="vnet" value=(id);
                (sub.text("name", "Subnet name", "", ""))
                (sub.text("prefix", "Subnet address range", "", ""))
                (sub.select("nsg", "Network security group", &nsg_options, ""))
                (sub.error())
                button type="submit" { "Add subnet" }
            }
        }
        section {
            h2 { "Peerings" }
            table #peerings {
                caption { "Peerings" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Peering state" } th scope="col" { "Remote virtual network" } } }
                tbody {
                    @for p in arr(r, "/properties/virtualNetworkPeerings") {
                        tr {
                            td { (s(p, "/name")) }
                            td.state { (s(p, "/properties/peeringState")) }
                            td { (name_of(s(p, "/properties/remoteVirtualNetwork/id"))) }
                        }
                    }
                }
            }
            form method="post" action="/console/do/peering-create" {
                (peer.hidden(ctx.csrf(), here))
                input type="hidden" name="vnet" value=(id);
                (peer.text("name", "Peering link name", "", ""))
                (peer.select("remote", "Remote virtual network", &options(&others), ""))
                (peer.error())
                button type="submit" { "Add peering" }
            }
        }
    })
}

fn nsg_blade(
    ctx: &Ctx<'_>,
    r: &Value,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let id = s(r, "/id");
    let rule = form(f, "rule-create");
    let pick = |xs: &[&str]| -> Vec<(String, String)> {
        xs.iter()
            .map(|x| ((*x).to_owned(), (*x).to_owned()))
            .collect()
    };
    let rows = |rules: &[Value]| {
        html! {
            @for x in rules {
                tr {
                    td { (x.pointer("/properties/priority").map(Value::to_string).unwrap_or_default()) }
                    td { (s(x, "/name")) }
                    td { (s(x, "/properties/direction")) }
                    td { (s(x, "/properties/access")) }
                    td { (s(x, "/properties/protocol")) }
                    td { (s(x, "/properties/sourceAddressPrefix")) }
                    td { (s(x, "/properties/destinationAddressPrefix")) }
                    td { (s(x, "/properties/destinationPortRange")) }
                }
            }
        }
    };
    Ok(html! {
        table #rules {
            caption { "Security rules" }
            thead { tr {
                th scope="col" { "Priority" } th scope="col" { "Name" } th scope="col" { "Direction" } th scope="col" { "Access" }
                th scope="col" { "Protocol" } th scope="col" { "Source" } th scope="col" { "Destination" } th scope="col" { "Port" }
            } }
            tbody {
                (rows(arr(r, "/properties/securityRules")))
                (rows(arr(r, "/properties/defaultSecurityRules")))
            }
        }
        section {
            h2 { "Add a security rule" }
            form method="post" action="/console/do/rule-create" {
                (rule.hidden(ctx.csrf(), here))
                input type="hidden" name="nsg" value=(id);
                (rule.text("name", "Name", "", ""))
                (rule.text("priority", "Priority", "100", "100-4096"))
                (rule.select("direction", "Direction", &pick(&["Inbound", "Outbound"]), "Inbound"))
                (rule.select("access", "Action", &pick(&["Allow", "Deny"]), "Allow"))
                (rule.select("protocol", "Protocol", &pick(&["*", "Tcp", "Udp", "Icmp"]), "*"))
                (rule.text("source", "Source address prefix", "*", ""))
                (rule.text("destination", "Destination address prefix", "*", ""))
                (rule.text("port", "Destination port ranges", "*", ""))
                (rule.error())
                button type="submit" { "Add" }
            }
        }
    })
}

async fn zone_blade(
    ctx: &Ctx<'_>,
    r: &Value,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let id = s(r, "/id");
    let records = ctx
        .api()
        .list(&ctx.caller(), &format!("{id}/ALL"), v::PRIVATE_DNS)
        .await?;
    let links = ctx
        .api()
        .list(
            &ctx.caller(),
            &format!("{id}/virtualNetworkLinks"),
            v::PRIVATE_DNS,
        )
        .await?;
    let vnets = choices(ctx, "Microsoft.Network/virtualNetworks").await;
    let link = form(f, "link-create");
    Ok(html! {
        section {
            h2 { "Record sets" }
            table #records {
                caption { "Record sets" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "TTL" } th scope="col" { "Value" } th scope="col" { "Auto registered" } } }
                tbody {
                    @for x in &records {
                        tr {
                            td { (s(x, "/name")) }
                            td { (s(x, "/type").rsplit('/').next().unwrap_or("")) }
                            td { (x.pointer("/properties/ttl").map(Value::to_string).unwrap_or_default()) }
                            td.ip {
                                @for a in arr(x, "/properties/aRecords") { (s(a, "/ipv4Address")) " " }
                                @for a in arr(x, "/properties/soaRecord").iter().chain(x.pointer("/properties/soaRecord")) { (s(a, "/host")) }
                            }
                            td { (x.pointer("/properties/isAutoRegistered").map(Value::to_string).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Virtual network links" }
            table #links {
                caption { "Virtual network links" }
                thead { tr { th scope="col" { "Link name" } th scope="col" { "Link status" } th scope="col" { "Virtual network" } th scope="col" { "Auto-registration" } } }
                tbody {
                    @for l in &links {
                        tr {
                            td { (s(l, "/name")) }
                            td { (s(l, "/properties/virtualNetworkLinkState")) " " (s(l, "/properties/provisioningState")) }
                            td { (name_of(s(l, "/properties/virtualNetwork/id"))) }
                            td { @if l.pointer("/properties/registrationEnabled").and_then(Value::as_bool).unwrap_or(false) { "Enabled" } @else { "Disabled" } }
                        }
                    }
                }
            }
            h3 { "Add a virtual network link" }
            form method="post" action="/console/do/link-create" {
                (link.hidden(ctx.csrf(), here))
                input type="hidden" name="zone" value=(id);
                (link.text("name", "Link name", "", ""))
                (link.select("vnet", "Virtual network", &options(&vnets), ""))
                (link.checkbox("registration", "Enable auto registration", false))
                (link.error())
                button type="submit" { "Add link" }
            }
        }
    })
}

async fn create_endpoint(
    ctx: &Ctx<'_>,
    group: &str,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let sub = ctx.subscription();
    // What the principal may not list is left out (a Network Contributor of one group
    // may not read the subscription's services); the write decides in the end.
    let list = |path: String, version: &'static str| async move {
        ctx.api()
            .list(&ctx.caller(), &path, version)
            .await
            .unwrap_or_default()
    };
    let mut groups = list(format!("{sub}/resourcegroups"), v::RESOURCES).await;
    if !groups
        .iter()
        .any(|g| s(g, "/id").eq_ignore_ascii_case(group))
        && !group.is_empty()
    {
        groups.insert(0, json!({"id": group, "name": name_of(group)}));
    }
    let services = choices(ctx, SERVICES).await;
    let zones = choices(ctx, "Microsoft.Network/privateDnsZones").await;
    // The virtual network is chosen first; the subnets offered are that network's (the
    // script fetches another network's when the choice changes).
    let vnets = choices(ctx, "Microsoft.Network/virtualNetworks").await;
    let e = form(f, "endpoint-create");
    let chosen_vnet = e
        .state
        .map(|st| st.value("vnet").to_owned())
        .filter(|x| !x.is_empty())
        .or_else(|| vnets.first().map(|x| s(x, "/id").to_owned()))
        .unwrap_or_default();
    let subnets = if chosen_vnet.is_empty() {
        Vec::new()
    } else {
        subnet_options(ctx, &chosen_vnet).await
    };
    let mut zone_options = vec![("new".to_owned(), format!("(New) {PRIVATE_LINK_ZONE}"))];
    zone_options.extend(options(&zones));
    let method = e
        .state
        .map(|s| s.value("method"))
        .filter(|m| !m.is_empty())
        .unwrap_or("directory");
    let dns = e.state.map(|s| s.value("dns") == "yes").unwrap_or(true);
    Ok(layout(
        ctx,
        "Create a private endpoint",
        &[(blade_url(group), name_of(group).to_owned())],
        html! {
            form #create-endpoint method="post" action="/console/do/endpoint-create" data-tabs="basics" {
                (e.hidden(ctx.csrf(), here))
                div.tabs role="tablist" aria-label="Create a private endpoint" {
                    button type="button" role="tab" id="tab-basics" data-tab="basics" aria-controls="panel-basics" { "Basics" }
                    button type="button" role="tab" id="tab-resource" data-tab="resource" aria-controls="panel-resource" { "Resource" }
                    button type="button" role="tab" id="tab-configuration" data-tab="configuration" aria-controls="panel-configuration" { "Configuration" }
                }
                section #panel-basics role="tabpanel" aria-labelledby="tab-basics" data-panel="basics" {
                    h2 { "Basics" }
                    (e.select("group", "Resource group", &options(&groups), group))
                    (e.text("name", "Name", "", ""))
                    (e.select("location", "Region", &regions(), "westus2"))
                    p.note #region-rule { "The private endpoint must be in the same region as the virtual network it is placed in (Configuration); ARM refuses another region." }
                }
                section #panel-resource role="tabpanel" aria-labelledby="tab-resource" data-panel="resource" {
                    h2 { "Resource" }
                    fieldset {
                        legend { "Connection method" }
                        div.check {
                            input type="radio" id="method-directory" name="method" value="directory" checked[method == "directory"];
                            label for="method-directory" { "Connect to an Azure resource in my directory" }
                        }
                        div.check {
                            input type="radio" id="method-id" name="method" value="id" checked[method == "id"];
                            label for="method-id" { "Connect to an Azure resource by resource ID or alias" }
                        }
                    }
                    div.field {
                        label for="endpoint-create-type" { "Resource type" }
                        input #endpoint-create-type type="text" name="resourceType" value=(SERVICES) readonly;
                    }
                    (e.select("resource", "Resource", &options(&services), ""))
                    (e.text("resourceId", "Resource ID or alias", "", "For a connection that the resource's owner approves (manual approval)."))
                    (e.text("requestMessage", "Request message", "", ""))
                    div.field {
                        label for="endpoint-create-subresource" { "Target sub-resource" }
                        input #endpoint-create-subresource type="text" name="groupId" value="fhir" readonly;
                    }
                }
                section #panel-configuration role="tabpanel" aria-labelledby="tab-configuration" data-panel="configuration" {
                    h2 { "Configuration" }
                    (e.select("vnet", "Virtual network", &options(&vnets), &chosen_vnet))
                    div data-subnets="vnet" {
                        (e.select("subnet", "Subnet", &subnets, ""))
                    }
                    fieldset {
                        legend { "Integrate with private DNS zone" }
                        div.check {
                            input type="radio" id="dns-yes" name="dns" value="yes" checked[dns];
                            label for="dns-yes" { "Yes" }
                        }
                        div.check {
                            input type="radio" id="dns-no" name="dns" value="no" checked[!dns];
                            label for="dns-no" { "No" }
                        }
                    }
                    (e.select("zone", "Private DNS zone", &zone_options, "new"))
                }
                (e.error())
                button type="submit" #create { "Create" }
            }
        },
    ))
}

async fn diagnose(
    ctx: &Ctx<'_>,
    service: &str,
    from: &str,
    here: &str,
    f: Option<&FormState>,
) -> Result<Markup, ArmFailure> {
    let services = ctx
        .api()
        .list(
            &ctx.caller(),
            &format!("{}/providers/{SERVICES}", ctx.subscription()),
            v::HEALTHCARE,
        )
        .await?;
    let names: Vec<(String, String)> = services
        .iter()
        .map(|x| (s(x, "/name").to_owned(), s(x, "/name").to_owned()))
        .collect();
    let result = if service.is_empty() || from.is_empty() {
        None
    } else {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("service", service)
            .append_pair("from", from)
            .finish();
        Some(
            ctx.api()
                .get(
                    &ctx.caller(),
                    &format!("/fhirlink/diagnose?{q}"),
                    v::RESOURCES,
                )
                .await,
        )
    };
    let _ = (here, f);
    let prefilled = FormState {
        form: "diagnose".into(),
        values: [("service", service), ("from", from)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        error: None,
    };
    let d = form(Some(&prefilled), "diagnose");
    Ok(layout(
        ctx,
        "Diagnose",
        &[],
        html! {
            form method="get" action="/console/diagnose" {
                (d.select("service", "FHIR service", &names, service))
                (d.text("from", "Client address", "", "The IPv4 address the client connects from"))
                button type="submit" { "Diagnose" }
            }
            @match &result {
                None => {}
                Some(Err(e)) => { div.form-error { (error_text(e)) } }
                Some(Ok(d)) => {
                    h2 { "Path from " (s(d, "/from")) " to " (s(d, "/service")) }
                    ol #checks {
                        @for c in arr(d, "/checks") {
                            @let ok = c.get("ok").and_then(Value::as_bool).unwrap_or(false);
                            li.(if ok { "ok" } else { "broken" }) {
                                strong { (s(c, "/check")) } " — " (if ok { "ok" } else { "broken" }) ": " (s(c, "/detail"))
                            }
                        }
                    }
                    p #outcome { strong { "Outcome: " } (s(d, "/outcome")) }
                    @if !arr(d, "/fixes").is_empty() {
                        h2 { "Fixes" }
                        ul #fixes { @for x in arr(d, "/fixes") { li { (x.as_str().unwrap_or("")) } } }
                    }
                }
            }
        },
    ))
}

/// The totals of a Prometheus text exposition: (requests, denials) over both planes, and
/// requests per network path.
fn totals(text: &str) -> (f64, f64, Vec<(String, f64)>) {
    let (mut requests, mut denials) = (0.0, 0.0);
    let mut by_path: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = series.strip_prefix("fhirlink_http_requests_total{") {
            requests += value;
            let label = |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_owned()
            };
            if matches!(label("status").as_str(), "401" | "403") {
                denials += value;
            }
            let path = label("path");
            match by_path.iter_mut().find(|(p, _)| *p == path) {
                Some((_, n)) => *n += value,
                None => by_path.push((path, value)),
            }
        }
    }
    by_path.sort_by(|a, b| a.0.cmp(&b.0));
    (requests, denials, by_path)
}

/// An SVG line chart of per-minute rates between samples (drawn on the server: no script,
/// no inline style).
fn chart(title: &str, points: &[(i64, f64)], colour: &str) -> Markup {
    let (w, h) = (640.0, 160.0);
    let max = points.iter().map(|p| p.1).fold(1.0_f64, f64::max);
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (a.0, b.0),
        _ => (0, 1),
    };
    let xy: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = (t - t0) as f64 / (t1 - t0) as f64 * w;
            let y = h - v / max * (h - 10.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        figure {
            svg width="640" height="180" viewBox="0 -10 640 190" role="img" aria-label=(format!("{title}: {} samples, at most {max:.0} per minute", points.len())) {
                line x1="0" y1="160" x2="640" y2="160" stroke="#767676" {}
                polyline fill="none" stroke=(colour) stroke-width="2" points=(xy.join(" ")) {}
                text x="4" y="4" font-size="12" fill="#1b1b1b" { (format!("{max:.0}/min")) }
            }
            figcaption { (title) }
        }
    }
}

async fn metrics(ctx: &Ctx<'_>) -> Result<Markup, ArmFailure> {
    let text = ctx
        .api()
        .get(&ctx.caller(), link_model::METRICS_PATH, v::RESOURCES)
        .await?;
    let text = text.as_str().unwrap_or("");
    let (requests, denials, by_path) = totals(text);
    let now = chrono::Utc::now().timestamp();
    let samples = ctx.console.sample(now, requests, denials);
    let rate = |pick: fn(&(i64, f64, f64)) -> f64| -> Vec<(i64, f64)> {
        samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].0 - w[0].0).max(1) as f64;
                (w[1].0, ((pick(&w[1]) - pick(&w[0])).max(0.0)) * 60.0 / dt)
            })
            .collect()
    };
    Ok(layout(
        ctx,
        "Metrics",
        &[],
        html! {
            p { "Requests answered by both planes since the server started: " strong #requests { (requests) } "; refused (401 or 403): " strong #denials { (denials) } "." }
            div data-refresh="10" {}
            (chart("Requests per minute", &rate(|s| s.1), "#0f5cad"))
            (chart("Denials per minute", &rate(|s| s.2), "#a4262c"))
            table #by-path {
                caption { "Requests by network path" }
                thead { tr { th scope="col" { "Network path" } th scope="col" { "Requests" } } }
                tbody { @for (p, n) in &by_path { tr { td { (p) } td { (n) } } } }
            }
            p.note { "Rates are taken between the samples this console made when the page was shown (every ten seconds while it is open)." }
        },
    ))
}

async fn audit(ctx: &Ctx<'_>, filters: &[(String, String)]) -> Result<Markup, ArmFailure> {
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in filters.iter().filter(|(_, v)| !v.is_empty()) {
            q.append_pair(k, v);
        }
        q.append_pair("top", "200");
        q.finish()
    };
    let answer = ctx
        .api()
        .get(
            &ctx.caller(),
            &format!("/fhirlink/audit?{query}"),
            v::RESOURCES,
        )
        .await;
    let shown = FormState {
        form: "audit".into(),
        values: filters.iter().cloned().collect(),
        error: answer.as_ref().err().map(|e| {
            let field = if e.message.contains("'since'") {
                "since"
            } else if e.message.contains("'until'") {
                "until"
            } else {
                ""
            };
            (field.to_owned(), e.clone())
        }),
    };
    let form = form(Some(&shown), "audit");
    let records = answer.as_ref().map(|a| arr(a, "/value")).unwrap_or(&[]);
    let cell = |r: &Value, k: &str| match r.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    Ok(layout(
        ctx,
        "Audit log",
        &[],
        html! {
            form.filters method="get" action="/console/audit" {
                @for (k, label) in AUDIT_FILTERS { (form.text(k, label, "", "")) }
                (form.error())
                button type="submit" { "Filter" }
            }
            table #audit {
                caption { "The newest " (records.len()) " records" }
                thead { tr {
                    @for h in ["Time", "Principal", "Network path", "Source", "Method", "Path", "Action", "Status", "Verdict"] { th scope="col" { (h) } }
                } }
                tbody {
                    @for r in records {
                        tr {
                            td { (cell(r, "time")) }
                            td { (cell(r, "principal")) }
                            td { (cell(r, "networkPath")) }
                            td { (cell(r, "sourceAddress")) }
                            td { (cell(r, "method")) }
                            td.path { (cell(r, "path")) }
                            td { (cell(r, "action")) }
                            td { (cell(r, "status")) }
                            td { (cell(r, "verdict")) }
                        }
                    }
                }
            }
        },
    ))
}

/// A form's value.
fn val<'a>(form: &'a HashMap<String, String>, key: &str) -> &'a str {
    form.get(key).map(|s| s.trim()).unwrap_or("")
}

/// A field left empty: refused before any call, beside its field.
fn required(
    form: &HashMap<String, String>,
    key: &str,
    label: &str,
) -> Result<(), (String, ArmFailure)> {
    if val(form, key).is_empty() {
        return Err((
            key.to_owned(),
            ArmFailure {
                status: 400,
                code: "MissingRequiredField".into(),
                message: format!("{label} is required."),
                target: None,
            },
        ));
    }
    Ok(())
}

/// An ARM id a form names must be one: no query, no traversal.
fn an_id(form: &HashMap<String, String>, key: &str) -> Result<String, (String, ArmFailure)> {
    let id = val(form, key);
    if !id.starts_with('/') || id.contains('?') || id.contains("//") || id.contains("..") {
        return Err((
            key.to_owned(),
            ArmFailure {
                status: 400,
                code: "InvalidResourceId".into(),
                message: format!("'{id}' is not a resource id."),
                target: None,
            },
        ));
    }
    Ok(id.to_owned())
}

/// One change: Ok(where to go next, or back) or Err(the field the failure concerns, ARM's
/// error).
pub(crate) async fn act(
    ctx: &Ctx<'_>,
    action: &str,
    form: &HashMap<String, String>,
) -> Result<Option<String>, (String, ArmFailure)> {
    let api = ctx.api();
    let who = ctx.caller();
    let put = |id: String,
               version: &'static str,
               body: Value,
               fields: &'static [(&'static str, &'static [&'static str])],
               default: &'static str| {
        let who = who.clone();
        async move {
            api.call(&who, Method::PUT, &id, version, Some(&body))
                .await
                .map_err(|e| (field_for(&e, fields, default), e))
        }
    };
    let name_fields: &'static [(&'static str, &'static [&'static str])] =
        &[("location", &["location", "region"]), ("name", &["name"])];
    match action {
        "group-create" => {
            required(form, "name", "Resource group name")?;
            let id = format!(
                "{}/resourcegroups/{}",
                ctx.subscription(),
                val(form, "name")
            );
            let r = put(
                id,
                v::RESOURCES,
                json!({"location": val(form, "location")}),
                name_fields,
                "name",
            )
            .await?;
            Ok(Some(blade_url(s(&r, "/id"))))
        }
        "service-create" => {
            required(form, "name", "Service name")?;
            let group = an_id(form, "group")?;
            let id = format!("{group}/providers/{SERVICES}/{}", val(form, "name"));
            let body = json!({"location": val(form, "location"), "kind": "fhir-R4", "properties": {"accessPolicies": []}});
            let r = put(id, v::HEALTHCARE, body, name_fields, "name").await?;
            Ok(Some(blade_url(s(&r, "/id"))))
        }
        "vnet-create" => {
            required(form, "name", "Name")?;
            required(form, "prefix", "Address space")?;
            let group = an_id(form, "group")?;
            let id = format!(
                "{group}/providers/Microsoft.Network/virtualNetworks/{}",
                val(form, "name")
            );
            let mut properties =
                json!({"addressSpace": {"addressPrefixes": [val(form, "prefix")]}});
            if !val(form, "subnet").is_empty() {
                properties["subnets"] = json!([{"name": val(form, "subnet"), "properties": {"addressPrefix": val(form, "subnetPrefix")}}]);
            }
            let fields: &'static [(&'static str, &'static [&'static str])] = &[
                ("subnetPrefix", &["subnet"]),
                ("prefix", &["address", "prefix", "cidr"]),
                ("location", &["location", "region"]),
            ];
            let r = put(
                id,
                v::NETWORK,
                json!({"location": val(form, "location"), "properties": properties}),
                fields,
                "name",
            )
            .await?;
            Ok(Some(blade_url(s(&r, "/id"))))
        }
        "subnet-create" => {
            required(form, "name", "Subnet name")?;
            let vnet = an_id(form, "vnet")?;
            let mut properties = json!({"addressPrefix": val(form, "prefix")});
            if !val(form, "nsg").is_empty() {
                properties["networkSecurityGroup"] = json!({"id": an_id(form, "nsg")?});
            }
            let fields: &'static [(&'static str, &'static [&'static str])] = &[
                ("nsg", &["security group"]),
                ("prefix", &["address", "prefix", "overlap", "cidr"]),
            ];
            put(
                format!("{vnet}/subnets/{}", val(form, "name")),
                v::NETWORK,
                json!({"properties": properties}),
                fields,
                "name",
            )
            .await?;
            Ok(None)
        }
        "peering-create" => {
            required(form, "name", "Peering link name")?;
            let vnet = an_id(form, "vnet")?;
            let remote = an_id(form, "remote")?;
            let body = json!({"properties": {
                "remoteVirtualNetwork": {"id": remote},
                "allowVirtualNetworkAccess": true,
                "allowForwardedTraffic": false,
                "allowGatewayTransit": false,
                "useRemoteGateways": false
            }});
            let fields: &'static [(&'static str, &'static [&'static str])] =
                &[("remote", &["remote", "overlap", "address"])];
            put(
                format!("{vnet}/virtualNetworkPeerings/{}", val(form, "name")),
                v::NETWORK,
                body,
                fields,
                "name",
            )
            .await?;
            Ok(None)
        }
        "nsg-create" => {
            required(form, "name", "Name")?;
            let group = an_id(form, "group")?;
            let id = format!(
                "{group}/providers/Microsoft.Network/networkSecurityGroups/{}",
                val(form, "name")
            );
            let r = put(
                id,
                v::NETWORK,
                json!({"location": val(form, "location"), "properties": {"securityRules": []}}),
                name_fields,
                "name",
            )
            .await?;
            Ok(Some(blade_url(s(&r, "/id"))))
        }
        "rule-create" => {
            required(form, "name", "Name")?;
            let nsg = an_id(form, "nsg")?;
            let priority: i64 = val(form, "priority").parse().map_err(|_| {
                (
                    "priority".to_owned(),
                    ArmFailure {
                        status: 400,
                        code: "InvalidRequestFormat".into(),
                        message: "Priority must be a whole number from 100 to 4096.".into(),
                        target: None,
                    },
                )
            })?;
            let body = json!({"properties": {
                "priority": priority,
                "direction": val(form, "direction"),
                "access": val(form, "access"),
                "protocol": val(form, "protocol"),
                "sourceAddressPrefix": val(form, "source"),
                "sourcePortRange": "*",
                "destinationAddressPrefix": val(form, "destination"),
                "destinationPortRange": val(form, "port"),
            }});
            let fields: &'static [(&'static str, &'static [&'static str])] = &[
                ("priority", &["priority"]),
                ("port", &["port"]),
                ("source", &["source"]),
                ("destination", &["destination"]),
                ("protocol", &["protocol"]),
            ];
            put(
                format!("{nsg}/securityRules/{}", val(form, "name")),
                v::NETWORK,
                body,
                fields,
                "name",
            )
            .await?;
            Ok(None)
        }
        "zone-create" => {
            required(form, "name", "Zone name")?;
            let group = an_id(form, "group")?;
            let id = format!(
                "{group}/providers/Microsoft.Network/privateDnsZones/{}",
                val(form, "name")
            );
            let r = put(
                id,
                v::PRIVATE_DNS,
                json!({"location": "global"}),
                name_fields,
                "name",
            )
            .await?;
            Ok(Some(blade_url(s(&r, "/id"))))
        }
        "link-create" => {
            required(form, "name", "Link name")?;
            let zone = an_id(form, "zone")?;
            let vnet = an_id(form, "vnet")?;
            let body = json!({"location": "global", "properties": {
                "virtualNetwork": {"id": vnet},
                "registrationEnabled": val(form, "registration") == "true",
            }});
            let fields: &'static [(&'static str, &'static [&'static str])] = &[
                ("registration", &["registration"]),
                ("vnet", &["virtual network", "virtualnetwork"]),
            ];
            put(
                format!("{zone}/virtualNetworkLinks/{}", val(form, "name")),
                v::PRIVATE_DNS,
                body,
                fields,
                "name",
            )
            .await?;
            Ok(None)
        }
        "public-access" => {
            let id = an_id(form, "id")?;
            let value = val(form, "value");
            if value != "Enabled" && value != "Disabled" {
                return Err((
                    String::new(),
                    ArmFailure {
                        status: 400,
                        code: "InvalidRequestFormat".into(),
                        message: "Public network access is Enabled or Disabled.".into(),
                        target: None,
                    },
                ));
            }
            api.call(
                &who,
                Method::PATCH,
                &id,
                v::HEALTHCARE,
                Some(&json!({"properties": {"publicNetworkAccess": value}})),
            )
            .await
            .map_err(|e| (String::new(), e))?;
            Ok(None)
        }
        "connection" => {
            let id = an_id(form, "id")?;
            let description = val(form, "description");
            match val(form, "decision") {
                "Remove" => {
                    api.call(&who, Method::DELETE, &id, v::HEALTHCARE, None)
                        .await
                        .map_err(|e| ("description".to_owned(), e))?;
                }
                status @ ("Approved" | "Rejected") => {
                    let body = json!({"properties": {"privateLinkServiceConnectionState": {
                        "status": status, "description": description, "actionsRequired": "None"
                    }}});
                    api.call(&who, Method::PUT, &id, v::HEALTHCARE, Some(&body))
                        .await
                        .map_err(|e| ("description".to_owned(), e))?;
                }
                other => {
                    return Err((
                        String::new(),
                        ArmFailure {
                            status: 400,
                            code: "InvalidRequestFormat".into(),
                            message: format!("'{other}' is not Approve, Reject or Remove."),
                            target: None,
                        },
                    ))
                }
            }
            Ok(None)
        }
        "role-create" => {
            required(form, "principal", "Principal")?;
            let scope = an_id(form, "scope")?;
            let definition = format!(
                "{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                ctx.subscription(),
                val(form, "role")
            );
            let id = format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                new_guid()
            );
            let body = json!({"properties": {"roleDefinitionId": definition, "principalId": val(form, "principal")}});
            let fields: &'static [(&'static str, &'static [&'static str])] =
                &[("role", &["role definition"])];
            put(id, v::AUTHORIZATION, body, fields, "principal").await?;
            Ok(None)
        }
        "delete" => {
            let id = an_id(form, "id")?;
            api.call(&who, Method::DELETE, &id, version_for(&id), None)
                .await
                .map_err(|e| (String::new(), e))?;
            Ok(None)
        }
        "endpoint-create" => create_endpoint_action(ctx, form).await.map(Some),
        other => Err((
            String::new(),
            ArmFailure {
                status: 404,
                code: "NotFound".into(),
                message: format!("The console has no action '{other}'."),
                target: None,
            },
        )),
    }
}

/// A random version-4 GUID for a new role assignment's name.
fn new_guid() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The seed's private endpoint: the endpoint (automatic approval when connecting to a
/// resource in the directory, a manual request by resource ID or alias), then with DNS
/// integration the zone (new or existing), its link to the endpoint's virtual network when
/// there is none, and the endpoint's zone group.
async fn create_endpoint_action(
    ctx: &Ctx<'_>,
    form: &HashMap<String, String>,
) -> Result<String, (String, ArmFailure)> {
    let api = ctx.api();
    let who = ctx.caller();
    required(form, "name", "Name")?;
    let group = an_id(form, "group")?;
    let subnet = an_id(form, "subnet")?;
    let manual = val(form, "method") == "id";
    let target = if manual {
        required(form, "resourceId", "Resource ID or alias")?;
        val(form, "resourceId").to_owned()
    } else {
        an_id(form, "resource")?
    };
    let name = val(form, "name");
    let mut link = json!({
        "name": format!("{name}-connection"),
        "properties": {"privateLinkServiceId": target, "groupIds": ["fhir"]}
    });
    if manual {
        link["properties"]["requestMessage"] = json!(val(form, "requestMessage"));
    }
    let key = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    let pe_id = format!("{group}/providers/Microsoft.Network/privateEndpoints/{name}");
    let body = json!({"location": val(form, "location"), "properties": {"subnet": {"id": subnet}, key: [link]}});
    let resource_field = if manual { "resourceId" } else { "resource" };
    let fields: &[(&str, &[&str])] = &[
        ("location", &["location", "region"]),
        ("subnet", &["subnet", "address"]),
        (
            resource_field,
            &["privatelinkserviceid", "resource", "alias", "service"],
        ),
    ];
    let pe = api
        .call(&who, Method::PUT, &pe_id, v::NETWORK, Some(&body))
        .await
        .map_err(|e| (field_for(&e, fields, "name"), e))?;
    let pe_url = blade_url(s(&pe, "/id"));
    if val(form, "dns") != "yes" {
        return Ok(pe_url);
    }
    let zone_err = |e: ArmFailure| ("zone".to_owned(), e);
    let zone = match val(form, "zone") {
        "new" | "" => {
            let id =
                format!("{group}/providers/Microsoft.Network/privateDnsZones/{PRIVATE_LINK_ZONE}");
            if api.get(&who, &id, v::PRIVATE_DNS).await.is_err() {
                api.call(
                    &who,
                    Method::PUT,
                    &id,
                    v::PRIVATE_DNS,
                    Some(&json!({"location": "global"})),
                )
                .await
                .map_err(zone_err)?;
            }
            id
        }
        _ => an_id(form, "zone")?,
    };
    let vnet = group_vnet(&subnet);
    let links = api
        .list(&who, &format!("{zone}/virtualNetworkLinks"), v::PRIVATE_DNS)
        .await
        .map_err(zone_err)?;
    if !links
        .iter()
        .any(|l| s(l, "/properties/virtualNetwork/id").eq_ignore_ascii_case(&vnet))
    {
        let link_id = format!("{zone}/virtualNetworkLinks/{}-link", name_of(&vnet));
        let body = json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet}, "registrationEnabled": false}});
        api.call(&who, Method::PUT, &link_id, v::PRIVATE_DNS, Some(&body))
            .await
            .map_err(zone_err)?;
    }
    let zg = json!({"properties": {"privateDnsZoneConfigs": [
        {"name": name_of(&zone).replace('.', "-"), "properties": {"privateDnsZoneId": zone}}
    ]}});
    api.call(
        &who,
        Method::PUT,
        &format!("{pe_id}/privateDnsZoneGroups/default"),
        v::NETWORK,
        Some(&zg),
    )
    .await
    .map_err(zone_err)?;
    Ok(pe_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_stay_on_the_console() {
        assert_eq!(Page::parse("/"), Some(Page::Home));
        assert_eq!(
            Page::parse("/console/r/subscriptions/s/resourceGroups/rg1?tab=x"),
            Some(Page::Resource {
                id: "/subscriptions/s/resourceGroups/rg1".into(),
                tab: "x".into()
            })
        );
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/console/r/etc/passwd",
            "/console/r/subscriptions//x",
            "/elsewhere",
        ] {
            assert_eq!(Page::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn metric_totals_count_requests_and_refusals() {
        let text = "# HELP x\n\
            fhirlink_http_requests_total{service=\"\",interaction=\"a\",status=\"200\",path=\"management\"} 14\n\
            fhirlink_http_requests_total{service=\"s\",interaction=\"read\",status=\"403\",path=\"public\"} 3\n\
            fhirlink_http_requests_total{service=\"s\",interaction=\"read\",status=\"401\",path=\"endpoint\"} 2\n\
            fhirlink_http_request_duration_seconds_count{service=\"s\"} 99\n\
            garbage line\n";
        let (requests, denials, by_path) = totals(text);
        assert_eq!((requests, denials), (19.0, 5.0));
        assert_eq!(
            by_path,
            vec![
                ("endpoint".to_owned(), 2.0),
                ("management".to_owned(), 14.0),
                ("public".to_owned(), 3.0)
            ]
        );
        assert_eq!(Page::parse("/console/metrics"), Some(Page::Metrics));
    }

    #[test]
    fn ids_and_versions() {
        let pe =
            "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Network/privateEndpoints/pe1";
        assert_eq!(group_of(pe), "/subscriptions/s/resourceGroups/rg1");
        assert_eq!(version_for(pe), v::NETWORK);
        assert_eq!(
            version_for(
                "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Network/privateDnsZones/z"
            ),
            v::PRIVATE_DNS
        );
        assert_eq!(
            group_vnet("/x/virtualNetworks/hub/subnets/endpoints"),
            "/x/virtualNetworks/hub"
        );
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
    }
}
