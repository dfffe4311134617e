//! The AWS side of the path to the cluster, read from the configuration (EC2 `Describe*`
//! calls, read-only) when TCP to Elasticsearch times out or finds no route: which piece is
//! missing, or that none is and the problem lies on premises.
//!
//! For each of the functions' subnets it follows what a packet to the cluster meets: the route
//! table (the subnet's own, else the VPC's main one; the longest prefix that covers the address,
//! its target and state), the security groups' egress rules (stateful: the answer needs no
//! rule), the subnet's network ACL both ways (stateless: the answer comes back to an ephemeral
//! port, 1024–65535 for Lambda, see
//! <https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html#nacl-ephemeral-ports>),
//! and past the route's target: a virtual private gateway's VPN connections and their tunnels, a
//! transit gateway's attachment to this VPC (which needs a subnet in each zone that sends
//! through it: <https://docs.aws.amazon.com/vpc/latest/tgw/tgw-vpc-attachments.html>).
//! Reachability Analyzer answers a similar question per analysis, for a fee, and stops at the
//! gateway; this reads the same configuration on every failing probe run.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::aws::ec2::{Ec2, Node, filters, ids};

/// Where the functions run: the template passes its `SubnetIds` and `SecurityGroupIds`.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

/// What the configuration says about the path to one address.
#[derive(Debug, Default)]
pub struct Reading {
    /// Each missing or broken piece, with its fix.
    pub problems: Vec<String>,
    /// What is in place, for the report when nothing is missing.
    pub in_place: Vec<String>,
    /// The VPC's CIDR blocks: what the on-premises side must route back and let in.
    pub vpc_cidrs: Vec<String>,
}

impl Reading {
    /// The hint for a connect that failed: the missing pieces, or the on-premises side.
    pub fn hint(&self, port: u16) -> String {
        if self.problems.is_empty() {
            format!(
                "the AWS side of the path is complete ({}): look at the on-premises side — its firewall must let {} in to tcp/{port}, and its routers must send {} back through the VPN / Direct Connect",
                self.in_place.join("; "),
                self.vpc_cidrs.join(", "),
                self.vpc_cidrs.join(", ")
            )
        } else {
            format!("the AWS side of the path: {}", self.problems.join("; "))
        }
    }
}

/// Reads the path from `placement` to `target` as the EC2 API describes it.
pub async fn read(ec2: &Ec2, placement: &Placement, target: SocketAddr) -> Result<Reading, String> {
    if placement.subnets.is_empty() {
        return Err("SUBNET_IDS is not set".into());
    }
    let subnets = ec2
        .call("DescribeSubnets", &ids("SubnetId", &placement.subnets))
        .await?;
    let subnets: Vec<Subnet> = subnets.items("subnetSet").map(Subnet::from).collect();
    let Some(vpc) = subnets.first().map(|s| s.vpc.clone()) else {
        return Err(format!(
            "none of the subnets {} exists",
            placement.subnets.join(", ")
        ));
    };
    let in_vpc = filters(&[("vpc-id", std::slice::from_ref(&vpc))]);
    let vpc_id = ids("VpcId", std::slice::from_ref(&vpc));
    let group_ids = ids("GroupId", &placement.security_groups);
    let (vpcs, tables, acls, groups, all_subnets, connections, gateways, attachments) = tokio::join!(
        ec2.call("DescribeVpcs", &vpc_id),
        ec2.call("DescribeRouteTables", &in_vpc),
        ec2.call("DescribeNetworkAcls", &in_vpc),
        ec2.call("DescribeSecurityGroups", &group_ids),
        ec2.call("DescribeSubnets", &in_vpc),
        ec2.call("DescribeVpnConnections", &[]),
        ec2.call("DescribeVpnGateways", &[]),
        ec2.call("DescribeTransitGatewayVpcAttachments", &[]),
    );
    let (tables, acls) = (tables?, acls?);
    let mut reading = Reading {
        vpc_cidrs: vpcs?
            .items("vpcSet")
            .flat_map(|v| {
                let mut cidrs: Vec<String> = v
                    .items("cidrBlockAssociationSet")
                    .filter_map(|a| a.text_of("cidrBlock"))
                    .collect();
                if cidrs.is_empty() {
                    cidrs.extend(v.text_of("cidrBlock"));
                }
                cidrs
            })
            .collect(),
        ..Reading::default()
    };
    // The gateways past the route: optional reads (a role without them still gets the rest).
    let beyond = Beyond {
        connections: connections
            .map(|c| c.items("vpnConnectionSet").cloned().collect())
            .ok(),
        gateways: gateways
            .map(|g| g.items("vpnGatewaySet").cloned().collect())
            .unwrap_or_default(),
        attachments: attachments
            .map(|a| a.items("transitGatewayVpcAttachments").cloned().collect())
            .unwrap_or_default(),
        zones: all_subnets
            .map(|s| {
                s.items("subnetSet")
                    .map(Subnet::from)
                    .map(|s| (s.id, s.zone))
                    .collect()
            })
            .unwrap_or_default(),
        vpc: vpc.clone(),
    };
    let ip = target.ip();
    let port = target.port();
    for subnet in &subnets {
        route(&tables, subnet, ip, &beyond, &mut reading);
        network_acl(&acls, subnet, ip, port, &mut reading);
    }
    if placement.security_groups.is_empty() {
        reading
            .problems
            .push("SECURITY_GROUP_IDS is not set: the security groups were not read".into());
    } else {
        egress(&groups?, ip, port, &mut reading);
    }
    dedup(&mut reading.problems);
    dedup(&mut reading.in_place);
    Ok(reading)
}

