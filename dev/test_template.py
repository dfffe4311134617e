"""Checks of template.yaml that a security reviewer relies on.

The SAM template is transformed offline with the SAM translator (what `sam deploy` sends to
CloudFormation), then rendered for several parameter scenarios by a small evaluator of the
intrinsic functions and conditions it uses. For each function the IAM it gets is flattened into
(action, resource, condition) grants and compared with the exact set it needs: any widening -
a new action, a wildcard, a broader resource, a dropped condition, an AWS managed policy -
fails a test.

The same exact comparison covers what is no function's: BatchRole, the service role Bedrock
assumes for `sakuin backfill --mode batch`'s jobs, and BatchOperatorPolicy, the managed policy
(attached to nothing) for whoever runs that command.

Also checked: the durable intake (S3 notifications -> intake queue -> ingest, scoped to the
bucket and account), the batch staging bucket, the queue timing rules, declared loops, data-at-rest and in-transit
settings, the VPC endpoint option, the parameter Rules, the alarms, and that events/env.json
covers every environment variable the template declares (`sam local invoke --env-vars`
silently ignores undeclared ones).

Run: .venv/bin/python -m unittest dev/test_template.py
"""

from __future__ import annotations

import copy
import json
import re
import unittest
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
ENV_JSON = ROOT / "events" / "env.json"

REGION = "ap-northeast-1"
ACCOUNT = "111122223333"
STACK_NAME = "sakuin-test"
STACK_GUID = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/{STACK_GUID}"
BUCKET = f"sakuin-source-{ACCOUNT}-{REGION}-{STACK_GUID.split('-')[-1]}"
STAGING_BUCKET = f"sakuin-batch-{ACCOUNT}-{REGION}-{STACK_GUID.split('-')[-1]}"
# Every bucket of the stack, with its policy.
BUCKETS = {"SourceBucket": "SourceBucketPolicy", "BatchStagingBucket": "BatchStagingBucketPolicy"}
SECRET_SUFFIX = "-AbCdEf"  # Secrets Manager appends 6 random characters to a secret's ARN

PROFILE_GEOGRAPHIES = {"us", "us-gov", "eu", "apac", "jp", "au", "global"}
# What AWSLambdaVPCAccessExecutionRole grants besides logs; AWS requires Resource "*" here.
VPC_ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
# The probe reads its own network's configuration (read-only; Describe actions take no
# resource-level permissions) to name what is missing when TCP to Elasticsearch fails.
VPC_PATH_ACTIONS = {
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "ec2:DescribeRouteTables",
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpnConnections",
    "ec2:DescribeVpnGateways",
    "ec2:DescribeTransitGatewayVpcAttachments",
}
FUNCTIONS = {
    "IngestFunction": ("IngestRole", "ingest"),
    "EmbedIndexFunction": ("EmbedIndexRole", "embed-index"),
    "ProbeFunction": ("ProbeRole", "probe"),
}

SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sakuin/es-XyZ123"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0b1c2d3e-1111-2222-3333-444455556666"
SECRET_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/9f8e7d6c-1111-2222-3333-444455556666"

SCENARIOS = {
    # Defaults: no VPC, no secret, Titan v2 foundation model, SSE-S3 / SSE-SQS.
    "defaults": {"EsHost": "es.example.internal"},
    # The on-premises path with everything optional switched on.
    "onprem-everything": {
        "EsHost": "es.corp.example.internal",
        "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
        "SecurityGroupIds": "sg-0123456789abcdef0,sg-0aaaabbbbccccdddd",
        "CreateVpcEndpoints": "true",
        "VpcId": "vpc-0123456789abcdef0",
        "RouteTableIds": "rtb-0123456789abcdef0,rtb-0fedcba9876543210",
        "CreateEsSecret": "true",
        "EsSecretKmsKeyArn": SECRET_KEY_ARN,
        "DataKmsKeyArn": KEY_ARN,
        "EmbeddingModelId": "global.cohere.embed-v4:0",
        "EmbeddingDimensions": "1024",
        "RejectsPrefix": "bad-records/",
        "RecordsPath": "data.items",
        "SourcePrefix": "incoming/",
        "EnableBucketVersioning": "true",
        "AccessLogBucketName": "corp-s3-access-logs",
        "IngestReservedConcurrency": "20",
        "EmbedIndexReservedConcurrency": "10",
        "AlarmEmail": "oncall@example.com",
        "ReconcileSchedule": "cron(0 3 * * ? *)",
    },
    # An existing secret, a Regional inference profile, in a VPC with a NAT gateway.
    "existing-secret-profile": {
        "EsHost": "10.20.30.40",
        "SubnetIds": "subnet-0123456789abcdef0",
        "SecurityGroupIds": "sg-0123456789abcdef0",
        "EsSecretArn": SECRET_ARN,
        "EmbeddingModelId": "apac.cohere.embed-v4:0",
    },
    # An existing secret, a Cohere v3 foundation model, no VPC.
    "existing-secret-model": {
        "EsHost": "es.example.internal",
        "EsSecretArn": SECRET_ARN,
        "EmbeddingModelId": "cohere.embed-multilingual-v3",
    },
}

NO_VALUE = object()


# ---------------------------------------------------------------------------------------------
# Loading and transforming
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def sam_template() -> dict:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    if problems:
        raise AssertionError(f"template.yaml does not parse: {problems}")
    return json.loads(json.dumps(template))  # plain dicts, lists and strings


@lru_cache(maxsize=None)
def cfn_template() -> dict:
    """The SAM template transformed offline, as CloudFormation would receive it."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = copy.deepcopy(sam_template())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/key"  # what `sam package` does
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    # No AWS managed policy may be needed: the loader knows none, so one named in the
    # template would fail the transform.
    return translator.translate(template, parameter_values={}, get_managed_policy_map=lambda: {})


def find_in_map(template: dict, name: str, top: str, second: str):
    return template["Mappings"][name][top][second]


def function_timeout(function: str) -> int:
    """A function's Timeout in seconds, a number or read from the Mappings."""
    template = sam_template()
    timeout = template["Resources"][function]["Properties"]["Timeout"]
    if isinstance(timeout, dict):
        ((key, arg),) = timeout.items()
        assert key == "Fn::FindInMap", timeout
        timeout = find_in_map(template, *arg)
    return int(timeout)


def rust_secs(path: str, name: str) -> int:
    """The seconds of `const NAME: Duration = Duration::from_secs(N)` (or `NAME: u32 = N`)."""
    text = (ROOT / path).read_text()
    match = re.search(rf"const {name}: (?:Duration = Duration::from_secs\((\d+)\)|u32 = (\d+));", text)
    assert match, f"{name} not found in {path}"
    return int(match.group(1) or match.group(2))


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def normalise(value):
    """JSON text with sorted keys and sorted lists, to compare conditions."""

    def sort(v):
        if isinstance(v, dict):
            return {k: sort(v[k]) for k in sorted(v)}
        if isinstance(v, list):
            items = [sort(i) for i in v]
            return sorted(items, key=lambda i: json.dumps(i, sort_keys=True))
        return v

    return json.dumps(sort(value), sort_keys=True) if value else ""


