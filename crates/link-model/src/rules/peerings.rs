//! Virtual network peerings (`Microsoft.Network/virtualNetworks/virtualNetworkPeerings`): the
//! remote network, the `peer` permission on it, no overlapping address spaces, one peering
//! per pair. The peering state (Initiated, Connected, Disconnected) is `reconcile`'s.

use serde_json::{json, Value};

use super::vnets::prefixes_of;
use super::{props_of, store};
use crate::action::{action, Verb};
use crate::authz::check_linked;
use crate::error::{bad_request, invalid_content, invalid_reference, not_found, ArmError};
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{ref_key, Resource};
use crate::txn::Txn;

pub(super) fn put_peering(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let Some(remote_key) = ref_key(&Value::Object(props.clone()), "remoteVirtualNetwork") else {
        return Err(invalid_content(
            "properties.remoteVirtualNetwork.id is required",
        ));
    };
    let Some(remote) = tx
        .get(&remote_key)
        .filter(|r| r.kind == Kind::VirtualNetwork)
        .cloned()
    else {
        return Err(invalid_reference(&remote_key, &addr.path));
    };
    let local = tx
        .get(&addr.parent.key)
        .cloned()
        .ok_or_else(|| not_found(Kind::VirtualNetwork.type_name(), "", None))?;
    if remote.key() == local.key() {
        return Err(bad_request(
            "CannotPeerVirtualNetworkToItself",
            format!("Virtual network {} cannot be peered with itself.", local.id),
        ));
    }
    check_linked(
        tx.old,
        tx.who,
        action(Kind::VirtualNetworkPeering, Verb::Write),
        &addr.path,
        "Microsoft.Network/virtualNetworks/peer/action",
        &remote.key(),
        &remote.id,
    )?;
    for a in prefixes_of(&local.body) {
        if let Some(b) = prefixes_of(&remote.body)
            .into_iter()
            .find(|b| a.overlaps(*b))
        {
            return Err(bad_request(
                "VnetAddressSpacesOverlap",
                format!(
                    "Cannot create or update peering {}. Virtual networks {} and {} cannot be peered because their address spaces overlap. Overlapping address prefixes: {a}, {b}",
                    addr.path, local.id, remote.id
                ),
            ));
        }
    }
    if let Some(dup) = tx
        .st
        .children(&local.key(), Kind::VirtualNetworkPeering)
        .find(|p| {
            p.key() != addr.key
                && ref_key(
                    p.body.get("properties").unwrap_or(&Value::Null),
                    "remoteVirtualNetwork",
                )
                .as_deref()
                    == Some(remote.key().as_str())
        })
    {
        return Err(bad_request(
            "VnetPeeringAlreadyExists",
            format!(
                "Peering {} already connects virtual network {} to {}.",
                dup.id, local.id, remote.id
            ),
        ));
    }
    for (k, d) in [
        ("allowVirtualNetworkAccess", true),
        ("allowForwardedTraffic", false),
        ("allowGatewayTransit", false),
        ("useRemoteGateways", false),
    ] {
        props.entry(k).or_insert_with(|| json!(d));
    }
    props.insert("remoteVirtualNetwork".into(), json!({"id": remote.id}));
    let state = existing
        .and_then(|e| e.prop("peeringState"))
        .cloned()
        .unwrap_or_else(|| json!("Initiated"));
    props.insert("peeringState".into(), state);
    props.insert("peeringSyncLevel".into(), json!("FullyInSync"));
    props.remove("remoteAddressSpace");
    props.remove("remoteVirtualNetworkAddressSpace");
    store(tx, addr, input, existing, props, &[], None).map(drop)
}