fn dedup(lines: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| seen.insert(l.clone()));
}

struct Subnet {
    id: String,
    vpc: String,
    zone: String,
}

impl From<&Node> for Subnet {
    fn from(n: &Node) -> Self {
        Self {
            id: n.text_of("subnetId").unwrap_or_default(),
            vpc: n.text_of("vpcId").unwrap_or_default(),
            zone: n.text_of("availabilityZone").unwrap_or_default(),
        }
    }
}

/// What lies past a route's target.
struct Beyond {
    /// `None` when they could not be read.
    connections: Option<Vec<Node>>,
    gateways: Vec<Node>,
    attachments: Vec<Node>,
    zones: HashMap<String, String>,
    vpc: String,
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (net, len) = text.trim().split_once('/')?;
        Some(Cidr {
            net: net.parse().ok()?,
            len: len.parse().ok()?,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) if self.len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) if self.len <= 128 => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A route's destination, as the API gives it.
fn destination(route: &Node) -> Option<Cidr> {
    route
        .text_of("destinationCidrBlock")
        .or_else(|| route.text_of("destinationIpv6CidrBlock"))
        .and_then(|c| Cidr::parse(&c))
}

/// A route's target id (`local`, `igw-…`, `vgw-…`, `tgw-…`, `nat-…`, `pcx-…`, `eni-…`…).
fn route_target(route: &Node) -> String {
    [
        "gatewayId",
        "transitGatewayId",
        "natGatewayId",
        "vpcPeeringConnectionId",
        "networkInterfaceId",
        "instanceId",
        "localGatewayId",
        "carrierGatewayId",
        "coreNetworkArn",
    ]
    .iter()
    .find_map(|k| route.text_of(k))
    .unwrap_or_else(|| "an unknown target".into())
}

/// The route table of a subnet: the one associated with it, else the VPC's main table.
fn table_of<'a>(tables: &'a Node, subnet: &str) -> Option<&'a Node> {
    let tables: Vec<&Node> = tables.items("routeTableSet").collect();
    let associated = |t: &&Node, f: &dyn Fn(&Node) -> bool| t.items("associationSet").any(f);
    tables
        .iter()
        .find(|t| associated(t, &|a| a.text_of("subnetId").as_deref() == Some(subnet)))
        .or_else(|| {
            tables
                .iter()
                .find(|t| associated(t, &|a| a.text_of("main").as_deref() == Some("true")))
        })
        .copied()
}

