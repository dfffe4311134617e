//! A VPC set up in the local stack's EC2 (moto) the way a deployment reaches an on-premises
//! cluster — a subnet per zone, the functions' security group, a virtual private gateway
//! attached and routed to — for the tests of the probe's reading of the AWS side, which then
//! take one piece away at a time.

use sakuin::aws::ec2::{Ec2, Node};

/// The pieces, by id.
#[derive(Debug, Clone)]
pub struct Network {
    pub vpc: String,
    /// In zone `a`; the functions' subnet.
    pub subnet: String,
    /// In zone `c`.
    pub other_subnet: String,
    pub group: String,
    pub vgw: String,
    /// The route table of `subnet`.
    pub table: String,
    /// The on-premises network the route covers.
    pub onprem: String,
}

/// One EC2 action that must succeed. Setting up may wait: moto builds its EC2 backend on the
/// first call, which takes seconds on a busy machine.
pub async fn act(ec2: &Ec2, action: &str, params: &[(&str, &str)]) -> Node {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ec2.clone()
        .with_timeout(std::time::Duration::from_secs(120))
        .call(action, &params)
        .await
        .unwrap_or_else(|e| panic!("EC2 {action} on the local stack: {e}"))
}

fn id(node: &Node, name: &str) -> String {
    node.find(name)
        .map(|n| n.text.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in {node:?}"))
}

impl Network {
    /// A complete path: VPC `cidr`, the route to `onprem` through an attached virtual private
    /// gateway, the security group's default egress (everything), the default network ACL.
    pub async fn build(ec2: &Ec2, cidr: &str, onprem: &str) -> Network {
        let region = "ap-northeast-1";
        let vpc = id(
            &act(ec2, "CreateVpc", &[("CidrBlock", cidr)]).await,
            "vpcId",
        );
        let base = cidr.split('.').take(2).collect::<Vec<_>>().join(".");
        let subnet_in = |third: &str, zone: &str| {
            let block = format!("{base}.{third}.0/24");
            let zone = format!("{region}{zone}");
            let vpc = vpc.clone();
            async move {
                id(
                    &act(
                        ec2,
                        "CreateSubnet",
                        &[
                            ("VpcId", &vpc),
                            ("CidrBlock", &block),
                            ("AvailabilityZone", &zone),
                        ],
                    )
                    .await,
                    "subnetId",
                )
            }
        };
        let subnet = subnet_in("1", "a").await;
        let other_subnet = subnet_in("2", "c").await;
        let group = id(
            &act(
                ec2,
                "CreateSecurityGroup",
                &[
                    ("GroupName", &format!("sakuin-{vpc}")),
                    ("GroupDescription", "sakuin functions"),
                    ("VpcId", &vpc),
                ],
            )
            .await,
            "groupId",
        );
        let vgw = id(
            &act(ec2, "CreateVpnGateway", &[("Type", "ipsec.1")]).await,
            "vpnGatewayId",
        );
        act(
            ec2,
            "AttachVpnGateway",
            &[("VpcId", &vpc), ("VpnGatewayId", &vgw)],
        )
        .await;
        let table = id(
            &act(ec2, "CreateRouteTable", &[("VpcId", &vpc)]).await,
            "routeTableId",
        );
        act(
            ec2,
            "AssociateRouteTable",
            &[("RouteTableId", &table), ("SubnetId", &subnet)],
        )
        .await;
        act(
            ec2,
            "CreateRoute",
            &[
                ("RouteTableId", &table),
                ("DestinationCidrBlock", onprem),
                ("GatewayId", &vgw),
            ],
        )
        .await;
        Network {
            vpc,
            subnet,
            other_subnet,
            group,
            vgw,
            table,
            onprem: onprem.to_owned(),
        }
    }

    /// Takes the route to the on-premises network away.
    pub async fn remove_route(&self, ec2: &Ec2) {
        act(
            ec2,
            "DeleteRoute",
            &[
                ("RouteTableId", &self.table),
                ("DestinationCidrBlock", &self.onprem),
            ],
        )
        .await;
    }
}
