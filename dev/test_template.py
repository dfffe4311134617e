"""Checks of template.yaml that a security reviewer relies on.

The SAM template is transformed offline with the SAM translator (what `sam deploy` sends to
CloudFormation), then rendered for several parameter scenarios by a small evaluator of the
intrinsic functions and conditions it uses. For each function the IAM it gets is flattened into
(action, resource, condition) grants and compared with the exact set it needs: any widening -
a new action, a wildcard, a broader resource, a dropped condition, an AWS managed policy -
fails a test.

Also checked: the queue timing rules, data-at-rest and in-transit settings, the VPC endpoint
option, the parameter Rules, and that events/env.json covers every environment variable the
template declares (`sam local invoke --env-vars` silently ignores undeclared ones).

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

    def grants(self, role: str) -> set[tuple[str, str, str]]:
        documents, foreign = self.role_documents(role)
        if foreign:
            raise AssertionError(f"{role} has policies defined outside the stack: {foreign}")
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
    in_vpc = "".join(p["SubnetIds"]) != ""
    data_key = p["DataKmsKeyArn"]
    bucket = f"arn:aws:s3:::{BUCKET}"
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkQueue"
    dead_letter_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkDeadLetterQueue"

    def logs(function: str) -> set:
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{STACK_NAME}-{function}:*"
        return {("logs:CreateLogStream", group, ""), ("logs:PutLogEvents", group, "")}

    eni = {(action, "*", "") for action in VPC_ENI_ACTIONS} if in_vpc else set()

    model = p["EmbeddingModelId"]
    if model.split(".", 1)[0] in PROFILE_GEOGRAPHIES:
        profile = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{model}"
        base = model.split(".", 1)[1]
        through_profile = normalise({"StringEquals": {"bedrock:InferenceProfileArn": profile}})
        bedrock = {
            ("bedrock:InvokeModel", profile, ""),
            ("bedrock:InvokeModel", f"arn:aws:bedrock:*::foundation-model/{base}", through_profile),
            ("bedrock:InvokeModel", f"arn:aws:bedrock:::foundation-model/{base}", through_profile),
        }
    else:
        bedrock = {("bedrock:InvokeModel", f"arn:aws:bedrock:{REGION}::foundation-model/{model}", "")}

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
        ("s3:GetObject", f"{bucket}/*", ""),
        ("s3:GetObjectVersion", f"{bucket}/*", ""),
        ("s3:ListBucket", bucket, ""),
        ("s3:PutObject", f"{bucket}/{p['RejectsPrefix']}*", ""),
        ("sqs:SendMessage", queue, ""),
        # Continues long work (a large object, a backfill) in a fresh invocation of itself.
        ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:IngestFunction", ""),
    }
    embed_index = logs("embed-index") | eni | bedrock | secret | {
        ("sqs:ReceiveMessage", queue, ""),
        ("sqs:DeleteMessage", queue, ""),
        ("sqs:GetQueueAttributes", queue, ""),
        ("sqs:ChangeMessageVisibility", queue, ""),
        # Requeues chunks with their vectors while Elasticsearch is unavailable.
        ("sqs:SendMessage", queue, ""),
    }
    probe = logs("probe") | eni | bedrock | secret | {
        ("s3:ListBucket", bucket, ""),
        ("s3:GetBucketLocation", bucket, ""),
        ("sqs:GetQueueAttributes", queue, ""),
        ("sqs:GetQueueAttributes", dead_letter_queue, ""),
    }
    if data_key:
        ingest |= {("kms:Decrypt", data_key, via("s3", "sqs")), ("kms:GenerateDataKey", data_key, via("s3", "sqs"))}
        embed_index |= {("kms:Decrypt", data_key, via("sqs")), ("kms:GenerateDataKey", data_key, via("sqs"))}
    return {
        "IngestRole": ingest,
        "EmbedIndexRole": embed_index,
        "ProbeRole": probe,
        # Created by SAM for the ScheduleV2 event.
        "ProbeFunctionScheduleRole": {
            ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ProbeFunction", "")
        },
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
} | VPC_ENI_ACTIONS


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
                    {"IngestRole", "EmbedIndexRole", "ProbeRole", "ProbeFunctionScheduleRole"},
                )
                self.assertLessEqual(
                    set(stack.of_type("AWS::IAM::ManagedPolicy")), {"EmbeddingInvokePolicy", "EsSecretReadPolicy"}
                )
                self.assertEqual(set(stack.of_type("AWS::IAM::Policy")), {"IngestContinuePolicy"})
                self.assertEqual(stack.properties("IngestContinuePolicy")["Roles"], ["IngestRole"])
                for kind in ("AWS::IAM::User", "AWS::IAM::Group", "AWS::IAM::AccessKey"):
                    self.assertEqual(stack.of_type(kind), {}, kind)

    def test_each_role_grants_exactly_what_its_function_needs(self):
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
                            self.assertIn(action, VPC_ENI_ACTIONS, f"{role}: {action} on *")
                            self.assertTrue(stack.condition("InVpc"))

    def test_probe_is_read_only(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                actions = {a for a, _, _ in Stack(overrides).grants("ProbeRole")}
                self.assertLessEqual(actions, READ_ONLY_ACTIONS)

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

    def test_s3_may_invoke_ingest_only_from_this_account(self):
        stack = Stack(SCENARIOS["defaults"])
        permissions = stack.of_type("AWS::Lambda::Permission")
        self.assertEqual(len(permissions), 1)
        props = stack.properties(next(iter(permissions)))
        self.assertEqual(props["Principal"], "s3.amazonaws.com")
        self.assertEqual(props["SourceAccount"], ACCOUNT)


class DataProtection(unittest.TestCase):
    def test_bucket_is_private_encrypted_and_tls_only(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                bucket = stack.properties("SourceBucket")
                self.assertEqual(set(bucket["PublicAccessBlockConfiguration"].values()), {True})
                (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                default = rule["ServerSideEncryptionByDefault"]
                if stack.params["DataKmsKeyArn"]:
                    self.assertEqual(default, {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN})
                else:
                    self.assertEqual(default, {"SSEAlgorithm": "AES256"})
                versioned = stack.params["EnableBucketVersioning"] == "true"
                self.assertEqual(bucket.get("VersioningConfiguration"), {"Status": "Enabled"} if versioned else None)
                policy = stack.properties("SourceBucketPolicy")["PolicyDocument"]["Statement"]
                insecure = [s for s in policy if s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"]
                self.assertEqual(len(insecure), 1)
                self.assertEqual((insecure[0]["Effect"], insecure[0]["Principal"], insecure[0]["Action"]), ("Deny", "*", "s3:*"))
                self.assertEqual(set(insecure[0]["Resource"]), {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"})
                self.assertEqual(self._deletion(stack, "SourceBucket"), "RetainExceptOnCreate")

    @staticmethod
    def _deletion(stack: Stack, name: str) -> str:
        return stack.resources[name].get("DeletionPolicy", "Delete")

    def test_queues_are_encrypted_and_tls_only(self):
        for name, overrides in SCENARIOS.items():
            with self.subTest(scenario=name):
                stack = Stack(overrides)
                for queue in ("ChunkQueue", "ChunkDeadLetterQueue"):
                    props = stack.properties(queue)
                    if stack.params["DataKmsKeyArn"]:
                        self.assertEqual(props.get("KmsMasterKeyId"), KEY_ARN)
                        self.assertNotIn("SqsManagedSseEnabled", props)
                    else:
                        self.assertIs(props.get("SqsManagedSseEnabled"), True)
                policy = stack.properties("ChunkQueuesPolicy")
                self.assertEqual(len(policy["Queues"]), 2)
                (statement,) = policy["PolicyDocument"]["Statement"]
                self.assertEqual((statement["Effect"], statement["Action"]), ("Deny", "sqs:*"))
                self.assertEqual(statement["Condition"], {"Bool": {"aws:SecureTransport": "false"}})
                self.assertEqual(len(statement["Resource"]), 2)

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
            "LambdaInterfaceEndpoint": ("lambda", "Interface"),
            "SecretsManagerInterfaceEndpoint": ("secretsmanager", "Interface"),
            "LogsInterfaceEndpoint": ("logs", "Interface"),
        }
        stack = Stack(SCENARIOS["onprem-everything"])
        p = stack.params
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


class Operations(unittest.TestCase):
    def test_visibility_timeout_is_at_least_six_function_timeouts(self):
        resources = sam_template()["Resources"]
        timeout = int(resources["EmbedIndexFunction"]["Properties"]["Timeout"])
        visibility = int(resources["ChunkQueue"]["Properties"]["VisibilityTimeout"])
        self.assertGreaterEqual(visibility, 6 * timeout)

    def test_redrive_and_retention(self):
        resources = sam_template()["Resources"]
        queue = resources["ChunkQueue"]["Properties"]
        self.assertEqual(queue["RedrivePolicy"]["maxReceiveCount"], 5)
        self.assertEqual(queue["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": ["ChunkDeadLetterQueue", "Arn"]})
        dlq_retention = int(resources["ChunkDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"])
        self.assertEqual(dlq_retention, 14 * 24 * 3600)
        self.assertGreater(dlq_retention, int(queue["MessageRetentionPeriod"]))

    def test_sqs_event_source_protects_bedrock_and_the_cluster(self):
        stack = Stack(SCENARIOS["defaults"])
        (mapping,) = stack.of_type("AWS::Lambda::EventSourceMapping")
        props = stack.properties(mapping)
        self.assertEqual(props["EventSourceArn"], f"arn:aws:sqs:{REGION}:{ACCOUNT}:ChunkQueue")
        self.assertEqual(props["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertEqual(props["ScalingConfig"]["MaximumConcurrency"], stack.params["EmbedMaxConcurrency"])
        self.assertGreaterEqual(int(props["MaximumBatchingWindowInSeconds"]), 1)
        self.assertLessEqual(int(props["BatchSize"]), 10)

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
                "IngestFunctionName",
                "EmbedIndexFunctionName",
                "ProbeFunctionName",
                "ProbeLogGroupName",
            },
            outputs,
        )


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