/// Addresses the internet does not route: a route to an internet or NAT gateway cannot reach
/// them on premises.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 2)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The route a packet from `subnet` to `ip` takes, and what lies past it.
fn route(tables: &Node, subnet: &Subnet, ip: IpAddr, beyond: &Beyond, reading: &mut Reading) {
    let Some(table) = table_of(tables, &subnet.id) else {
        reading.problems.push(format!(
            "subnet {} has no route table and {} no main one",
            subnet.id, subnet.vpc
        ));
        return;
    };
    let table_id = table.text_of("routeTableId").unwrap_or_default();
    let best = table
        .items("routeSet")
        .filter_map(|r| destination(r).map(|d| (d, r)))
        .filter(|(d, _)| d.contains(ip))
        .max_by_key(|(d, _)| d.len);
    let Some((dest, r)) = best else {
        reading
            .problems
            .push(no_route(table, &table_id, subnet, ip, beyond));
        return;
    };
    let dest = format!("{}/{}", dest.net, dest.len);
    let target = route_target(r);
    if r.text_of("state").as_deref() == Some("blackhole") {
        reading.problems.push(format!(
            "the route to {dest} in {table_id} (subnet {}) is a blackhole: its target {target} no longer exists or is detached; point it at the VPN or transit gateway again",
            subnet.id
        ));
        return;
    }
    if (target.starts_with("igw-") || target.starts_with("nat-")) && is_private(ip) {
        let kind = if target.starts_with("igw-") {
            "internet gateway"
        } else {
            "NAT gateway"
        };
        reading.problems.push(format!(
            "the route for {ip} in {table_id} (subnet {}) is {dest} to the {kind} {target}, which cannot reach a private on-premises address: add a route to the on-premises CIDR through the virtual private gateway or the transit gateway",
            subnet.id
        ));
        return;
    }
    reading.in_place.push(format!(
        "{table_id} routes {dest} to {target} from {}",
        subnet.id
    ));
    if target.starts_with("vgw-") {
        vpn_tunnels(beyond, "vpnGatewayId", &target, reading);
    } else if target.starts_with("tgw-") {
        transit_attachment(beyond, subnet, &target, reading);
        vpn_tunnels(beyond, "transitGatewayId", &target, reading);
    }
}

/// No route covers the address: what would carry it, from what the VPC has.
fn no_route(table: &Node, table_id: &str, subnet: &Subnet, ip: IpAddr, beyond: &Beyond) -> String {
    let mut said = format!("no route to {ip} in {table_id} (subnet {})", subnet.id);
    let attached: Vec<String> = beyond
        .gateways
        .iter()
        .filter(|g| {
            g.items("attachments").any(|a| {
                a.text_of("vpcId").as_deref() == Some(beyond.vpc.as_str())
                    && a.text_of("state").as_deref() == Some("attached")
            })
        })
        .filter_map(|g| g.text_of("vpnGatewayId"))
        .collect();
    let propagating: Vec<String> = table
        .items("propagatingVgwSet")
        .filter_map(|p| p.text_of("gatewayId"))
        .collect();
    let transit: Vec<String> = beyond
        .attachments
        .iter()
        .filter(|a| a.text_of("vpcId").as_deref() == Some(beyond.vpc.as_str()))
        .filter(|a| a.text_of("state").as_deref() != Some("deleted"))
        .filter_map(|a| a.text_of("transitGatewayId"))
        .collect();
    let mut fixes = Vec::new();
    for vgw in &attached {
        if propagating.contains(vgw) {
            fixes.push(format!(
                "{vgw} propagates its routes to this table but has none for {ip}: the VPN's static routes or the prefixes on-premises advertises over BGP do not cover it"
            ));
        } else {
            fixes.push(format!(
                "enable route propagation from the virtual private gateway {vgw}, or add a static route to it"
            ));
        }
    }
    for tgw in &transit {
        fixes.push(format!(
            "add a route to the on-premises CIDR through the transit gateway {tgw}"
        ));
    }
    if fixes.is_empty() {
        fixes.push(format!(
            "{} has no virtual private gateway attached and no transit gateway attachment: attach one that reaches on premises (VPN or Direct Connect) and route the on-premises CIDR to it",
            beyond.vpc
        ));
    }
    said.push_str("; ");
    said.push_str(&fixes.join(", or "));
    // Routes to managed prefix lists are not expanded here: one of them may cover the address.
    let lists: Vec<String> = table
        .items("routeSet")
        .filter_map(|r| {
            let list = r.text_of("destinationPrefixListId")?;
            Some(format!("{list} via {}", route_target(r)))
        })
        .collect();
    if !lists.is_empty() {
        said.push_str(&format!(
            " (routes to prefix lists were not expanded: {}; if one of them holds the cluster's address, this route exists)",
            lists.join(", ")
        ));
    }
    said
}

