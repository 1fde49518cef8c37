"""The seed's flows with Azure's Python management SDKs against link-api's development harness.

Run `cargo run -p link-api --example plain_admin -- DATA_DIR 127.0.0.1:18081`, then
`python sdk_flows.py` in a venv with azure-mgmt-resource, -healthcareapis, -network and
-privatedns. The harness speaks plain HTTP and trusts the bearer token as the principal's name,
so the SDKs get a custom authentication policy; the real check (HTTPS, JWT, generated CA) is
the binary's SDK script. Network and DNS bodies are REST-shaped dicts: the current network and
private DNS SDKs send dicts as they are.
"""
import os
import sys
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.healthcareapis import HealthcareApisManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.privatedns import PrivateDnsManagementClient

BASE = os.environ.get("FHIRLINK_ADMIN", "http://127.0.0.1:18081")
SUB = "6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e"

class As(SansIOHTTPPolicy):
    def __init__(self, who): self.who = who
    def on_request(self, request):
        request.http_request.headers["Authorization"] = "Bearer " + self.who

class Cred:
    def get_token(self, *a, **k): raise RuntimeError("unused")

def clients(who):
    kw = dict(base_url=BASE, authentication_policy=As(who), polling_interval=0)
    return (ResourceManagementClient(Cred(), SUB, **kw), HealthcareApisManagementClient(Cred(), SUB, **kw),
            NetworkManagementClient(Cred(), SUB, **kw), PrivateDnsManagementClient(Cred(), SUB, **kw))

