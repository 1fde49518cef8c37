"""The seed's Private Link flows, driven through the official Azure management SDKs for
Python (PyPI) against a running fhirlink, asserting what ARM would answer.

Run by crates/fhirlink/tests/sdk_python.rs (which starts fhirlink and mints the tokens) with
the interpreter of the venv scripts/test makes from sdk-tests/requirements.txt. Inputs come
from the environment:

  FHIRLINK_ADMIN_URL    base URL of the management API, e.g. https://127.0.0.1:PORT
  FHIRLINK_CA           the CA certificate to verify it with (<data>/tls/ca.pem)
  FHIRLINK_TOKEN        a token of the root Owner (`fhirlink token --principal admin`)
  FHIRLINK_USER_TOKEN   a token of another principal, "bob", made Network Contributor of the
                        resource group here: he may create endpoints but not approve them
  FHIRLINK_SUBSCRIPTION a subscription id

The SDKs are used as an Azure user would use them: a credential object, base_url and
connection_verify; nothing is patched. Every long-running operation must be finished on the
first answer (fhirlink applies changes before it responds).
"""

import os
import sys
import time
import traceback

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.healthcareapis import HealthcareApisManagementClient
from azure.mgmt.healthcareapis.models import (
    PrivateEndpointConnection,
    PrivateLinkServiceConnectionState,
    ServicesDescription,
    ServicesPatchDescription,
    ServicesProperties,
)
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.privatedns import PrivateDnsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

ZONE = "privatelink.azurehealthcareapis.com"
LOCATION = "westus2"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"


class FhirlinkCredential:
    """A TokenCredential that hands out a fhirlink token for any scope (the SDKs ask for
    https://management.azure.com/.default)."""

    def __init__(self, token):
        self._token = token
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return AccessToken(self._token, int(time.time()) + 600)


def wire(obj):
    """A response model as its JSON wire form (camelCase keys), whichever generator made it."""
    if obj is None:
        return None
    if hasattr(obj, "serialize"):  # msrest models (healthcareapis)
        return obj.serialize(keep_readonly=True)
    if hasattr(obj, "as_dict"):  # TypeSpec models (network, privatedns, resource)
        return obj.as_dict()
    return dict(obj)


def check(cond, what, got=None):
    if not cond:
        raise AssertionError(f"{what}; got: {got!r}")


def done(poller):
    """The result of a long-running operation that must already be finished."""
    check(poller.done(), "a long-running operation finished on the first response", poller.status())
    return poller.result()