/// The VPN connections on a gateway, and their tunnels' state.
fn vpn_tunnels(beyond: &Beyond, key: &str, gateway: &str, reading: &mut Reading) {
    let Some(connections) = &beyond.connections else {
        return;
    };
    for c in connections
        .iter()
        .filter(|c| c.text_of(key).as_deref() == Some(gateway))
        .filter(|c| !matches!(c.text_of("state").as_deref(), Some("deleted" | "deleting")))
    {
        let id = c.text_of("vpnConnectionId").unwrap_or_default();
        let tunnels: Vec<(String, String, String)> = c
            .items("vgwTelemetry")
            .map(|t| {
                (
                    t.text_of("outsideIpAddress").unwrap_or_default(),
                    t.text_of("status").unwrap_or_default(),
                    t.text_of("statusMessage").unwrap_or_default(),
                )
            })
            .collect();
        let up = tunnels.iter().filter(|(_, s, _)| s == "UP").count();
        if tunnels.is_empty() {
            reading
                .in_place
                .push(format!("VPN connection {id} (tunnel status not reported)"));
        } else if up == 0 {
            let detail: Vec<String> = tunnels
                .iter()
                .map(|(ip, status, message)| {
                    if message.is_empty() {
                        format!("{ip} {status}")
                    } else {
                        format!("{ip} {status}: {message}")
                    }
                })
                .collect();
            reading.problems.push(format!(
                "the VPN connection {id}'s tunnels are all DOWN ({}): look at the customer gateway device (IKE / IPsec settings, its public address, BGP) and the VPN connection's tunnel logs",
                detail.join(", ")
            ));
        } else {
            reading.in_place.push(format!(
                "VPN connection {id}: {up} of {} tunnels UP",
                tunnels.len()
            ));
        }
    }
}

/// The transit gateway's attachment to this VPC: present, available, and with a subnet in the
/// zone of `subnet` (traffic from a zone without one is dropped).
fn transit_attachment(beyond: &Beyond, subnet: &Subnet, tgw: &str, reading: &mut Reading) {
    let attachment = beyond.attachments.iter().find(|a| {
        a.text_of("transitGatewayId").as_deref() == Some(tgw)
            && a.text_of("vpcId").as_deref() == Some(beyond.vpc.as_str())
    });
    let Some(a) = attachment else {
        reading.problems.push(format!(
            "{tgw} has no attachment to {}: create a transit gateway VPC attachment, with a subnet in each zone the functions run in",
            beyond.vpc
        ));
        return;
    };
    let id = a.text_of("transitGatewayAttachmentId").unwrap_or_default();
    let state = a.text_of("state").unwrap_or_default();
    if state != "available" {
        reading.problems.push(format!(
            "the transit gateway attachment {id} is {state}, not available"
        ));
        return;
    }
    let zones: Vec<&str> = a
        .items("subnetIds")
        .filter_map(|s| beyond.zones.get(s.text.trim()).map(String::as_str))
        .collect();
    if !subnet.zone.is_empty() && !zones.is_empty() && !zones.contains(&subnet.zone.as_str()) {
        reading.problems.push(format!(
            "the transit gateway attachment {id} has no subnet in {}, where {} is: the transit gateway drops traffic from a zone its attachment does not cover; add a subnet of {} to the attachment",
            subnet.zone, subnet.id, subnet.zone
        ));
        return;
    }
    reading
        .in_place
        .push(format!("transit gateway attachment {id} available"));
}

