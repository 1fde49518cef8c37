//! `fhirlink console`: a one-time sign-in URL for the web console, as Jupyter prints one.
//! The code is made by the server for the principal of the CLI's token (so it signs in as
//! that principal and no other), lives two minutes and works once.

use std::io::Write as _;

use anyhow::{bail, Context};
use clap::Args;
use reqwest::Method;

use super::client::{ArmClient, Connection};

#[derive(Args)]
pub(crate) struct ConsoleArgs {
    #[command(flatten)]
    conn: Connection,
}

/// Prints the sign-in URL alone on stdout (so that `$(fhirlink console)` works), the
/// explanation on stderr.
pub(crate) async fn console(args: ConsoleArgs) -> anyhow::Result<()> {
    let client = ArmClient::new(&args.conn)?;
    let resp = client
        .request(Method::POST, link_console::CODE_PATH)
        .send()
        .await
        .context("asking the server for a sign-in code")?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{} {}: {}",
            status.as_u16(),
            body.pointer("/error/code")
                .and_then(|v| v.as_str())
                .unwrap_or("Error"),
            body.pointer("/error/message")
                .and_then(|v| v.as_str())
                .unwrap_or("")
        );
    }
    let Some(path) = body.get("path").and_then(|p| p.as_str()) else {
        bail!("the server's answer has no sign-in path: {body}");
    };
    let url = format!("{}{path}", args.conn.admin_url.trim_end_matches('/'));
    eprintln!(
        "Open this URL in a browser to sign in to the console as '{}' (valid for {} seconds, once):",
        args.conn.principal,
        body.get("expiresInSeconds")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{url}").context("writing the URL")?;
    Ok(())
}
