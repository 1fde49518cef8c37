//! Virtual machines (`Microsoft.Compute/virtualMachines`): only their network profile, the
//! interfaces that place them in a network.

use serde_json::{json, Value};

use super::{normalize_location, props_of, store};
use crate::error::{bad_request, invalid_reference, ArmError};
use crate::kind::Kind;
use crate::path::{key_of, Addr};
use crate::state::{s, Resource};
use crate::txn::{guid_from, Txn};

pub(super) fn put_vm(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let location = normalize_location(s(input, "location"));
    let mut props = props_of(input);
    let nics: Vec<Value> = props
        .get("networkProfile")
        .and_then(|n| n.get("networkInterfaces"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if nics.is_empty() {
        return Err(bad_request(
            "InvalidParameter",
            "properties.networkProfile.networkInterfaces must name at least one network interface.",
        ));
    }
    let mut out = Vec::new();
    for (i, n) in nics.iter().enumerate() {
        let id = s(n, "id");
        let Some(nic) = tx
            .get(&key_of(id))
            .filter(|r| r.kind == Kind::NetworkInterface)
            .cloned()
        else {
            return Err(invalid_reference(id, &addr.path));
        };
        if normalize_location(nic.location()) != location {
            return Err(invalid_reference(&nic.id, &addr.path));
        }
        if let Some(owner) = &nic.owner {
            return Err(bad_request(
                "NicInUse",
                format!(
                    "Network interface {} is used by private endpoint {owner}.",
                    nic.id
                ),
            ));
        }
        if let Some(vm) = tx
            .st
            .of_kind(Kind::VirtualMachine)
            .find(|vm| vm.key() != addr.key && vm_nics(vm).contains(&nic.key()))
        {
            return Err(bad_request(
                "NicInUse",
                format!("Network interface {} is used by existing resource {}. In order to use it, it must be dissociated from that resource.", nic.id, vm.id),
            ));
        }
        let primary = n
            .get("properties")
            .and_then(|p| p.get("primary"))
            .and_then(Value::as_bool)
            .unwrap_or(i == 0);
        out.push(json!({"id": nic.id, "properties": {"primary": primary}}));
    }
    let mut np = props
        .get("networkProfile")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    np.insert("networkInterfaces".into(), Value::Array(out));
    props.insert("networkProfile".into(), Value::Object(np));
    props
        .entry("vmId")
        .or_insert_with(|| json!(guid_from(&addr.key)));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

pub(crate) fn vm_nics(vm: &Resource) -> Vec<String> {
    vm.prop("networkProfile")
        .and_then(|n| n.get("networkInterfaces"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|n| key_of(s(n, "id"))).collect())
        .unwrap_or_default()
}