/// One network ACL entry.
struct AclEntry {
    rule: u32,
    allow: bool,
    egress: bool,
    cidr: Option<Cidr>,
    /// `None`: every protocol.
    tcp_ports: Option<(u16, u16)>,
    tcp: bool,
}

impl AclEntry {
    fn from(n: &Node) -> Option<AclEntry> {
        let protocol = n.text_of("protocol").unwrap_or_default();
        let all = protocol == "-1" || protocol.eq_ignore_ascii_case("all");
        let tcp = protocol == "6" || protocol.eq_ignore_ascii_case("tcp");
        let ports = n.child("portRange").and_then(|p| {
            Some((
                p.text_of("from")?.parse().ok()?,
                p.text_of("to")?.parse().ok()?,
            ))
        });
        Some(AclEntry {
            rule: n.text_of("ruleNumber")?.parse().ok()?,
            allow: n.text_of("ruleAction").as_deref() == Some("allow"),
            egress: n.text_of("egress").as_deref() == Some("true"),
            cidr: n
                .text_of("cidrBlock")
                .or_else(|| n.text_of("ipv6CidrBlock"))
                .and_then(|c| Cidr::parse(&c)),
            tcp_ports: if all {
                None
            } else {
                ports.or(Some((0, 65535)))
            },
            tcp: all || tcp,
        })
    }

    fn matches(&self, egress: bool, ip: IpAddr, port: u16) -> bool {
        self.egress == egress
            && self.tcp
            && self.cidr.is_some_and(|c| c.contains(ip))
            && self
                .tcp_ports
                .is_none_or(|(from, to)| from <= port && port <= to)
    }
}

/// The first matching rule, in rule-number order: (allowed, rule number; `None` for the
/// implicit deny).
fn acl_verdict(entries: &[AclEntry], egress: bool, ip: IpAddr, port: u16) -> (bool, Option<u32>) {
    entries
        .iter()
        .find(|e| e.matches(egress, ip, port))
        .map(|e| (e.allow, Some(e.rule)))
        .unwrap_or((false, None))
}

/// Lambda's ephemeral ports, where the cluster's answers arrive.
const EPHEMERAL: (u16, u16) = (1024, 65535);

/// The subnet's network ACL: out to the cluster's port, and the answers back in.
fn network_acl(acls: &Node, subnet: &Subnet, ip: IpAddr, port: u16, reading: &mut Reading) {
    let all: Vec<&Node> = acls.items("networkAclSet").collect();
    let acl = all
        .iter()
        .find(|a| {
            a.items("associationSet")
                .any(|s| s.text_of("subnetId").as_deref() == Some(subnet.id.as_str()))
        })
        .or_else(|| {
            all.iter()
                .find(|a| a.text_of("default").as_deref() == Some("true"))
        });
    let Some(acl) = acl else {
        return;
    };
    let id = acl.text_of("networkAclId").unwrap_or_default();
    let mut entries: Vec<AclEntry> = acl.items("entrySet").filter_map(AclEntry::from).collect();
    entries.sort_by_key(|e| e.rule);
    let rule = |r: Option<u32>| match r {
        Some(n) => format!("rule {n}"),
        None => "no rule allows it".to_owned(),
    };
    let (out_ok, out_rule) = acl_verdict(&entries, true, ip, port);
    if !out_ok {
        reading.problems.push(format!(
            "the network ACL {id} of {} denies outbound tcp/{port} to {ip} ({}): allow it",
            subnet.id,
            rule(out_rule)
        ));
    }
    // The answers: every ephemeral port must be let in, or a share of connections hang.
    let mut denied: Option<(u16, u16, Option<u32>)> = None;
    let mut denied_ports = 0u32;
    for p in EPHEMERAL.0..=EPHEMERAL.1 {
        let (ok, r) = acl_verdict(&entries, false, ip, p);
        if !ok {
            denied_ports += 1;
            match &mut denied {
                Some((_, to, _)) if *to + 1 == p => *to = p,
                Some(_) => {}
                None => denied = Some((p, p, r)),
            }
        }
    }
    if let Some((from, to, r)) = denied {
        let share = if denied_ports == u32::from(EPHEMERAL.1 - EPHEMERAL.0) + 1 {
            "all of them".to_owned()
        } else {
            format!("{denied_ports} of them, from {from}–{to}")
        };
        reading.problems.push(format!(
            "the network ACL {id} of {} denies the return traffic from {ip} on ephemeral ports ({share}, {}): network ACLs are stateless; allow inbound tcp {}–{} from the on-premises CIDR",
            subnet.id,
            rule(r),
            EPHEMERAL.0,
            EPHEMERAL.1
        ));
    }
    if out_ok && denied.is_none() {
        reading.in_place.push(format!(
            "network ACL {id} lets tcp/{port} out and the answers in"
        ));
    }
}