class Flows:
    def __init__(self):
        url = os.environ["FHIRLINK_ADMIN_URL"]
        ca = os.environ["FHIRLINK_CA"]
        self.sub = os.environ.get("FHIRLINK_SUBSCRIPTION", "00000000-0000-0000-0000-0000000000aa")
        self.cred = FhirlinkCredential(os.environ["FHIRLINK_TOKEN"])
        kw = dict(base_url=url, connection_verify=ca)
        self.resources = ResourceManagementClient(self.cred, self.sub, **kw)
        self.health = HealthcareApisManagementClient(self.cred, self.sub, **kw)
        self.net = NetworkManagementClient(self.cred, self.sub, **kw)
        self.dns = PrivateDnsManagementClient(self.cred, self.sub, **kw)
        self.authz = AuthorizationManagementClient(self.cred, self.sub, **kw)
        self.user_cred = FhirlinkCredential(os.environ["FHIRLINK_USER_TOKEN"])
        self.user_net = NetworkManagementClient(self.user_cred, self.sub, **kw)
        self.rg = "sdk-rg"
        self.svc = "sdkfhir"

    def sid(self, provider_type, name):
        return (
            f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/{provider_type}/{name}"
        )

    # -- the flows, in the seed's order ---------------------------------------------------

    def resource_group(self):
        rg = self.resources.resource_groups.create_or_update(self.rg, {"location": LOCATION})
        check(rg.name == self.rg, "resource group name", rg.name)
        check(
            rg.properties.provisioning_state == "Succeeded",
            "resource group Succeeded",
            wire(rg),
        )

    def service(self):
        body = ServicesDescription(
            location=LOCATION,
            kind="fhir-R4",
            properties=ServicesProperties(access_policies=[], public_network_access="Enabled"),
        )
        svc = done(self.health.services.begin_create_or_update(self.rg, self.svc, body))
        check(svc.kind == "fhir-R4", "service kind", svc.kind)
        check(svc.properties.provisioning_state == "Succeeded", "service Succeeded", wire(svc))
        check(
            svc.properties.public_network_access == "Enabled",
            "public network access Enabled",
            wire(svc),
        )
        got = self.health.services.get(self.rg, self.svc)
        check(got.id.lower() == self.sid("Microsoft.HealthcareApis/services", self.svc).lower(),
              "service id", got.id)
        names = [s.name for s in self.health.services.list_by_resource_group(self.rg)]
        check(self.svc in names, "service listed in its resource group", names)
        links = list(self.health.private_link_resources.list_by_service(self.rg, self.svc).value)
        check(len(links) == 1 and links[0].group_id == "fhir", "one private link group 'fhir'",
              [wire(l) for l in links])
        check(ZONE in (links[0].required_zone_names or []), "required zone name",
              wire(links[0]))
        self.service_id = svc.id

    def vnets(self):
        self.vnet = done(self.net.virtual_networks.begin_create_or_update(
            self.rg, "sdk-vnet",
            {"location": LOCATION, "properties": {"addressSpace": {"addressPrefixes": ["127.30.0.0/16"]}}},
        ))
        check(wire(self.vnet)["properties"]["provisioningState"] == "Succeeded", "vnet Succeeded",
              wire(self.vnet))
        subnet = done(self.net.subnets.begin_create_or_update(
            self.rg, "sdk-vnet", "pe-subnet", {"properties": {"addressPrefix": "127.30.1.0/24"}},
        ))
        self.subnet_id = subnet.id
        check(wire(subnet)["properties"]["addressPrefix"] == "127.30.1.0/24", "subnet prefix",
              wire(subnet))
        self.vnet2 = done(self.net.virtual_networks.begin_create_or_update(
            self.rg, "sdk-vnet2",
            {"location": LOCATION, "properties": {
                "addressSpace": {"addressPrefixes": ["127.31.0.0/16"]},
                "subnets": [{"name": "vm-subnet", "properties": {"addressPrefix": "127.31.1.0/24"}}],
            }},
        ))
        got = wire(self.net.virtual_networks.get(self.rg, "sdk-vnet2"))
        check([s["name"] for s in got["properties"]["subnets"]] == ["vm-subnet"],
              "subnet created with its network", got)

    def generic_endpoints(self):
        """ARM's generic endpoints, as `az provider show` and `az resource list` call them."""
        provider = self.resources.providers.get("Microsoft.HealthcareApis")
        check(provider.namespace == "Microsoft.HealthcareApis", "provider namespace", wire(provider))
        check(provider.registration_state == "Registered", "provider registered", wire(provider))
        services = [t for t in provider.resource_types if t.resource_type == "services"]
        check(services and "2024-03-31" in services[0].api_versions,
              "services served at the SDK's api-version", wire(provider))
        registered = self.resources.providers.register("Microsoft.Network")
        check(registered.registration_state == "Registered", "register answers the provider",
              wire(registered))
        mine = list(self.resources.resources.list_by_resource_group(self.rg))
        kinds = {(r.type, r.name) for r in mine}
        check(("Microsoft.HealthcareApis/services", self.svc) in kinds, "service listed", kinds)
        check(("Microsoft.Network/virtualNetworks", "sdk-vnet") in kinds, "network listed", kinds)
        check(all(r.location == LOCATION for r in mine), "locations", [wire(r) for r in mine])
        only = "resourceType eq 'Microsoft.Network/virtualNetworks'"
        nets = [r.name for r in self.resources.resources.list_by_resource_group(self.rg, filter=only)]
        check(sorted(nets) == ["sdk-vnet", "sdk-vnet2"], "networks by type", nets)
        # One per page: the SDK follows nextLink through every page.
        paged = [r.id for r in self.resources.resources.list(filter=only, top=1)]
        check(sorted(r.lower() for r in paged) == sorted([self.vnet.id.lower(), self.vnet2.id.lower()]),
              "every network across pages", paged)

    def peering(self):
        def peer(local, name, remote):
            return done(self.net.virtual_network_peerings.begin_create_or_update(
                self.rg, local, name,
                {"properties": {"remoteVirtualNetwork": {"id": remote.id},
                                "allowVirtualNetworkAccess": True}},
            ))

        first = wire(peer("sdk-vnet", "to-vnet2", self.vnet2))
        check(first["properties"]["peeringState"] == "Initiated", "one side: Initiated", first)
        second = wire(peer("sdk-vnet2", "to-vnet", self.vnet))
        check(second["properties"]["peeringState"] == "Connected", "both sides: Connected", second)
        again = wire(self.net.virtual_network_peerings.get(self.rg, "sdk-vnet", "to-vnet2"))
        check(again["properties"]["peeringState"] == "Connected", "first side now Connected", again)
        # Overlapping address spaces may not be peered.
        done(self.net.virtual_networks.begin_create_or_update(
            self.rg, "sdk-overlap",
            {"location": LOCATION, "properties": {"addressSpace": {"addressPrefixes": ["127.32.0.0/16"]}}},
        ))
        try:
            done(self.net.virtual_networks.begin_create_or_update(
                self.rg, "sdk-overlap2",
                {"location": LOCATION, "properties": {"addressSpace": {"addressPrefixes": ["127.32.5.0/24"]}}},
            ))
            raise AssertionError("an overlapping address space was accepted")
        except HttpResponseError as e:
            check(e.status_code == 400, "overlap refused with 400", e.status_code)

    def dns_zone(self):
        zone = done(self.dns.private_zones.begin_create_or_update(self.rg, ZONE, {"location": "global"}))
        self.zone_id = zone.id
        check(zone.name == ZONE, "zone name", zone.name)
        link = done(self.dns.virtual_network_links.begin_create_or_update(
            self.rg, ZONE, "sdk-vnet-link",
            {"location": "global", "properties": {
                "virtualNetwork": {"id": self.vnet.id}, "registrationEnabled": False}},
        ))
        lw = wire(link)
        check(lw["properties"]["registrationEnabled"] is False, "link without registration", lw)
        check(lw["properties"].get("provisioningState") == "Succeeded", "link Succeeded", lw)

    def endpoint_auto(self):
        pe = done(self.net.private_endpoints.begin_create_or_update(
            self.rg, "pe-auto",
            {"location": LOCATION, "properties": {
                "subnet": {"id": self.subnet_id},
                "privateLinkServiceConnections": [{
                    "name": "conn-auto",
                    "properties": {"privateLinkServiceId": self.service_id, "groupIds": ["fhir"]},
                }],
            }},
        ))
        pw = wire(pe)
        conn = pw["properties"]["privateLinkServiceConnections"][0]["properties"]
        check(conn["privateLinkServiceConnectionState"]["status"] == "Approved",
              "auto approval for the Owner", pw)
        nic_id = pw["properties"]["networkInterfaces"][0]["id"]
        nic = wire(self.net.network_interfaces.get(self.rg, nic_id.rstrip("/").split("/")[-1]))
        ip = nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
        check(ip == "127.30.1.4", "first endpoint address is .4", nic)
        self.auto_ip = ip
        svc = self.health.services.get(self.rg, self.svc)
        check(svc.properties.public_network_access == "Disabled",
              "the first approved connection turns public access off", wire(svc))
        conns = self.health.private_endpoint_connections.list_by_service(self.rg, self.svc)
        states = [c.private_link_service_connection_state.status for c in conns]
        check(states == ["Approved"], "the service lists the approved connection", states)

    def zone_group(self):
        group = done(self.net.private_dns_zone_groups.begin_create_or_update(
            self.rg, "pe-auto", "default",
            {"properties": {"privateDnsZoneConfigs": [
                {"name": "privatelink-azurehealthcareapis-com",
                 "properties": {"privateDnsZoneId": self.zone_id}}]}},
        ))
        check(wire(group)["properties"]["provisioningState"] == "Succeeded", "zone group Succeeded",
              wire(group))
        records = [wire(r) for r in self.dns.record_sets.list(self.rg, ZONE)]
        a = [r for r in records if r.get("type", "").lower().endswith("/a") and r["name"] == self.svc]
        check(len(a) == 1, "an A record for the service", records)
        ips = [x["ipv4Address"] for x in a[0]["properties"]["aRecords"]]
        check(ips == [self.auto_ip], "the A record points at the endpoint", a[0])

    def endpoint_manual(self):
        # bob may manage the group's networks, but has no right to approve on the service.
        scope = f"/subscriptions/{self.sub}/resourceGroups/{self.rg}"
        ra = self.authz.role_assignments.create(
            scope, "3f8e5b1a-7c2d-4e6f-9a0b-1c2d3e4f5a6b",
            {"properties": {
                "roleDefinitionId": f"/subscriptions/{self.sub}/providers/Microsoft.Authorization/roleDefinitions/{NETWORK_CONTRIBUTOR}",
                "principalId": "bob"}},
        )
        check(wire(ra)["properties"]["principalId"] == "bob", "role assignment for bob", wire(ra))
        try:
            done(self.user_net.private_endpoints.begin_create_or_update(
                self.rg, "pe-bob-auto",
                {"location": LOCATION, "properties": {
                    "subnet": {"id": self.subnet_id},
                    "privateLinkServiceConnections": [{
                        "name": "conn-bob",
                        "properties": {"privateLinkServiceId": self.service_id, "groupIds": ["fhir"]},
                    }],
                }},
            ))
            raise AssertionError("auto approval by a principal who may not approve was accepted")
        except HttpResponseError as e:
            check(e.status_code == 403, "unauthorised auto approval refused with 403", e.status_code)
        pe = done(self.user_net.private_endpoints.begin_create_or_update(
            self.rg, "pe-manual",
            {"location": LOCATION, "properties": {
                "subnet": {"id": self.subnet_id},
                "manualPrivateLinkServiceConnections": [{
                    "name": "conn-manual",
                    "properties": {"privateLinkServiceId": self.service_id, "groupIds": ["fhir"],
                                   "requestMessage": "Please approve my connection."},
                }],
            }},
        ))
        pw = wire(pe)
        state = pw["properties"]["manualPrivateLinkServiceConnections"][0]["properties"][
            "privateLinkServiceConnectionState"]
        check(state["status"] == "Pending", "a manual request waits for approval", pw)
        pending = self._connection_of(pe.id)
        check(pending.private_link_service_connection_state.status == "Pending",
              "the service sees the pending request", wire(pending))
        approved = done(self.health.private_endpoint_connections.begin_create_or_update(
            self.rg, self.svc, pending.name,
            PrivateEndpointConnection(private_link_service_connection_state=PrivateLinkServiceConnectionState(
                status="Approved", description="Approved by the owner")),
        ))
        check(approved.private_link_service_connection_state.status == "Approved", "approved",
              wire(approved))
        pw = wire(self.net.private_endpoints.get(self.rg, "pe-manual"))
        state = pw["properties"]["manualPrivateLinkServiceConnections"][0]["properties"][
            "privateLinkServiceConnectionState"]
        check(state["status"] == "Approved", "the endpoint sees the approval", pw)
        pw = wire(self.user_net.private_endpoints.get(self.rg, "pe-manual"))
        state = pw["properties"]["manualPrivateLinkServiceConnections"][0]["properties"][
            "privateLinkServiceConnectionState"]
        check(state["status"] == "Approved", "and so does its creator", pw)

        # A second request, rejected; then one removed, which leaves its endpoint Disconnected.
        for name in ("pe-reject", "pe-remove"):
            done(self.user_net.private_endpoints.begin_create_or_update(
                self.rg, name,
                {"location": LOCATION, "properties": {
                    "subnet": {"id": self.subnet_id},
                    "manualPrivateLinkServiceConnections": [{
                        "name": f"conn-{name}",
                        "properties": {"privateLinkServiceId": self.service_id,
                                       "groupIds": ["fhir"], "requestMessage": "please"},
                    }],
                }},
            ))
        rejected_pe = self.net.private_endpoints.get(self.rg, "pe-reject")
        conn = self._connection_of(rejected_pe.id)
        rejected = done(self.health.private_endpoint_connections.begin_create_or_update(
            self.rg, self.svc, conn.name,
            PrivateEndpointConnection(private_link_service_connection_state=PrivateLinkServiceConnectionState(
                status="Rejected", description="Not this one")),
        ))
        check(rejected.private_link_service_connection_state.status == "Rejected", "rejected",
              wire(rejected))
        removed_pe = self.net.private_endpoints.get(self.rg, "pe-remove")
        conn = self._connection_of(removed_pe.id)
        done(self.health.private_endpoint_connections.begin_delete(self.rg, self.svc, conn.name))
        try:
            self.health.private_endpoint_connections.get(self.rg, self.svc, conn.name)
            raise AssertionError("a removed connection is still there")
        except ResourceNotFoundError:
            pass
        pw = wire(self.net.private_endpoints.get(self.rg, "pe-remove"))
        state = pw["properties"]["manualPrivateLinkServiceConnections"][0]["properties"][
            "privateLinkServiceConnectionState"]
        check(state["status"] == "Disconnected", "removing the connection disconnects the endpoint", pw)

    def public_access_off(self):
        done(self.health.services.begin_update(
            self.rg, self.svc, ServicesPatchDescription(public_network_access="Enabled")))
        svc = done(self.health.services.begin_update(
            self.rg, self.svc, ServicesPatchDescription(public_network_access="Disabled")))
        check(svc.properties.public_network_access == "Disabled", "public access off", wire(svc))
        got = self.health.services.get(self.rg, self.svc)
        check(got.properties.public_network_access == "Disabled", "public access stays off",
              wire(got))

    def _connection_of(self, endpoint_id):
        for c in self.health.private_endpoint_connections.list_by_service(self.rg, self.svc):
            if c.private_endpoint and c.private_endpoint.id.lower() == endpoint_id.lower():
                return c
        raise AssertionError(f"no connection of {endpoint_id} on the service")


def main():
    flows = Flows()
    steps = [
        flows.resource_group,
        flows.service,
        flows.vnets,
        flows.generic_endpoints,
        flows.peering,
        flows.dns_zone,
        flows.endpoint_auto,
        flows.zone_group,
        flows.endpoint_manual,
        flows.public_access_off,
    ]
    passed = failed = 0
    for step in steps:
        try:
            step()
            passed += 1
            print(f"ok   {step.__name__}", flush=True)
        except Exception:  # noqa: BLE001 - report every failing step, then fail the run
            failed += 1
            print(f"FAIL {step.__name__}", flush=True)
            traceback.print_exc()
            # Later steps build on earlier ones.
            break
    check_scopes = any("management.azure.com" in s for s in flows.cred.scopes)
    if not check_scopes:
        print(f"FAIL the SDKs asked for the management scope: {flows.cred.scopes}", flush=True)
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed != len(steps) else 0


if __name__ == "__main__":
    sys.exit(main())