res, hc, net, dns = clients("admin")
res.resource_groups.create_or_update("rg1", {"location": "eastus"})
print("rg exists:", res.resource_groups.check_existence("rg1"))
print("name available:", hc.services.check_name_availability({"type": "Microsoft.HealthcareApis/services", "name": "fhirsdk1"}).name_available)
svc = hc.services.begin_create_or_update("rg1", "fhirsdk1", {"location": "westus2", "kind": "fhir-R4", "properties": {"access_policies": []}}).result()
print("service:", svc.id, svc.properties.provisioning_state, svc.properties.public_network_access)
plr = list(hc.private_link_resources.list_by_service("rg1", "fhirsdk1").value)
print("private link resources:", [(p.group_id, p.required_zone_names) for p in plr])
vnet = net.virtual_networks.begin_create_or_update("rg1", "vnet1", {"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["127.10.0.0/16"]}}}).result()
subnet = net.subnets.begin_create_or_update("rg1", "vnet1", "default", {"properties": {"addressPrefix": "127.10.1.0/24"}}).result()
print("subnet:", subnet["id"])
pe = net.private_endpoints.begin_create_or_update("rg1", "pe-auto", {"location": "eastus", "properties": {"subnet": {"id": subnet["id"]},
    "privateLinkServiceConnections": [{"name": "c", "properties": {"privateLinkServiceId": svc.id, "groupIds": ["fhir"]}}]}}).result()
pp = pe["properties"]
print("pe auto:", pp["privateLinkServiceConnections"][0]["properties"]["privateLinkServiceConnectionState"]["status"], pp["customDnsConfigs"][0]["ipAddresses"])
nic = net.network_interfaces.get("rg1", pp["networkInterfaces"][0]["id"].split("/")[-1])
print("nic ip:", nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"])
pe2 = net.private_endpoints.begin_create_or_update("rg1", "pe-manual", {"location": "eastus", "properties": {"subnet": {"id": subnet["id"]},
    "manualPrivateLinkServiceConnections": [{"name": "c", "properties": {"privateLinkServiceId": svc.id, "groupIds": ["fhir"], "requestMessage": "please"}}]}}).result()
print("pe manual:", pe2["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]["privateLinkServiceConnectionState"]["status"])
conns = list(hc.private_endpoint_connections.list_by_service("rg1", "fhirsdk1"))
pending = [c for c in conns if c.private_link_service_connection_state.status == "Pending"][0]
approved = hc.private_endpoint_connections.begin_create_or_update("rg1", "fhirsdk1", pending.name,
    {"private_link_service_connection_state": {"status": "Approved", "description": "ok"}}).result()
print("approved:", approved.private_link_service_connection_state.status)
zone = dns.private_zones.begin_create_or_update("rg1", "privatelink.azurehealthcareapis.com", {"location": "global"}).result()
link = dns.virtual_network_links.begin_create_or_update("rg1", zone["name"], "link1", {"location": "global", "properties": {"virtualNetwork": {"id": vnet["id"]}, "registrationEnabled": False}}).result()
print("link:", link["properties"]["virtualNetworkLinkState"])
zg = net.private_dns_zone_groups.begin_create_or_update("rg1", "pe-auto", "default", {"properties": {"privateDnsZoneConfigs": [{"name": "cfg", "properties": {"privateDnsZoneId": zone["id"]}}]}}).result()
print("zone group records:", [(r["recordSetName"], r["ipAddresses"]) for r in zg["properties"]["privateDnsZoneConfigs"][0]["properties"]["recordSets"]])
print("record sets:", [(r["name"], [a["ipv4Address"] for a in r["properties"].get("aRecords", [])]) for r in dns.record_sets.list("rg1", zone["name"])])
dns.record_sets.create_or_update("rg1", zone["name"], "A", "extra", {"properties": {"ttl": 60, "aRecords": [{"ipv4Address": "127.10.1.99"}]}})
print("A list:", [r["name"] for r in dns.record_sets.list_by_type("rg1", zone["name"], "A")])
vnet2 = net.virtual_networks.begin_create_or_update("rg1", "vnet2", {"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["127.20.0.0/16"]}}}).result()
p1 = net.virtual_network_peerings.begin_create_or_update("rg1", "vnet1", "to2", {"properties": {"remoteVirtualNetwork": {"id": vnet2["id"]}, "allowVirtualNetworkAccess": True}}).result()
print("peering:", p1["properties"]["peeringState"])
p2 = net.virtual_network_peerings.begin_create_or_update("rg1", "vnet2", "to1", {"properties": {"remoteVirtualNetwork": {"id": vnet["id"]}}}).result()
print("peering back:", p2["properties"]["peeringState"], net.virtual_network_peerings.get("rg1", "vnet1", "to2")["properties"]["peeringState"])
nsg = net.network_security_groups.begin_create_or_update("rg1", "nsg1", {"location": "eastus", "properties": {"securityRules": [{"name": "deny-internet", "properties": {"protocol": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "Internet", "access": "Deny", "sourcePortRange": "*", "destinationPortRange": "*", "priority": 100, "direction": "Outbound"}}]}}).result()
print("nsg rules:", [r["name"] for r in nsg["properties"]["securityRules"]], len(nsg["properties"]["defaultSecurityRules"]))
svc = hc.services.begin_update("rg1", "fhirsdk1", {"tags": {"env": "test"}, "properties": {"public_network_access": "Disabled"}}).result()
print("patched:", svc.tags, svc.properties.public_network_access)
print("services by rg:", [s.name for s in hc.services.list_by_resource_group("rg1")], "by sub:", [s.name for s in hc.services.list()])
try:
    net.private_endpoints.begin_create_or_update("rg1", "pe-far", {"location": "westeurope", "properties": {"subnet": {"id": subnet["id"]},
        "privateLinkServiceConnections": [{"name": "c", "properties": {"privateLinkServiceId": svc.id, "groupIds": ["fhir"]}}]}}).result()
except Exception as e:
    print("wrong region:", type(e).__name__, getattr(getattr(e, "error", None), "code", None))
net.private_endpoints.begin_delete("rg1", "pe-manual").result()
print("after delete, connections:", [c.private_link_service_connection_state.status for c in hc.private_endpoint_connections.list_by_service("rg1", "fhirsdk1")])
res.resource_groups.begin_delete("rg1").result()
print("rg exists after delete:", res.resource_groups.check_existence("rg1"))