/// The security groups' egress rules: one that allows tcp/`port` to `ip` is enough.
fn egress(groups: &Node, ip: IpAddr, port: u16, reading: &mut Reading) {
    let groups: Vec<&Node> = groups.items("securityGroupInfo").collect();
    let mut unsure = Vec::new();
    for g in &groups {
        let id = g.text_of("groupId").unwrap_or_default();
        for perm in g.items("ipPermissionsEgress") {
            let protocol = perm.text_of("ipProtocol").unwrap_or_default();
            let ports_ok = match protocol.as_str() {
                "-1" => true,
                "tcp" | "6" => {
                    let from: i32 = perm
                        .text_of("fromPort")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    let to: i32 = perm
                        .text_of("toPort")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(65535);
                    (from..=to).contains(&i32::from(port))
                }
                _ => false,
            };
            if !ports_ok {
                continue;
            }
            let covered = perm
                .items("ipRanges")
                .filter_map(|r| r.text_of("cidrIp"))
                .chain(
                    perm.items("ipv6Ranges")
                        .filter_map(|r| r.text_of("cidrIpv6")),
                )
                .find(|c| Cidr::parse(c).is_some_and(|c| c.contains(ip)));
            if let Some(cidr) = covered {
                reading
                    .in_place
                    .push(format!("{id} allows egress tcp/{port} to {cidr}"));
                return;
            }
            unsure.extend(
                perm.items("prefixListIds")
                    .filter_map(|p| p.text_of("prefixListId"))
                    .map(|pl| format!("{id} allows egress to prefix list {pl}")),
            );
        }
    }
    if !unsure.is_empty() {
        reading
            .in_place
            .push(format!("{} (not expanded)", unsure.join(", ")));
        return;
    }
    let names: Vec<String> = groups.iter().filter_map(|g| g.text_of("groupId")).collect();
    let (which, verb) = match names.len() {
        0 => ("the security groups".to_owned(), "allow"),
        1 => (format!("security group {}", names[0]), "allows"),
        _ => (format!("security groups {}", names.join(", ")), "allow"),
    };
    reading.problems.push(format!(
        "{which} {verb} no egress to {ip} on tcp/{port}: add an outbound rule for tcp/{port} to the cluster's address or the on-premises CIDR"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses_only() {
        let c = Cidr::parse("10.20.0.0/16").unwrap();
        assert!(c.contains("10.20.255.1".parse().unwrap()));
        assert!(!c.contains("10.21.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
    }

    /// The tunnels' state as DescribeVpnConnections reports it (`vgwTelemetry`; the AWS stand-in
    /// of the local stack does not model tunnels, so this answer is the API reference's shape).
    #[test]
    fn a_vpn_whose_tunnels_are_all_down_is_named() {
        let xml = r#"<DescribeVpnConnectionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <vpnConnectionSet><item>
    <vpnConnectionId>vpn-44a8938f</vpnConnectionId><state>available</state>
    <vpnGatewayId>vgw-8db04f81</vpnGatewayId><customerGatewayId>cgw-b4dc3961</customerGatewayId>
    <vgwTelemetry>
      <item><outsideIpAddress>203.0.113.10</outsideIpAddress><status>DOWN</status><statusMessage>IPSEC IS DOWN</statusMessage></item>
      <item><outsideIpAddress>203.0.113.11</outsideIpAddress><status>DOWN</status><statusMessage/></item>
    </vgwTelemetry>
  </item></vpnConnectionSet></DescribeVpnConnectionsResponse>"#;
        let root = Node::parse(xml).unwrap();
        let beyond = Beyond {
            connections: Some(root.items("vpnConnectionSet").cloned().collect()),
            gateways: vec![],
            attachments: vec![],
            zones: HashMap::new(),
            vpc: "vpc-1".into(),
        };
        let mut reading = Reading::default();
        vpn_tunnels(&beyond, "vpnGatewayId", "vgw-8db04f81", &mut reading);
        assert_eq!(reading.problems.len(), 1, "{reading:?}");
        assert!(
            reading.problems[0].contains(
                "vpn-44a8938f's tunnels are all DOWN (203.0.113.10 DOWN: IPSEC IS DOWN, 203.0.113.11 DOWN)"
            ),
            "{}",
            reading.problems[0]
        );
        // One tunnel up is a working (if unprotected) connection.
        let up = xml.replacen("<status>DOWN</status>", "<status>UP</status>", 1);
        let root = Node::parse(&up).unwrap();
        let beyond = Beyond {
            connections: Some(root.items("vpnConnectionSet").cloned().collect()),
            ..beyond
        };
        let mut reading = Reading::default();
        vpn_tunnels(&beyond, "vpnGatewayId", "vgw-8db04f81", &mut reading);
        assert!(reading.problems.is_empty());
        assert_eq!(
            reading.in_place,
            ["VPN connection vpn-44a8938f: 1 of 2 tunnels UP"]
        );
    }

    /// A table whose only way on premises is a route to a managed prefix list: the address
    /// may be in it, so the report says the list was not expanded rather than only "no route".
    #[test]
    fn a_route_to_a_prefix_list_is_named_not_ignored() {
        let tables = Node::parse(
            r#"<DescribeRouteTablesResponse><routeTableSet><item>
              <routeTableId>rtb-1</routeTableId>
              <associationSet><item><subnetId>subnet-1</subnetId></item></associationSet>
              <routeSet>
                <item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state></item>
                <item><destinationPrefixListId>pl-0onprem</destinationPrefixListId><transitGatewayId>tgw-1</transitGatewayId><state>active</state></item>
              </routeSet>
            </item></routeTableSet></DescribeRouteTablesResponse>"#,
        )
        .unwrap();
        let subnet = Subnet {
            id: "subnet-1".into(),
            vpc: "vpc-1".into(),
            zone: "ap-northeast-1a".into(),
        };
        let beyond = Beyond {
            connections: None,
            gateways: vec![],
            attachments: vec![],
            zones: HashMap::new(),
            vpc: "vpc-1".into(),
        };
        let mut reading = Reading::default();
        route(
            &tables,
            &subnet,
            "10.20.0.5".parse().unwrap(),
            &beyond,
            &mut reading,
        );
        assert_eq!(reading.problems.len(), 1);
        assert!(
            reading.problems[0].starts_with("no route to 10.20.0.5 in rtb-1 (subnet subnet-1)")
                && reading.problems[0]
                    .contains("(routes to prefix lists were not expanded: pl-0onprem via tgw-1;"),
            "{}",
            reading.problems[0]
        );
    }

    #[test]
    fn acl_rules_apply_in_number_order() {
        let entry = |rule, allow, egress, cidr: &str, ports| AclEntry {
            rule,
            allow,
            egress,
            cidr: Cidr::parse(cidr),
            tcp_ports: ports,
            tcp: true,
        };
        let ip: IpAddr = "10.20.0.5".parse().unwrap();
        let entries = vec![
            entry(90, false, false, "10.20.0.0/16", Some((1024, 32767))),
            entry(100, true, false, "0.0.0.0/0", None),
            entry(100, true, true, "0.0.0.0/0", None),
        ];
        assert_eq!(acl_verdict(&entries, false, ip, 2000), (false, Some(90)));
        assert_eq!(acl_verdict(&entries, false, ip, 40000), (true, Some(100)));
        assert_eq!(acl_verdict(&entries, true, ip, 9200), (true, Some(100)));
        assert_eq!(acl_verdict(&[], true, ip, 9200), (false, None));
    }
}