# ---------------------------------------------------------------------------------------------
# A small evaluator of the intrinsic functions the template uses
# ---------------------------------------------------------------------------------------------
class Stack:
    """The transformed template rendered for one set of parameter values."""

    def __init__(self, overrides: dict[str, str], template: dict | None = None):
        self.template = template or cfn_template()
        self.params = self._parameters(overrides)
        self._conditions: dict[str, bool] = {}
        self.resources = {
            name: resource
            for name, resource in self.template["Resources"].items()
            if self.condition(resource.get("Condition"))
        }

    # --- parameters and conditions -----------------------------------------------------------
    def _parameters(self, overrides: dict[str, str]) -> dict:
        declared = self.template["Parameters"]
        unknown = set(overrides) - set(declared)
        if unknown:
            raise AssertionError(f"scenario sets undeclared parameters {sorted(unknown)}")
        values = {}
        for name, spec in declared.items():
            if name in overrides:
                raw = overrides[name]
            elif "Default" in spec:
                raw = str(spec["Default"])
            else:
                raise AssertionError(f"parameter {name} has no default: every scenario must set it")
            self._check_parameter(name, spec, raw)
            values[name] = [s.strip() for s in raw.split(",")] if spec["Type"] == "CommaDelimitedList" else raw
        values.update(
            {
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": STACK_NAME,
                "AWS::StackId": STACK_ID,
                "AWS::NoValue": NO_VALUE,
            }
        )
        return values

    @staticmethod
    def _check_parameter(name: str, spec: dict, raw: str) -> None:
        """A scenario must be deployable: its values pass the parameter constraints."""
        where = f"parameter {name}={raw!r}"
        if "AllowedValues" in spec:
            assert raw in [str(v) for v in spec["AllowedValues"]], where
        if "AllowedPattern" in spec and spec["Type"] == "String":
            assert re.fullmatch(spec["AllowedPattern"], raw), f"{where} !~ {spec['AllowedPattern']}"
        if "MinLength" in spec:
            assert len(raw) >= int(spec["MinLength"]), where
        if "MaxLength" in spec:
            assert len(raw) <= int(spec["MaxLength"]), where
        if spec["Type"] == "Number":
            number = float(raw)
            assert number >= float(spec.get("MinValue", number)), where
            assert number <= float(spec.get("MaxValue", number)), where

    def condition(self, name: str | None) -> bool:
        if name is None:
            return True
        if name not in self._conditions:
            self._conditions[name] = bool(self.eval(self.template["Conditions"][name]))
        return self._conditions[name]

    def rule_failures(self) -> list[str]:
        failures = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.eval(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.eval(assertion["Assert"]):
                    failures.append(f"{name}: {assertion.get('AssertDescription', '')}")
        return failures

    # --- intrinsic functions -----------------------------------------------------------------
    def eval(self, node):
        if isinstance(node, list):
            return [v for v in (self.eval(i) for i in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self.function(key, arg)
        return {k: v for k, v in ((k, self.eval(v)) for k, v in node.items()) if v is not NO_VALUE}

    def function(self, key: str, arg):
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.eval(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.eval(a) for a in arg)
            return str(left) == str(right) if not isinstance(left, list) else left == right
        if key == "Fn::Not":
            return not self.eval(arg[0])
        if key == "Fn::And":
            return all(self.eval(a) for a in arg)
        if key == "Fn::Or":
            return any(self.eval(a) for a in arg)
        if key == "Fn::EachMemberEquals":
            values, expected = self.eval(arg[0]), self.eval(arg[1])
            return all(v == expected for v in values)
        if key == "Fn::Join":
            delimiter, items = arg
            return delimiter.join(str(i) for i in as_list(self.eval(items)))
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self.eval(text)).split(delimiter)
        if key == "Fn::Select":
            index, items = arg
            return as_list(self.eval(items))[int(self.eval(index))]
        if key == "Fn::GetAtt":
            resource, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(resource, attribute)
        if key == "Fn::FindInMap":
            return find_in_map(self.template, *(self.eval(a) for a in arg))
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            return self.sub(text, {k: self.eval(v) for k, v in variables.items()})
        raise NotImplementedError(f"{key} is not understood by dev/test_template.py; extend Stack")

    def sub(self, text: str, variables: dict) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.template["Resources"]:
                return str(self.get_att(*name.split(".", 1)))
            value = self.ref(name)
            assert not isinstance(value, list), f"${{{name}}} is a list"
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resource(self, name: str) -> dict:
        if name not in self.template["Resources"]:
            raise AssertionError(f"reference to unknown resource {name}")
        if name not in self.resources:
            raise AssertionError(f"reference to {name}, whose condition is false in this scenario")
        return self.resources[name]

    def ref(self, name: str):
        if name in self.params:
            return self.params[name]
        resource = self.resource(name)
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        if kind == "AWS::S3::Bucket":
            return self.eval(props["BucketName"])
        if kind == "AWS::Logs::LogGroup":
            return self.eval(props["LogGroupName"])
        if kind == "AWS::IAM::ManagedPolicy":
            return f"arn:aws:iam::{ACCOUNT}:policy/{name}"
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{self.eval(props['Name'])}{SECRET_SUFFIX}"
        return name  # functions, roles, topics, keys, security groups...: their logical id

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resource(name)["Type"]
        arns = {
            ("AWS::SQS::Queue", "Arn"): f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
            ("AWS::SQS::Queue", "QueueName"): name,
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{ACCOUNT}:role/{name}",
            ("AWS::Lambda::Function", "Arn"): f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        }
        if (kind, attribute) in arns:
            return arns[(kind, attribute)]
        if (kind, attribute) == ("AWS::S3::Bucket", "Arn"):
            return f"arn:aws:s3:::{self.ref(name)}"
        if (kind, attribute) == ("AWS::Logs::LogGroup", "Arn"):
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.ref(name)}:*"
        return f"{name}.{attribute}"

    def properties(self, name: str) -> dict:
        return self.eval(self.resource(name).get("Properties", {}))

    def of_type(self, kind: str) -> dict[str, dict]:
        return {n: r for n, r in self.resources.items() if r["Type"] == kind}

    # --- IAM ---------------------------------------------------------------------------------
    def role_documents(self, role: str) -> tuple[list[tuple[str, dict]], list[str]]:
        """(policy documents granted to the role, ARNs of policies not defined in the stack)."""
        props = self.properties(role)
        documents = [(f"{role}/{p['PolicyName']}", p["PolicyDocument"]) for p in props.get("Policies", [])]
        stack_policies = {self.ref(n): n for n in self.of_type("AWS::IAM::ManagedPolicy")}
        foreign = []
        for arn in props.get("ManagedPolicyArns", []):
            if arn in stack_policies:
                name = stack_policies[arn]
                documents.append((name, self.properties(name)["PolicyDocument"]))
            else:
                foreign.append(arn)
        for name, resource in self.resources.items():
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                if role in self.properties(name).get("Roles", []):
                    documents.append((name, self.properties(name)["PolicyDocument"]))
        return documents, foreign

    def grants(self, name: str) -> set[tuple[str, str, str]]:
        """The (action, resource, condition) grants of a role (all its policies), or of one
        managed policy of the stack on its own (one attached to nothing)."""
        if self.resource(name)["Type"] == "AWS::IAM::ManagedPolicy":
            documents = [(name, self.properties(name)["PolicyDocument"])]
        else:
            documents, foreign = self.role_documents(name)
            if foreign:
                raise AssertionError(f"{name} has policies defined outside the stack: {foreign}")
        found = set()
        for source, document in documents:
            for statement in as_list(document["Statement"]):
                where = f"{source} {statement.get('Sid', '')}"
                extra = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
                if extra:
                    raise AssertionError(f"{where}: unexpected {sorted(extra)} (NotAction? NotResource?)")
                if statement["Effect"] != "Allow":
                    raise AssertionError(f"{where}: only Allow statements are expected")
                condition = normalise(statement.get("Condition"))
                for action in as_list(statement["Action"]):
                    for resource in as_list(statement["Resource"]):
                        found.add((action, resource, condition))
        return found


# ---------------------------------------------------------------------------------------------
# The grants each function needs, derived independently from the parameters
# ---------------------------------------------------------------------------------------------
def via(*services: str) -> str:
    names = [f"{s}.{REGION}.amazonaws.com" for s in services]
    return normalise({"StringEquals": {"kms:ViaService": names if len(names) > 1 else names[0]}})


def expected_grants(p: dict) -> dict[str, set[tuple[str, str, str]]]:
    """The exact grants of each role, and of BatchOperatorPolicy (attached to nothing)."""
    in_vpc = "".join(p["SubnetIds"]) != ""
    data_key = p["DataKmsKeyArn"]
    bucket = f"arn:aws:s3:::{BUCKET}"
    staging = f"arn:aws:s3:::{STAGING_BUCKET}"
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkQueue"
    dead_letter_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkDeadLetterQueue"
    intake = f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeQueue"
    intake_dead_letter_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeDeadLetterQueue"

    def logs(function: str) -> set:
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{STACK_NAME}-{function}:*"
        return {("logs:CreateLogStream", group, ""), ("logs:PutLogEvents", group, "")}

    eni = {(action, "*", "") for action in VPC_ENI_ACTIONS} if in_vpc else set()

    model = p["EmbeddingModelId"]
    is_profile = model.split(".", 1)[0] in PROFILE_GEOGRAPHIES
    if is_profile:
        profile = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{model}"
        base = model.split(".", 1)[1]
        through_profile = normalise({"StringEquals": {"bedrock:InferenceProfileArn": profile}})
        bedrock = {
            ("bedrock:InvokeModel", profile, ""),
            ("bedrock:InvokeModel", f"arn:aws:bedrock:*::foundation-model/{base}", through_profile),
            ("bedrock:InvokeModel", f"arn:aws:bedrock:::foundation-model/{base}", through_profile),
        }
        # CreateModelInvocationJob takes no bedrock:InferenceProfileArn key: same models, unconditioned.
        job_models = {profile, f"arn:aws:bedrock:*::foundation-model/{base}", f"arn:aws:bedrock:::foundation-model/{base}"}
    else:
        bedrock = {("bedrock:InvokeModel", f"arn:aws:bedrock:{REGION}::foundation-model/{model}", "")}
        job_models = {f"arn:aws:bedrock:{REGION}::foundation-model/{model}"}

    if p["CreateEsSecret"] == "true":
        secrets = [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK_NAME}/elasticsearch{SECRET_SUFFIX}"]
    elif p["EsSecretArn"]:
        secrets = [p["EsSecretArn"], p["EsSecretArn"] + "-??????"]
    else:
        secrets = []
    secret = {("secretsmanager:GetSecretValue", arn, "") for arn in secrets}
    if secrets and p["EsSecretKmsKeyArn"]:
        secret.add(("kms:Decrypt", p["EsSecretKmsKeyArn"], via("secretsmanager")))

    ingest = logs("ingest") | eni | {
        # GetObject / HeadObject, pinned to a version when the bucket is versioned.
        ("s3:GetObject", f"{bucket}/*", ""),
        ("s3:GetObjectVersion", f"{bucket}/*", ""),
        # Backfill listings; and without it a removed key's HeadObject answers 403, not 404.
        ("s3:ListBucket", bucket, ""),
        ("s3:PutObject", f"{bucket}/{p['RejectsPrefix']}*", ""),
        ("sqs:SendMessage", queue, ""),
        # The event source mapping on the intake queue.
        ("sqs:ReceiveMessage", intake, ""),
        ("sqs:DeleteMessage", intake, ""),
        ("sqs:GetQueueAttributes", intake, ""),
        ("sqs:ChangeMessageVisibility", intake, ""),
        # Continuations and backfill pages go back on the intake queue (no self-invocation).
        ("sqs:SendMessage", intake, ""),
    }
    embed_index = logs("embed-index") | eni | bedrock | secret | {
        ("sqs:ReceiveMessage", queue, ""),
        ("sqs:DeleteMessage", queue, ""),
        ("sqs:GetQueueAttributes", queue, ""),
        ("sqs:ChangeMessageVisibility", queue, ""),
        # Requeues chunks with their vectors while Elasticsearch is unavailable.
        ("sqs:SendMessage", queue, ""),
    }
    vpc_path = {(action, "*", "") for action in VPC_PATH_ACTIONS} if in_vpc else set()
    probe = logs("probe") | eni | vpc_path | bedrock | secret | {
        ("s3:ListBucket", bucket, ""),
        ("s3:GetBucketLocation", bucket, ""),
        ("sqs:GetQueueAttributes", queue, ""),
        ("sqs:GetQueueAttributes", dead_letter_queue, ""),
        ("sqs:GetQueueAttributes", intake, ""),
        ("sqs:GetQueueAttributes", intake_dead_letter_queue, ""),
    }
    if p["ReconcileSchedule"]:
        # The scheduled reconcile queues its repairs on the intake queue.
        probe |= {("sqs:SendMessage", intake, "")}
        if data_key:
            probe |= {("kms:Decrypt", data_key, via("sqs")), ("kms:GenerateDataKey", data_key, via("sqs"))}
    # Bedrock's service role for the batch jobs: it reads a job's input, writes its output and
    # lists those prefixes only, in this account; through a profile it invokes as embed-index does.
    in_account = {"StringEquals": {"aws:ResourceAccount": ACCOUNT}}
    batch_role = {
        ("s3:GetObject", f"{staging}/runs/*/input/*", normalise(in_account)),
        ("s3:PutObject", f"{staging}/runs/*/output/*", normalise(in_account)),
        (
            "s3:ListBucket",
            staging,
            normalise(dict(in_account, StringLike={"s3:prefix": ["runs/*/input/*", "runs/*/output/*"]})),
        ),
    }
    if is_profile:
        batch_role |= bedrock
    # Whoever runs `sakuin backfill --mode batch`: the jobs, the run files, ingest's reading of
    # the source bucket (and its rejects), the chunk queue.
    jobs = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/*"
    operator = {
        (
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/BatchRole",
            normalise({"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}),
        ),
        ("bedrock:GetModelInvocationJob", jobs, ""),
        ("bedrock:StopModelInvocationJob", jobs, ""),
        # It takes no resource type; the Region is still pinned.
        ("bedrock:ListModelInvocationJobs", "*", normalise({"StringEquals": {"aws:RequestedRegion": REGION}})),
        ("s3:GetObject", f"{staging}/runs/*", ""),
        ("s3:PutObject", f"{staging}/runs/*", ""),
        ("s3:DeleteObject", f"{staging}/runs/*", ""),
        ("s3:ListBucket", staging, ""),
        ("s3:GetObject", f"{bucket}/*", ""),
        ("s3:GetObjectVersion", f"{bucket}/*", ""),
        ("s3:ListBucket", bucket, ""),
        ("s3:PutObject", f"{bucket}/{p['RejectsPrefix']}*", ""),
        ("sqs:SendMessage", queue, ""),
    } | {("bedrock:CreateModelInvocationJob", resource, "") for resource in job_models | {jobs}}
    if data_key:
        ingest |= {("kms:Decrypt", data_key, via("s3", "sqs")), ("kms:GenerateDataKey", data_key, via("s3", "sqs"))}
        embed_index |= {("kms:Decrypt", data_key, via("sqs")), ("kms:GenerateDataKey", data_key, via("sqs"))}
        batch_role |= {("kms:Decrypt", data_key, via("s3")), ("kms:GenerateDataKey", data_key, via("s3"))}
        operator |= {("kms:Decrypt", data_key, via("s3", "sqs")), ("kms:GenerateDataKey", data_key, via("s3", "sqs"))}
    return {
        "IngestRole": ingest,
        "EmbedIndexRole": embed_index,
        "ProbeRole": probe,
        # Created by SAM for the ScheduleV2 event.
        "ProbeFunctionScheduleRole": {
            ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ProbeFunction", "")
        },
        "BatchRole": batch_role,
        "BatchOperatorPolicy": operator,
    }


READ_ONLY_ACTIONS = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "sqs:GetQueueAttributes",
    "bedrock:InvokeModel",
    "secretsmanager:GetSecretValue",
    "kms:Decrypt",
} | VPC_ENI_ACTIONS | VPC_PATH_ACTIONS


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
class IamLeastPrivilege(unittest.TestCase):
    def test_scenarios_are_deployable(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                self.assertEqual(Stack(overrides).rule_failures(), [])

    def test_each_function_has_its_own_lambda_role(self):
        stack = Stack(SCENARIOS["defaults"])
        for function, (role, _) in FUNCTIONS.items():
            with self.subTest(function=function):
                self.assertEqual(stack.properties(function)["Role"], f"arn:aws:iam::{ACCOUNT}:role/{role}")
                trust = stack.properties(role)["AssumeRolePolicyDocument"]["Statement"]
                self.assertEqual(
                    [(s["Effect"], s["Principal"], s["Action"]) for s in trust],
                    [("Allow", {"Service": "lambda.amazonaws.com"}, "sts:AssumeRole")],
                )

    def test_only_the_known_roles_and_policies_exist(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                self.assertEqual(
                    set(stack.of_type("AWS::IAM::Role")),
                    {"IngestRole", "EmbedIndexRole", "ProbeRole", "ProbeFunctionScheduleRole", "BatchRole"},
                )
                policies = set(stack.of_type("AWS::IAM::ManagedPolicy"))
                self.assertLessEqual(policies, {"EmbeddingInvokePolicy", "EsSecretReadPolicy", "BatchOperatorPolicy"})
                self.assertIn("BatchOperatorPolicy", policies)
                # Every grant lives in a role, one of the two shared managed policies, or the
                # batch operator's policy.
                self.assertEqual(stack.of_type("AWS::IAM::Policy"), {})
                for kind in ("AWS::IAM::User", "AWS::IAM::Group", "AWS::IAM::AccessKey"):
                    self.assertEqual(stack.of_type(kind), {}, kind)

    def test_each_role_grants_exactly_what_its_function_needs(self):
        # ...and BatchRole what Bedrock's jobs need, BatchOperatorPolicy what the operator does.
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            for role, expected in expected_grants(stack.params).items():
                with self.subTest(scenario=name, role=role):
                    actual = stack.grants(role)
                    self.assertEqual(
                        actual,
                        expected,
                        f"\n  granted but not needed: {sorted(actual - expected)}"
                        f"\n  needed but not granted: {sorted(expected - actual)}",
                    )

    def test_no_aws_managed_policy_is_attached(self):
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            for role in stack.of_type("AWS::IAM::Role"):
                with self.subTest(scenario=name, role=role):
                    self.assertEqual(stack.role_documents(role)[1], [])

    def test_no_wildcard_action_and_star_resource_only_for_vpc_network_interfaces(self):
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            for role in stack.of_type("AWS::IAM::Role"):
                with self.subTest(scenario=name, role=role):
                    for action, resource, _ in stack.grants(role):
                        self.assertNotIn("*", action, f"{role}: wildcard action {action}")
                        if resource == "*":
                            allowed = VPC_ENI_ACTIONS | (VPC_PATH_ACTIONS if role == "ProbeRole" else set())
                            self.assertIn(action, allowed, f"{role}: {action} on *")
                            self.assertTrue(stack.condition("InVpc"))

    def test_probe_is_read_only(self):
        # ...unless the scheduled reconcile is on: then it may queue repairs on the intake queue.
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                grants = stack.grants("ProbeRole")
                if stack.params["ReconcileSchedule"]:
                    intake = f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeQueue"
                    writes = {(a, r) for a, r, _ in grants if a == "sqs:SendMessage"}
                    self.assertEqual(writes, {("sqs:SendMessage", intake)})
                    grants = {g for g in grants if g[0] not in ("sqs:SendMessage", "kms:GenerateDataKey")}
                self.assertLessEqual({a for a, _, _ in grants}, READ_ONLY_ACTIONS)

    def test_kms_only_with_a_customer_key(self):
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            keys = {stack.params["DataKmsKeyArn"], stack.params["EsSecretKmsKeyArn"]} - {""}
            for role in stack.of_type("AWS::IAM::Role"):
                with self.subTest(scenario=name, role=role):
                    for action, resource, condition in stack.grants(role):
                        if action.startswith("kms:"):
                            self.assertIn(resource, keys)
                            self.assertIn("kms:ViaService", condition)

    def test_ingest_writes_only_under_the_rejects_prefix_it_skips(self):
        # ingest may write only under RejectsPrefix, and is told the same prefix to skip.
        stack = Stack(SCENARIOS["onprem-everything"])
        env = stack.properties("IngestFunction")["Environment"]["Variables"]
        self.assertEqual(env["REJECTS_PREFIX"], "bad-records/")
        puts = {r for a, r, _ in stack.grants("IngestRole") if a == "s3:PutObject"}
        self.assertEqual(puts, {f"arn:aws:s3:::{BUCKET}/bad-records/*"})

    def test_nothing_invokes_a_function_directly_but_the_probe_schedule(self):
        # S3 notifies the intake queue, and ingest continues through it: no resource-based
        # permission lets S3 (or anything) invoke ingest, and no role may invoke a function
        # except the probe's schedule.
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                self.assertEqual(stack.of_type("AWS::Lambda::Permission"), {})
                for role in stack.of_type("AWS::IAM::Role"):
                    invokes = {r for a, r, _ in stack.grants(role) if a.startswith("lambda:")}
                    expected = {f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ProbeFunction"}
                    self.assertEqual(invokes, expected if role == "ProbeFunctionScheduleRole" else set(), role)

    def test_only_the_source_bucket_of_this_account_may_notify_the_intake_queue(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                policy = stack.properties("IntakeQueuesPolicy")["PolicyDocument"]["Statement"]
                allows = [s for s in policy if s["Effect"] == "Allow"]
                self.assertEqual(len(allows), 1, allows)
                (allow,) = allows
                self.assertEqual(allow["Principal"], {"Service": "s3.amazonaws.com"})
                self.assertEqual(as_list(allow["Action"]), ["sqs:SendMessage"])
                self.assertEqual(as_list(allow["Resource"]), [f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeQueue"])
                self.assertEqual(
                    allow["Condition"],
                    {
                        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"},
                        "StringEquals": {"aws:SourceAccount": ACCOUNT},
                    },
                )
                # The bucket ARN in the policy is the bucket the stack creates.
                self.assertEqual(stack.get_att("SourceBucket", "Arn"), f"arn:aws:s3:::{BUCKET}")
                # No other queue policy lets anyone in.
                for other in set(stack.of_type("AWS::SQS::QueuePolicy")) - {"IntakeQueuesPolicy"}:
                    statements = stack.properties(other)["PolicyDocument"]["Statement"]
                    self.assertEqual({s["Effect"] for s in statements}, {"Deny"}, other)


class DataProtection(unittest.TestCase):
    def test_buckets_are_private_encrypted_and_tls_only(self):
        names = {"SourceBucket": BUCKET, "BatchStagingBucket": STAGING_BUCKET}
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            self.assertEqual(set(stack.of_type("AWS::S3::Bucket")), set(BUCKETS))
            for bucket_name, policy_name in BUCKETS.items():
                with self.subTest(scenario=name, bucket=bucket_name):
                    bucket = stack.properties(bucket_name)
                    self.assertEqual(bucket["BucketName"], names[bucket_name])
                    self.assertEqual(set(bucket["PublicAccessBlockConfiguration"].values()), {True})
                    self.assertEqual(len(bucket["PublicAccessBlockConfiguration"]), 4)
                    self.assertEqual(bucket["OwnershipControls"], {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
                    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    default = rule["ServerSideEncryptionByDefault"]
                    if stack.params["DataKmsKeyArn"]:
                        self.assertEqual(default, {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN})
                        self.assertIs(rule["BucketKeyEnabled"], True)
                    else:
                        self.assertEqual(default, {"SSEAlgorithm": "AES256"})
                    logs = stack.params["AccessLogBucketName"]
                    if logs:
                        self.assertEqual(bucket["LoggingConfiguration"]["DestinationBucketName"], logs)
                    else:
                        self.assertNotIn("LoggingConfiguration", bucket)
                    policy = stack.properties(policy_name)
                    self.assertEqual(policy["Bucket"], names[bucket_name])
                    statements = policy["PolicyDocument"]["Statement"]
                    self.assertEqual({s["Effect"] for s in statements}, {"Deny"}, "a bucket policy only denies")
                    arns = {f"arn:aws:s3:::{names[bucket_name]}", f"arn:aws:s3:::{names[bucket_name]}/*"}
                    for condition in ({"Bool": {"aws:SecureTransport": "false"}}, {"NumericLessThan": {"s3:TlsVersion": "1.2"}}):
                        (deny,) = [s for s in statements if s["Condition"] == condition]
                        self.assertEqual((deny["Principal"], deny["Action"]), ("*", "s3:*"))
                        self.assertEqual(set(deny["Resource"]), arns)
            source = stack.properties("SourceBucket")
            versioned = stack.params["EnableBucketVersioning"] == "true"
            self.assertEqual(source.get("VersioningConfiguration"), {"Status": "Enabled"} if versioned else None)
            self.assertEqual(self._deletion(stack, "SourceBucket"), "RetainExceptOnCreate")

    def test_batch_staging_is_temporary(self):
        # A run removes its own files; the lifecycle removes what a run left behind. The bucket
        # goes with the stack (which fails while it is not empty, as the template explains).
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                bucket = stack.properties("BatchStagingBucket")
                rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
                self.assertEqual({r["Status"] for r in rules.values()}, {"Enabled"})
                expire = [r for r in rules.values() if "ExpirationInDays" in r]
                self.assertEqual([int(r["ExpirationInDays"]) for r in expire], [30])
                self.assertNotIn("Prefix", expire[0])
                self.assertNotIn("Filter", expire[0], "every object of the bucket expires")
                aborts = [r["AbortIncompleteMultipartUpload"] for r in rules.values() if "AbortIncompleteMultipartUpload" in r]
                self.assertEqual([int(a["DaysAfterInitiation"]) for a in aborts], [1])
                self.assertNotIn("NotificationConfiguration", bucket)
                self.assertNotIn("VersioningConfiguration", bucket)
                self.assertEqual(self._deletion(stack, "BatchStagingBucket"), "Delete")
                self.assertEqual(stack.resources["BatchStagingBucket"].get("UpdateReplacePolicy"), "Delete")
        # Named from pseudo parameters only, within S3's 63 characters in any Region (the
        # longest Region names have 14 characters, e.g. ap-southeast-5).
        name = sam_template()["Resources"]["BatchStagingBucket"]["Properties"]["BucketName"]
        self.assertEqual(references(name), set())
        longest = Stack(SCENARIOS["defaults"]).eval(name).replace(REGION, "ap-southeast-5")
        self.assertLessEqual(len(longest), 63, longest)

    @staticmethod
    def _deletion(stack: Stack, name: str) -> str:
        return stack.resources[name].get("DeletionPolicy", "Delete")

    def test_queues_are_encrypted_and_tls_only(self):
        policies = {
            "ChunkQueuesPolicy": ("ChunkQueue", "ChunkDeadLetterQueue"),
            "IntakeQueuesPolicy": ("IntakeQueue", "IntakeDeadLetterQueue"),
        }
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            self.assertEqual(set(stack.of_type("AWS::SQS::Queue")), {q for qs in policies.values() for q in qs})
            for policy_name, queues in policies.items():
                with self.subTest(scenario=name, policy=policy_name):
                    for queue in queues:
                        props = stack.properties(queue)
                        if stack.params["DataKmsKeyArn"]:
                            self.assertEqual(props.get("KmsMasterKeyId"), KEY_ARN)
                            self.assertNotIn("SqsManagedSseEnabled", props)
                        else:
                            self.assertIs(props.get("SqsManagedSseEnabled"), True)
                    policy = stack.properties(policy_name)
                    self.assertEqual(policy["Queues"], [stack.ref(q) for q in queues])
                    denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
                    (statement,) = denies
                    self.assertEqual((statement["Principal"], statement["Action"]), ("*", "sqs:*"))
                    self.assertEqual(statement["Condition"], {"Bool": {"aws:SecureTransport": "false"}})
                    self.assertEqual(statement["Resource"], [stack.get_att(q, "Arn") for q in queues])

    def test_log_groups_have_retention(self):
        stack = Stack(SCENARIOS["defaults"])
        groups = stack.of_type("AWS::Logs::LogGroup")
        self.assertEqual(len(groups), 3)
        for name in groups:
            self.assertEqual(stack.properties(name)["RetentionInDays"], "30")
        for function in FUNCTIONS:
            group = stack.properties(function)["LoggingConfig"]["LogGroup"]
            self.assertIn(group, {stack.ref(g) for g in groups})

    def test_credentials_are_never_parameters(self):
        template = sam_template()
        for name in template["Parameters"]:
            self.assertIsNone(re.search(r"password|apikey|api_key|token|credential", name, re.I), name)
        for function in FUNCTIONS:
            variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
            for variable in ("ES_USERNAME", "ES_PASSWORD", "ES_API_KEY"):
                if variable in variables:
                    self.assertEqual(variables[variable], "", f"{function}.{variable} is for local runs only")

    def test_created_secret_holds_a_generated_password(self):
        stack = Stack(SCENARIOS["onprem-everything"])
        secret = stack.properties("EsSecret")
        generated = secret["GenerateSecretString"]
        self.assertEqual(json.loads(generated["SecretStringTemplate"]), {"username": "sakuin"})
        self.assertEqual(generated["GenerateStringKey"], "password")
        self.assertNotIn("SecretString", secret)
        self.assertEqual(secret["KmsKeyId"], SECRET_KEY_ARN)
        for function in ("EmbedIndexFunction", "ProbeFunction"):
            env = stack.properties(function)["Environment"]["Variables"]
            self.assertEqual(env["ES_SECRET_ID"], stack.ref("EsSecret"))
        self.assertNotIn("EsSecret", Stack(SCENARIOS["existing-secret-model"]).resources)


class BatchInference(unittest.TestCase):
    """`sakuin backfill --mode batch`: the role Bedrock's jobs run as, the operator's policy,
    and where the command (run with --stack) finds them."""

    JOBS = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/*"

    def test_only_bedrock_may_assume_the_batch_role_for_this_accounts_jobs_in_this_region(self):
        # https://docs.aws.amazon.com/bedrock/latest/userguide/batch-iam-sr.html
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                trust = Stack(overrides).properties("BatchRole")["AssumeRolePolicyDocument"]["Statement"]
                (statement,) = trust
                self.assertEqual(set(statement), {"Effect", "Principal", "Action", "Condition"})
                self.assertEqual(
                    (statement["Effect"], statement["Principal"], statement["Action"]),
                    ("Allow", {"Service": "bedrock.amazonaws.com"}, "sts:AssumeRole"),
                )
                self.assertEqual(
                    statement["Condition"],
                    {"StringEquals": {"aws:SourceAccount": ACCOUNT}, "ArnEquals": {"aws:SourceArn": self.JOBS}},
                )

    def test_jobs_read_only_their_input_and_write_only_their_output(self):
        staging = f"arn:aws:s3:::{STAGING_BUCKET}"
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                grants = Stack(overrides).grants("BatchRole")
                s3 = {(a, r) for a, r, _ in grants if a.startswith("s3:")}
                self.assertEqual(
                    s3,
                    {
                        ("s3:GetObject", f"{staging}/runs/*/input/*"),
                        ("s3:PutObject", f"{staging}/runs/*/output/*"),
                        ("s3:ListBucket", staging),
                    },
                )
                (listing,) = [json.loads(c) for a, _, c in grants if a == "s3:ListBucket"]
                self.assertEqual(listing["StringLike"], {"s3:prefix": ["runs/*/input/*", "runs/*/output/*"]})
                # Nothing but the staging bucket, Bedrock through a profile, and the data key.
                self.assertLessEqual({a.split(":")[0] for a, _, _ in grants}, {"s3", "bedrock", "kms"})
                self.assertLessEqual({a for a, _, _ in grants if a.startswith("bedrock:")}, {"bedrock:InvokeModel"})

    def test_the_operator_policy_is_attached_to_nothing(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                props = stack.properties("BatchOperatorPolicy")
                self.assertEqual(set(props) & {"Roles", "Users", "Groups"}, set())
                arn = stack.ref("BatchOperatorPolicy")
                for role in stack.of_type("AWS::IAM::Role"):
                    self.assertNotIn(arn, stack.properties(role).get("ManagedPolicyArns", []), role)
                self.assertEqual(stack.eval(stack.template["Outputs"]["BatchOperatorPolicyArn"]["Value"]), arn)

    def test_the_operator_passes_only_the_batch_role_and_only_to_bedrock(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                grants = Stack(overrides).grants("BatchOperatorPolicy")
                passes = [(r, json.loads(c)) for a, r, c in grants if a.startswith("iam:")]
                self.assertEqual(
                    passes,
                    [
                        (
                            f"arn:aws:iam::{ACCOUNT}:role/BatchRole",
                            {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
                        )
                    ],
                )
                for action, resource, condition in grants:
                    self.assertNotIn("*", action)
                    if resource == "*":
                        # The one action without a resource type, still held to this Region.
                        self.assertEqual(action, "bedrock:ListModelInvocationJobs")
                        self.assertEqual(json.loads(condition), {"StringEquals": {"aws:RequestedRegion": REGION}})
                    if action in ("bedrock:GetModelInvocationJob", "bedrock:StopModelInvocationJob"):
                        self.assertEqual(resource, self.JOBS)

    def test_the_probe_carries_the_staging_and_the_role_the_command_reads(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                env = stack.properties("ProbeFunction")["Environment"]["Variables"]
                outputs = {k: stack.eval(v["Value"]) for k, v in stack.template["Outputs"].items() if "Condition" not in v}
                self.assertEqual(env["BATCH_STAGING"], f"s3://{STAGING_BUCKET}/runs/")
                self.assertEqual(env["BATCH_ROLE_ARN"], f"arn:aws:iam::{ACCOUNT}:role/BatchRole")
                self.assertEqual(outputs["BatchStagingUri"], env["BATCH_STAGING"])
                self.assertEqual(outputs["BatchRoleArn"], env["BATCH_ROLE_ARN"])
                # ...and no function may use either (the probe stays read-only).
                for role in ("IngestRole", "EmbedIndexRole", "ProbeRole", "ProbeFunctionScheduleRole"):
                    for action, resource, _ in stack.grants(role):
                        self.assertNotIn(STAGING_BUCKET, resource, f"{role}: {action}")
                        self.assertNotEqual(action, "iam:PassRole", role)


class Network(unittest.TestCase):
    def test_functions_run_in_the_vpc_only_when_subnets_are_given(self):
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            for function in FUNCTIONS:
                with self.subTest(scenario=name, function=function):
                    vpc = stack.properties(function).get("VpcConfig")
                    if stack.condition("InVpc"):
                        self.assertEqual(vpc["SubnetIds"], stack.params["SubnetIds"])
                        self.assertEqual(vpc["SecurityGroupIds"], stack.params["SecurityGroupIds"])
                    else:
                        self.assertIsNone(vpc)

    def test_vpc_endpoints_on_request(self):
        endpoints = {
            "S3GatewayEndpoint": ("s3", "Gateway"),
            "SqsInterfaceEndpoint": ("sqs", "Interface"),
            "BedrockRuntimeInterfaceEndpoint": ("bedrock-runtime", "Interface"),
            "SecretsManagerInterfaceEndpoint": ("secretsmanager", "Interface"),
            "LogsInterfaceEndpoint": ("logs", "Interface"),
        }
        stack = Stack(SCENARIOS["onprem-everything"])
        p = stack.params
        # No Lambda endpoint: no function calls the Lambda API (ingest continues through the
        # intake queue).
        self.assertEqual(set(stack.of_type("AWS::EC2::VPCEndpoint")), set(endpoints))
        for name, (service, kind) in endpoints.items():
            with self.subTest(endpoint=name):
                props = stack.properties(name)
                self.assertEqual(props["ServiceName"], f"com.amazonaws.{REGION}.{service}")
                self.assertEqual(props["VpcEndpointType"], kind)
                self.assertEqual(props["VpcId"], p["VpcId"])
                if kind == "Gateway":
                    self.assertEqual(props["RouteTableIds"], p["RouteTableIds"])
                else:
                    self.assertIs(props["PrivateDnsEnabled"], True)
                    self.assertEqual(props["SubnetIds"], p["SubnetIds"])
                    self.assertEqual(props["SecurityGroupIds"], ["VpcEndpointSecurityGroup"])
        # HTTPS from each of the functions' security groups, and nothing else.
        group = stack.properties("VpcEndpointSecurityGroup")
        rules = list(group["SecurityGroupIngress"])
        rules += [stack.properties(n) for n in stack.of_type("AWS::EC2::SecurityGroupIngress")]
        self.assertEqual(
            sorted((r["IpProtocol"], r["FromPort"], r["ToPort"], r["SourceSecurityGroupId"]) for r in rules),
            sorted(("tcp", 443, 443, sg) for sg in p["SecurityGroupIds"]),
        )
        # The default allow-all egress rule is replaced by a loopback placeholder.
        self.assertEqual([(r["IpProtocol"], r["CidrIp"]) for r in group["SecurityGroupEgress"]], [("-1", "127.0.0.1/32")])
        # Without a secret there is no Secrets Manager endpoint; without the option, none at all.
        no_secret = dict(SCENARIOS["onprem-everything"], CreateEsSecret="false", EsSecretKmsKeyArn="")
        self.assertNotIn("SecretsManagerInterfaceEndpoint", Stack(no_secret).resources)
        for name in ("defaults", "existing-secret-profile"):
            self.assertEqual(Stack(SCENARIOS[name]).of_type("AWS::EC2::VPCEndpoint"), {})

    def test_rules_refuse_incomplete_settings(self):
        base = SCENARIOS["onprem-everything"]
        cases = {
            "VpcEndpointsNeedTheNetwork": dict(base, VpcId=""),
            "EsSecretCreatedOrReferenced": dict(base, EsSecretArn=SECRET_ARN),
            "SecurityGroupsWithSubnets": dict(SCENARIOS["defaults"], SubnetIds="subnet-0123456789abcdef0"),
        }
        for rule, overrides in cases.items():
            with self.subTest(rule=rule):
                failures = Stack(overrides).rule_failures()
                self.assertTrue(failures and all(f.startswith(rule) for f in failures), failures)
        routeless = dict(base, RouteTableIds="")
        self.assertTrue(any("RouteTableIds" in f for f in Stack(routeless).rule_failures()))


def references(node) -> set[str]:
    """Resources and parameters a template fragment refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value.split(".", 1)[0] if isinstance(value, str) else value[0])
            elif key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else value
                names = {m.split(".", 1)[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                found |= names - set(variables)
                found |= references(variables)
            else:
                found |= references(value)
    return {name for name in found if not name.startswith("AWS::")}


def mapping_of(stack: Stack, function: str) -> dict:
    """The properties of the one event source mapping that invokes `function`."""
    mappings = [
        props
        for props in (stack.properties(n) for n in stack.of_type("AWS::Lambda::EventSourceMapping"))
        if props["FunctionName"] == stack.ref(function)
    ]
    if len(mappings) != 1:
        raise AssertionError(f"{function} has {len(mappings)} event source mappings")
    return mappings[0]


# Each consumed queue, with its consumer and dead-letter queue.
CONSUMED_QUEUES = {
    "IntakeQueue": ("IngestFunction", "IntakeDeadLetterQueue"),
    "ChunkQueue": ("EmbedIndexFunction", "ChunkDeadLetterQueue"),
}


class Operations(unittest.TestCase):
    def test_visibility_timeout_is_at_least_six_function_timeouts(self):
        resources = sam_template()["Resources"]
        for queue, (function, _) in CONSUMED_QUEUES.items():
            with self.subTest(queue=queue):
                timeout = function_timeout(function)
                visibility = int(resources[queue]["Properties"]["VisibilityTimeout"])
                self.assertGreaterEqual(visibility, 6 * timeout)

    def test_es_timeout_fits_the_embed_index_timeout(self):
        """embed-index refuses to start (EmbedIndexConfig::least_function_timeout) unless its
        timeout holds one request at ES_TIMEOUT_SECS, the batch's other requests at their least
        useful time, the margin to act on the last answer and the response reserve: the largest
        EsTimeoutSecs the template takes must pass that rule, and the function must be told its
        timeout from the same place it is set."""
        least_request = rust_secs("shared/src/retry.rs", "MIN_REQUEST_TIME")
        answer_margin = rust_secs("shared/src/retry.rs", "ANSWER_MARGIN")
        reserve = rust_secs("shared/src/config.rs", "RESPONSE_RESERVE")
        requests = rust_secs("shared/src/config.rs", "BATCH_REQUESTS")
        margin = (requests - 1) * least_request + answer_margin + reserve
        self.assertEqual(margin, 19, "README and the template's ConstraintDescription say 19 s")
        spec = sam_template()["Parameters"]["EsTimeoutSecs"]
        timeout = function_timeout("EmbedIndexFunction")
        self.assertLessEqual(int(spec["MaxValue"]) + margin, timeout)
        self.assertLessEqual(int(spec["Default"]) + margin, timeout)
        self.assertIn(f"{timeout} s timeout", spec["ConstraintDescription"])
        self.assertIn(f"plus {margin} s", spec["ConstraintDescription"])
        variables = sam_template()["Resources"]["EmbedIndexFunction"]["Properties"]["Environment"]["Variables"]
        self.assertEqual(
            variables["FUNCTION_TIMEOUT_SECS"],
            sam_template()["Resources"]["EmbedIndexFunction"]["Properties"]["Timeout"],
            "one source for the timeout and the variable",
        )
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                rendered = Stack(overrides).properties("EmbedIndexFunction")
                self.assertEqual(int(rendered["Environment"]["Variables"]["FUNCTION_TIMEOUT_SECS"]), timeout)

    def test_redrive_and_retention(self):
        resources = sam_template()["Resources"]
        for queue_name, (_, dead_letter_queue) in CONSUMED_QUEUES.items():
            with self.subTest(queue=queue_name):
                queue = resources[queue_name]["Properties"]
                self.assertEqual(queue["RedrivePolicy"]["maxReceiveCount"], 5)
                self.assertEqual(queue["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": [dead_letter_queue, "Arn"]})
                dlq_retention = int(resources[dead_letter_queue]["Properties"]["MessageRetentionPeriod"])
                self.assertEqual(dlq_retention, 14 * 24 * 3600)
                # Standard queues keep the original enqueue time in the DLQ.
                self.assertGreater(dlq_retention, int(queue["MessageRetentionPeriod"]))

    def test_sqs_event_source_protects_bedrock_and_the_cluster(self):
        stack = Stack(SCENARIOS["defaults"])
        props = mapping_of(stack, "EmbedIndexFunction")
        self.assertEqual(props["EventSourceArn"], f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkQueue")
        self.assertEqual(props["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertEqual(props["ScalingConfig"]["MaximumConcurrency"], stack.params["EmbedMaxConcurrency"])
        self.assertGreaterEqual(int(props["MaximumBatchingWindowInSeconds"]), 1)
        self.assertLessEqual(int(props["BatchSize"]), 10)

    def test_intake_event_source_reports_batch_item_failures(self):
        stack = Stack(dict(SCENARIOS["defaults"], IngestMaxConcurrency="25"))
        props = mapping_of(stack, "IngestFunction")
        self.assertEqual(props["EventSourceArn"], f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeQueue")
        self.assertEqual(props["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertEqual(props["ScalingConfig"]["MaximumConcurrency"], "25")
        self.assertEqual(int(props["BatchSize"]), 5)
        self.assertEqual(int(props["MaximumBatchingWindowInSeconds"]), 1)
        # Only the two queues invoke functions.
        self.assertEqual(len(stack.of_type("AWS::Lambda::EventSourceMapping")), 2)
        spec = sam_template()["Parameters"]["IngestMaxConcurrency"]
        self.assertEqual((spec["MinValue"], spec["MaxValue"], spec["Default"]), (2, 1000, 10))

    def test_intended_loops_are_declared_and_nothing_else(self):
        # ingest continues through its own intake queue and embed-index requeues onto its own
        # chunk queue; each bounds that loop with a hop count in its messages. The probe keeps
        # Lambda's default (Terminate).
        functions = cfn_template()["Resources"]
        self.assertEqual(functions["IngestFunction"]["Properties"].get("RecursiveLoop"), "Allow")
        self.assertEqual(functions["EmbedIndexFunction"]["Properties"].get("RecursiveLoop"), "Allow")
        self.assertNotIn("RecursiveLoop", functions["ProbeFunction"]["Properties"])
        embed = sam_template()["Resources"]["EmbedIndexFunction"]["Properties"]["Environment"]["Variables"]
        self.assertGreater(int(embed["MAX_REQUEUES"]), 0)
        # SQS caps DelaySeconds at 900.
        self.assertLessEqual(int(embed["REQUEUE_DELAY_SECS"]), int(embed["REQUEUE_MAX_DELAY_SECS"]))
        self.assertLessEqual(int(embed["REQUEUE_MAX_DELAY_SECS"]), 900)

    def test_queue_alarms(self):
        stack = Stack(SCENARIOS["defaults"])
        alarms = {
            (p["MetricName"], p["Dimensions"][0]["Value"]): p
            for p in (stack.properties(n) for n in stack.of_type("AWS::CloudWatch::Alarm"))
            if p["Namespace"] == "AWS/SQS"
        }
        expected = {
            ("ApproximateNumberOfMessagesVisible", "ChunkDeadLetterQueue"): 0,
            ("ApproximateNumberOfMessagesVisible", "IntakeDeadLetterQueue"): 0,
            ("ApproximateAgeOfOldestMessage", "ChunkQueue"): 900,
            ("ApproximateAgeOfOldestMessage", "IntakeQueue"): 3600,
        }
        self.assertEqual(set(alarms), set(expected))
        for key, threshold in expected.items():
            with self.subTest(alarm=key):
                props = alarms[key]
                self.assertEqual(props["Dimensions"], [{"Name": "QueueName", "Value": key[1]}])
                self.assertEqual(props["Statistic"], "Maximum")
                self.assertEqual(props["ComparisonOperator"], "GreaterThanThreshold")
                self.assertEqual(int(props["Threshold"]), threshold)
                self.assertEqual(props["AlarmActions"], ["AlarmTopic"])

    def test_reserved_concurrency_is_optional(self):
        self.assertNotIn("ReservedConcurrentExecutions", Stack(SCENARIOS["defaults"]).properties("IngestFunction"))
        stack = Stack(SCENARIOS["onprem-everything"])
        self.assertEqual(stack.properties("IngestFunction")["ReservedConcurrentExecutions"], "20")
        self.assertEqual(stack.properties("EmbedIndexFunction")["ReservedConcurrentExecutions"], "10")

    def test_outputs_an_operator_needs(self):
        outputs = set(sam_template()["Outputs"])
        self.assertLessEqual(
            {
                "SourceBucketName",
                "ChunkQueueUrl",
                "DeadLetterQueueUrl",
                "IntakeQueueUrl",
                "IntakeDeadLetterQueueUrl",
                "IngestFunctionName",
                "EmbedIndexFunctionName",
                "ProbeFunctionName",
                "ProbeLogGroupName",
                "BatchStagingUri",
                "BatchRoleArn",
                "BatchOperatorPolicyArn",
            },
            outputs,
        )


class DurableIntake(unittest.TestCase):
    """S3 notifications reach ingest through the intake queue, never by direct invocation."""

    EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:LifecycleExpiration:*"]

    def test_bucket_notifies_the_intake_queue_of_creations_removals_and_expirations(self):
        cases = {
            "no filter": (SCENARIOS["defaults"], None),
            "prefix": (SCENARIOS["onprem-everything"], [{"Name": "prefix", "Value": "incoming/"}]),
            "suffix": (dict(SCENARIOS["defaults"], SourceSuffix=".jsonl"), [{"Name": "suffix", "Value": ".jsonl"}]),
            "both": (
                dict(SCENARIOS["defaults"], SourcePrefix="in/", SourceSuffix=".json"),
                [{"Name": "prefix", "Value": "in/"}, {"Name": "suffix", "Value": ".json"}],
            ),
        }
        for case, (overrides, rules) in cases.items():
            with self.subTest(case=case):
                stack = Stack(overrides)
                notifications = stack.properties("SourceBucket")["NotificationConfiguration"]
                self.assertEqual(set(notifications), {"QueueConfigurations"}, "no Lambda or topic destination")
                configurations = notifications["QueueConfigurations"]
                self.assertEqual(sorted(c["Event"] for c in configurations), sorted(self.EVENTS))
                for configuration in configurations:
                    self.assertEqual(configuration["Queue"], f"arn:aws:sqs:{REGION}:{ACCOUNT}:IntakeQueue")
                    if rules is None:
                        self.assertNotIn("Filter", configuration)
                    else:
                        self.assertEqual(configuration["Filter"], {"S3Key": {"Rules": rules}})

    def test_lifecycle_transitions_are_not_subscribed(self):
        events = [c["Event"] for c in Stack(SCENARIOS["defaults"]).properties("SourceBucket")["NotificationConfiguration"]["QueueConfigurations"]]
        self.assertFalse([e for e in events if "Transition" in e])

    def test_the_bucket_waits_for_the_queue_policy(self):
        # S3 checks that it may write to the destination when the configuration is put.
        depends = as_list(sam_template()["Resources"]["SourceBucket"].get("DependsOn", []))
        self.assertIn("IntakeQueuesPolicy", depends)
        # ...and the policy must not wait for the bucket (circular dependency).
        self.assertEqual(references(sam_template()["Resources"]["IntakeQueuesPolicy"]), {"IntakeQueue", "IntakeDeadLetterQueue"})

    def test_ingest_has_no_s3_event_and_consumes_the_intake_queue(self):
        events = sam_template()["Resources"]["IngestFunction"]["Properties"]["Events"]
        self.assertEqual({e["Type"] for e in events.values()}, {"SQS"})
        # What SAM would have added for an S3 event.
        self.assertNotIn("LambdaConfigurations", json.dumps(cfn_template()["Resources"]["SourceBucket"]))

    def test_functions_are_told_the_intake_queues(self):
        stack = Stack(SCENARIOS["defaults"])
        intake = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/IntakeQueue"
        ingest = stack.properties("IngestFunction")["Environment"]["Variables"]
        self.assertEqual(ingest["INGEST_QUEUE_URL"], intake)
        probe = stack.properties("ProbeFunction")["Environment"]["Variables"]
        self.assertEqual(probe["INGEST_QUEUE_URL"], intake)
        self.assertEqual(probe["INGEST_DEAD_LETTER_QUEUE_URL"], f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/IntakeDeadLetterQueue")
        embed = stack.properties("EmbedIndexFunction")["Environment"]["Variables"]
        self.assertEqual((embed["REQUEUE_MAX_DELAY_SECS"], embed["MAX_REQUEUES"]), ("900", "288"))


class ModelIds(unittest.TestCase):
    """One list of inference-profile geographies: the code's (checked against the template by
    a Rust test), the template's pattern and condition, these tests' and the stand-in's."""

    def geographies(self) -> set:
        pattern = sam_template()["Parameters"]["EmbeddingModelId"]["AllowedPattern"]
        match = re.match(r"\^\(\(([a-z|-]+)\)", pattern)
        self.assertIsNotNone(match, pattern)
        return set(match.group(1).split("|"))

    def test_the_pattern_the_condition_and_the_stand_in_agree(self):
        import importlib.util

        geographies = self.geographies()
        self.assertEqual(geographies, PROFILE_GEOGRAPHIES)
        condition = sam_template()["Conditions"]["EmbeddingModelIsProfile"]["Fn::Or"]
        self.assertEqual({c["Fn::Equals"][1] for c in condition}, geographies)
        spec = importlib.util.spec_from_file_location("bedrock_stub", ROOT / "dev" / "bedrock_stub.py")
        stub = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stub)
        self.assertEqual(set(stub.PROFILE_PREFIXES), geographies)

    def test_the_pattern_takes_profiles_and_bare_ids(self):
        pattern = sam_template()["Parameters"]["EmbeddingModelId"]["AllowedPattern"]
        for good in ("cohere.embed-v4:0", "apac.cohere.embed-v4:0", "us-gov.amazon.titan-embed-text-v2:0"):
            self.assertRegex(good, pattern)
        for bad in ("cohere", "arn:aws:bedrock:x", " us.cohere.embed-v4:0"):
            self.assertNotRegex(bad, pattern)


class LocalInvokeEnvironment(unittest.TestCase):
    """`sam local invoke --env-vars events/env.json` only overrides declared variables."""

    @staticmethod
    def declared() -> dict[str, set[str]]:
        resources = sam_template()["Resources"]
        return {f: set(resources[f]["Properties"]["Environment"]["Variables"]) for f in FUNCTIONS}

    def test_env_json_covers_every_declared_variable(self):
        env = json.loads(ENV_JSON.read_text())
        shared = set(env.get("Parameters", {}))
        for function, variables in self.declared().items():
            with self.subTest(function=function):
                missing = variables - set(env.get(function, {})) - shared
                self.assertEqual(missing, set(), f"add to events/env.json[{function!r}] or ['Parameters']")

    def test_env_json_sets_nothing_the_template_does_not_declare(self):
        env = json.loads(ENV_JSON.read_text())
        declared = self.declared()
        self.assertLessEqual(set(env) - {"Parameters"}, set(declared))
        everywhere = set().union(*declared.values())
        self.assertEqual(set(env.get("Parameters", {})) - everywhere, set(), "sam local would ignore these")
        for function, variables in env.items():
            if function != "Parameters":
                self.assertEqual(set(variables) - declared[function], set(), f"{function}: sam local would ignore these")

    def test_environment_fits_lambdas_4_kb_with_room_for_a_ca_certificate(self):
        for name, overrides in SCENARIOS.items():
            stack = Stack(overrides)
            for function in FUNCTIONS:
                with self.subTest(scenario=name, function=function):
                    variables = stack.properties(function)["Environment"]["Variables"]
                    size = sum(len(k) + len(str(v)) for k, v in variables.items())
                    self.assertLess(size, 2 * 1024, f"{function}: {size} bytes of environment")


if __name__ == "__main__":
    unittest.main()


# ---------------------------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------------------------
SHARED_SRC = ROOT / "shared" / "src"


def emitted_metrics() -> dict[str, set[frozenset[str]]]:
    """The metrics the functions emit (EMF), each with the dimension sets it is emitted under,
    read from the code that emits them."""
    emitted: dict[str, set[frozenset[str]]] = {}

    def add(names, dimensions):
        for name in names:
            emitted.setdefault(name, set()).add(frozenset(dimensions))

    metric_calls = re.compile(r'\.(?:count|value|metric)\(\s*"(\w+)"')
    # embed-index: one set by Function and Model, and ChunksFailed by Reason too.
    stats = (SHARED_SRC / "embed_index" / "stats.rs").read_text()
    emit = stats[stats.index("pub(super) fn emit("):]
    by_reason = emit.index('.dimension("Reason"')
    add(metric_calls.findall(emit[:by_reason]), {"Function", "Model"})
    add(metric_calls.findall(emit[by_reason:]), {"Function", "Model", "Reason"})
    # ingest: by Function.
    ingest = (SHARED_SRC / "ingest" / "mod.rs").read_text()
    start = ingest.index('MetricSet::new("ingest")')
    add(metric_calls.findall(ingest[start:ingest.index(";", ingest.index(".count(", start))]), {"Function"})
    # probe: by Check, and every figure a check measured.
    probe = (SHARED_SRC / "probe.rs").read_text()
    sets = probe[probe.index("pub fn metric_sets("):]
    add(metric_calls.findall(sets[:sets.index("sets\n")]), {"Check"})
    for path in (SHARED_SRC / "probe").glob("*.rs"):
        add(re.findall(r'\.metric\(\s*"(\w+)"', path.read_text()), {"Check"})
    # the scheduled reconcile: by Function.
    reconcile = (SHARED_SRC / "reconcile.rs").read_text()
    start = reconcile.index('MetricSet::new("reconcile")')
    add(metric_calls.findall(reconcile[start:reconcile.index(";", start + 40)]), {"Function"})
    return emitted


def rendered_dashboard() -> dict:
    """The dashboard body with every ${...} replaced by a name the test can trace back."""
    body = sam_template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{([^}]+)\}", r"REF(\1)", body))


class Dashboard(unittest.TestCase):
    def setUp(self):
        self.body = rendered_dashboard()
        self.resources = sam_template()["Resources"]
        self.emitted = emitted_metrics()

    def metric_widgets(self):
        return [w for w in self.body["widgets"] if w["type"] == "metric"]

    def test_the_code_emits_what_the_reader_of_the_emitted_metrics_expects(self):
        # The reader above is regular expressions over the code: it must find the metrics
        # everyone knows are there, under the right dimensions.
        self.assertIn(frozenset({"Function", "Model"}), self.emitted["ChunksIndexed"])
        self.assertIn(frozenset({"Function", "Model", "Reason"}), self.emitted["ChunksFailed"])
        self.assertIn(frozenset({"Function"}), self.emitted["RecordsRead"])
        self.assertIn(frozenset({"Check"}), self.emitted["Up"])
        self.assertIn(frozenset({"Check"}), self.emitted["CertDaysLeft"])
        self.assertNotIn("ChunksFailed", {m for m, d in self.emitted.items() if frozenset({"Function", "Model"}) in d})

    def test_every_sakuin_metric_is_emitted_with_those_dimensions(self):
        seen = 0
        for widget in self.metric_widgets():
            for row in widget["properties"]["metrics"]:
                options = row[-1] if isinstance(row[-1], dict) else {}
                if "expression" in options:
                    search = re.fullmatch(
                        r"SEARCH\('\{sakuin,([\w,]+)\} MetricName=\"(\w+)\"[^']*', '\w+', \d+\)",
                        options["expression"],
                    )
                    self.assertIsNotNone(search, options["expression"])
                    dims, name = frozenset(search.group(1).split(",")), search.group(2)
                else:
                    namespace, name, *pairs = [v for v in row if not isinstance(v, dict)]
                    if namespace != "sakuin":
                        continue
                    dims = frozenset(pairs[0::2])
                    if "Model" in dims:
                        self.assertEqual(pairs[pairs.index("Model") + 1], "REF(EmbeddingModelId)")
                seen += 1
                with self.subTest(widget=widget["properties"]["title"], metric=name):
                    self.assertIn(name, self.emitted, "no function emits it")
                    self.assertIn(dims, self.emitted[name], "emitted under other dimensions")
        self.assertGreater(seen, 20)

    def test_aws_metrics_name_resources_of_this_stack(self):
        kinds = {
            "AWS/SQS": ("QueueName", "AWS::SQS::Queue", ".QueueName"),
            "AWS/Lambda": ("FunctionName", "AWS::Serverless::Function", ""),
        }
        for widget in self.metric_widgets():
            for row in widget["properties"]["metrics"]:
                values = [v for v in row if not isinstance(v, dict)]
                if not values or values[0] not in kinds:
                    continue
                dimension, resource_type, suffix = kinds[values[0]]
                self.assertEqual(values[2], dimension, row)
                reference = re.fullmatch(r"REF\((\w+)" + re.escape(suffix) + r"\)", values[3])
                self.assertIsNotNone(reference, row)
                self.assertEqual(self.resources[reference.group(1)]["Type"], resource_type, row)

    def test_every_alarm_is_on_it(self):
        alarms = {n for n, r in self.resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
        (widget,) = [w for w in self.body["widgets"] if w["type"] == "alarm"]
        shown = {re.fullmatch(r"REF\((\w+)\.Arn\)", a).group(1) for a in widget["properties"]["alarms"]}
        self.assertEqual(shown, alarms)

    def test_widgets_tile_the_grid_without_overlap(self):
        taken = set()
        for widget in self.body["widgets"]:
            self.assertLessEqual(widget["x"] + widget["width"], 24, widget)
            cells = {
                (x, y)
                for x in range(widget["x"], widget["x"] + widget["width"])
                for y in range(widget["y"], widget["y"] + widget["height"])
            }
            self.assertFalse(cells & taken, widget.get("properties", {}).get("title"))
            taken |= cells

    def test_the_stack_outputs_its_url(self):
        url = sam_template()["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
        self.assertIn("#dashboards/dashboard/${Dashboard}", url)
