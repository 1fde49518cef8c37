//! ARM requests: the input is `METHOD PATH?api-version=...` on its first line and the JSON
//! body after it, classified by `link_model::classify` and handled by `link_model::handle`
//! on a state with an owner and one resource group, as the admin.
#![no_main]
use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use link_model::{classify, ensure_owner, handle, Method, Principal, Request, State};

fn admin() -> Principal {
    Principal { id: "admin".into(), issuer: "test".into() }
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (state, _) = ensure_owner(&State::default(), "admin", &admin(), now).expect("owner");
        let taken = BTreeSet::new();
        let req = Request {
            method: Method::Put,
            path: "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourcegroups/rg1",
            api_version: Some("2025-04-01"),
            filter: None,
            top: None,
            skip_token: None,
            if_match: None,
            if_none_match: None,
            body: br#"{"location":"eastus"}"#,
            taken_service_names: &taken,
        };
        let out = handle(&state, &req, &admin(), now).expect("resource group");
        out.state.unwrap_or(state)
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let Ok(head) = std::str::from_utf8(head) else { return };
    let (method, target) = head.split_once(' ').unwrap_or(("GET", head));
    let method = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut api_version = None;
    let (mut filter, mut top, mut skip) = (None, None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("api-version", v)) => api_version = Some(v),
            Some(("$filter", v)) => filter = Some(v),
            Some(("$top", v)) => top = Some(v),
            Some(("$skiptoken", v)) => skip = Some(v),
            _ => {}
        }
    }
    let _ = classify(method, path);
    let taken = BTreeSet::from(["taken".to_string()]);
    let req = Request {
        method,
        path,
        api_version,
        filter,
        top,
        skip_token: skip,
        if_match: None,
        if_none_match: None,
        body,
        taken_service_names: &taken,
    };
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let _ = handle(state(), &req, &admin(), now);
});
