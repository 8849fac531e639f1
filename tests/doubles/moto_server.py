"""moto in server mode, on 127.0.0.1 and a free port, for tests that drive the real boto3 clients.

Server mode (not `mock_aws`) so the providers' clients go through real HTTP, the entry point production uses:
`with moto_server() as moto: client = moto.client("rds")`. `reset()` (POST /moto-api/reset) empties every
backend between tests; the server is stopped when the `with` block ends.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, service: str, *, region: str = REGION) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.url, region_name=region,
                            config=Config(retries={"max_attempts": 1}), **DUMMY_CREDENTIALS)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    """A fresh ThreadedMotoServer for the duration of the block, with an empty world (moto's state is per process,
    so it is reset on the way in and on the way out)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    made = MotoServer(f"http://127.0.0.1:{port}")
    # moto keeps its backends per process, not per server: without a reset, one test's instances and parameter
    # groups would be there for the next test's fresh server.
    made.reset()
    try:
        yield made
    finally:
        made.reset()
        server.stop()


# ---- seeds: the world a DR test starts from


def seed_rds_source(moto: MotoServer, name: str, *, region: str = REGION) -> dict[str, Any]:
    """A PostgreSQL instance in its own VPC, subnet group, security group and parameter group — the settings a
    PITR must copy — with 7-day backups. Returns the ids."""
    ec2, rds = moto.client("ec2", region=region), moto.client("rds", region=region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    group = ec2.create_security_group(GroupName=f"{name}-db", Description="db", VpcId=vpc)["GroupId"]
    rds.create_db_subnet_group(DBSubnetGroupName=f"{name}-subnets", DBSubnetGroupDescription="db",
                               SubnetIds=subnets)
    rds.create_db_parameter_group(DBParameterGroupName=f"{name}-params", DBParameterGroupFamily="postgres16",
                                  Description="db")
    rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.r6g.large",
                           MasterUsername="app", MasterUserPassword="not-a-secret-1", AllocatedStorage=20,
                           DBSubnetGroupName=f"{name}-subnets", VpcSecurityGroupIds=[group],
                           DBParameterGroupName=f"{name}-params", MultiAZ=True, BackupRetentionPeriod=7)
    return {"vpc": vpc, "security_group": group, "subnet_group": f"{name}-subnets",
            "parameter_group": f"{name}-params"}


def seed_zone(moto: MotoServer, *, domain: str, record: str, value: str, rtype: str = "A") -> str:
    """A hosted zone with one record; returns the zone id (without the `/hostedzone/` prefix)."""
    route53 = moto.client("route53")
    zone = str(route53.create_hosted_zone(Name=domain, CallerReference=f"{domain}-{record}")["HostedZone"]["Id"])
    zone = zone.rsplit("/", 1)[-1]
    route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": record, "Type": rtype, "TTL": 60,
                                                  "ResourceRecords": [{"Value": value}]}}]})
    return zone


def seed_bucket(moto: MotoServer, bucket: str, objects: dict[str, bytes], *, versioning: bool = True) -> Any:
    """A bucket holding `objects`; returns the S3 client."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    if versioning:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return s3
