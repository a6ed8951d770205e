"""deploy/ecs/payments.yaml: cfn-lint clean, and what the service relies on in production."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from ._tools import (
    API_CLIENT_SETTINGS,
    API_ONLY_SECRETS,
    API_SECRETS,
    REPO,
    WORKER_CALLBACK_SETTINGS,
    WORKER_SECRETS,
    run_tool,
)

TEMPLATE = REPO / "deploy" / "ecs" / "payments.yaml"
README = REPO / "deploy" / "ecs" / "README.md"
SECRET_NAMES = {"REDIS_URL", "STRIPE_API_KEY", "API_KEYS", "API_CLIENTS", "FLOWER_BASIC_AUTH",
                "STRIPE_WEBHOOK_SECRET", "CALLBACK_SIGNING_SECRETS",
                "PAYMENT_ID_SECRET"}  # fmt: skip
# Secrets a stack may go without: the rule or the container's Fn::If says when.
OPTIONAL_SECRET_ARNS = {"FlowerBasicAuthSecretArn", "ApiClientsSecretArn"}
# What one worker task (1 vCPU, threads pool of 128) completes when only Stripe's latency
# limits it; deploy/ecs/README.md states the same figure and how to measure it.
PER_TASK_CHARGES_PER_SECOND = 100
ACCEPTABLE_QUEUEING_SECONDS = 30


@pytest.fixture(scope="module")
def template() -> Any:
    from ._tools import load_cfn

    return load_cfn(TEMPLATE)


def resources_of(template: Any, rtype: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def container(template: Any, name: str) -> Any:
    for task in resources_of(template, "AWS::ECS::TaskDefinition").values():
        for c in task["Properties"]["ContainerDefinitions"]:
            if c["Name"] == name:
                return c
    raise AssertionError(f"no container {name!r}")


def env_entries(c: Any, key: str = "Environment", value: str = "Value") -> dict[str, Any]:
    """Name -> Value of a container's Environment, entries under Fn::If included."""
    out: dict[str, Any] = {}
    for entry in c.get(key, []):
        branches = entry["Fn::If"][1:] if "Fn::If" in entry else [entry]
        for branch in branches:
            if isinstance(branch, dict) and "Name" in branch:
                out[branch["Name"]] = branch[value]
    return out


def secret_entries(c: Any) -> dict[str, Any]:
    """Name -> ValueFrom of a container's Secrets, entries under Fn::If included."""
    return env_entries(c, "Secrets", "ValueFrom")


def test_cfn_lint_clean() -> None:
    result = run_tool("cfn-lint", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_gets_120_s_to_finish_in_flight_charges(template: Any) -> None:
    assert container(template, "worker")["StopTimeout"] == 120


@pytest.mark.parametrize(
    ("name", "secrets"),
    [
        # REDIS_URL carries the ElastiCache AUTH token.
        ("api", {"REDIS_URL", "STRIPE_API_KEY", "API_KEYS", "API_CLIENTS",
                 "STRIPE_WEBHOOK_SECRET", "PAYMENT_ID_SECRET", "CALLBACK_SIGNING_SECRETS"}),
        ("worker", {"REDIS_URL", "STRIPE_API_KEY", "CALLBACK_SIGNING_SECRETS", "API_CLIENTS"}),
        # Importing worker.celery_app validates settings: production needs the Stripe key.
        ("flower", {"REDIS_URL", "FLOWER_BASIC_AUTH", "STRIPE_API_KEY"}),
    ],
)  # fmt: skip
def test_secrets_come_from_secrets_manager(template: Any, name: str, secrets: set[str]) -> None:
    c = container(template, name)
    assert not set(env_entries(c)) & SECRET_NAMES, f"{name}: secret in plain Environment"
    from_secrets = secret_entries(c)
    assert set(from_secrets) == secrets
    role = template["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]
    readable = str(role["PolicyDocument"]["Statement"])
    for value in from_secrets.values():
        param = value["Ref"]
        assert template["Parameters"][param]["Type"] == "String"
        assert str({"Ref": param}) in readable, f"the tasks may not read {param}"
        if param in OPTIONAL_SECRET_ARNS - {"FlowerBasicAuthSecretArn"}:
            # Optional: API_KEYS alone is a configuration.
            assert template["Parameters"][param]["Default"] == ""
        elif param == "FlowerBasicAuthSecretArn":  # optional while Flower is off; a rule insists
            assert not rules_pass(
                template,
                with_defaults(
                    template, CertificateArn=CERT, EnableFlower="true", EnableExecuteCommand="true"
                ),
            )
        else:
            assert "Default" not in template["Parameters"][param]


def test_every_container_logs_to_cloudwatch(template: Any) -> None:
    for task in resources_of(template, "AWS::ECS::TaskDefinition").values():
        for c in task["Properties"]["ContainerDefinitions"]:
            assert c["LogConfiguration"]["LogDriver"] == "awslogs", c["Name"]
        assert task["Properties"]["RequiresCompatibilities"] == ["FARGATE"]


def test_api_behind_alb_checked_on_readyz(template: Any) -> None:
    (tg,) = resources_of(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert tg["Properties"]["HealthCheckPath"] == "/readyz"
    assert tg["Properties"]["Port"] == 8080
    assert tg["Properties"]["TargetType"] == "ip"
    services = resources_of(template, "AWS::ECS::Service")
    (api,) = [s for s in services.values() if "LoadBalancers" in s["Properties"]]
    assert api["Properties"]["LoadBalancers"][0]["ContainerPort"] == 8080
    assert api["Properties"]["LoadBalancers"][0]["ContainerName"] == "api"


def test_redis_url_comes_from_one_secret_the_tasks_may_read(template: Any) -> None:
    for name in ("api", "worker", "flower"):
        c = container(template, name)
        assert "REDIS_URL" not in env_entries(c), "the URL carries the AUTH token"
        secrets = secret_entries(c)
        assert secrets["REDIS_URL"] == {"Ref": "RedisUrlSecretArn"}
        assert env_entries(c)["ENVIRONMENT"] == "production"
    assert "RedisUrl" not in template["Parameters"], "a plain parameter shows in the console"
    (statement,) = template["Resources"]["ExecutionRole"]["Properties"]["Policies"][0][
        "PolicyDocument"
    ]["Statement"]
    assert {"Ref": "RedisUrlSecretArn"} in statement["Resource"]


def test_readme_documents_tls_and_auth_for_redis() -> None:
    text = README.read_text(encoding="utf-8")
    assert "rediss://:" in text, "the example URL shows the AUTH token's place"
    assert "ssl_cert_reqs=required" in text, "kombu skips certificate checks without it"


# ---------------------------------------------------------------- conditions, as CloudFormation


def evaluate(template: Any, node: Any, params: dict[str, str]) -> Any:
    """Fn::Equals / Not / And / Or / Condition / Ref over parameter values (defaults filled)."""
    if isinstance(node, dict) and len(node) == 1:
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return params[arg]
        if fn in ("Condition", "Fn::Condition"):  # the loader spells !Condition Fn::Condition
            return evaluate(template, template["Conditions"][arg], params)
        if fn == "Fn::Equals":
            a, b = (evaluate(template, x, params) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not evaluate(template, arg[0], params)
        if fn == "Fn::And":
            return all(evaluate(template, x, params) for x in arg)
        if fn == "Fn::Or":
            return any(evaluate(template, x, params) for x in arg)
    return node


def with_defaults(template: Any, **given: str) -> dict[str, str]:
    params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    params.update(given)
    return params


def rules_pass(template: Any, params: dict[str, str]) -> bool:
    """Whether CloudFormation would accept these parameters (the template's Rules)."""
    for rule in template.get("Rules", {}).values():
        if "RuleCondition" in rule and not evaluate(template, rule["RuleCondition"], params):
            continue
        if not all(evaluate(template, a["Assert"], params) for a in rule["Assertions"]):
            return False
    return True


def resolve(template: Any, node: Any, params: dict[str, str]) -> Any:
    """Fn::If resolved everywhere; AWS::NoValue branches dropped."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            cond, yes, no = node["Fn::If"]
            chosen = yes if evaluate(template, template["Conditions"][cond], params) else no
            return resolve(template, chosen, params)
        resolved = {k: resolve(template, v, params) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(node, list):
        items = [resolve(template, v, params) for v in node]
        return [v for v in items if v != {"Ref": "AWS::NoValue"}]
    return node


def created(template: Any, params: dict[str, str]) -> dict[str, Any]:
    """The resources a stack with these parameters has, their Fn::If resolved."""
    out = {}
    for name, res in template["Resources"].items():
        cond = res.get("Condition")
        if cond is None or evaluate(template, template["Conditions"][cond], params):
            out[name] = resolve(template, res, params)
    return out


def forwarding_listeners(resources: dict[str, Any]) -> dict[str, str]:
    """Listener name -> protocol, for listeners that pass requests on to the API."""
    return {
        name: r["Properties"]["Protocol"]
        for name, r in resources.items()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
        and any(a["Type"] == "forward" for a in r["Properties"]["DefaultActions"])
    }


CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"


CLIENTS_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/api-clients-AbCdEf"
PAYMENT_ID_ARN = (
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/payment-id-secret-AbCdEf"
)


def task_env(resources: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Environment, Secrets) of a container of a stack, Fn::If resolved."""
    for res in resources.values():
        if res["Type"] == "AWS::ECS::TaskDefinition":
            for c in res["Properties"]["ContainerDefinitions"]:
                if c["Name"] == name:
                    return env_entries(c), secret_entries(c)
    raise AssertionError(f"no container {name!r}")


# Every process gets each secret and client setting its code reads (when the stack has it);
# not CALLBACK_ALLOW_PRIVATE_NETWORKS, which production refuses.
URL_RULES = {*WORKER_CALLBACK_SETTINGS} - {"CALLBACK_ALLOW_PRIVATE_NETWORKS"}
READS = {
    "worker": ({*WORKER_SECRETS}, URL_RULES),
    "api": ({*API_SECRETS}, {*API_CLIENT_SETTINGS, *URL_RULES}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(READS))
def test_each_process_gets_the_secrets_and_client_settings_it_reads(
    template: Any, name: str
) -> None:
    secrets, settings = READS[name]
    params = with_defaults(
        template,
        CertificateArn=CERT,
        ApiClientsSecretArn=CLIENTS_ARN,
        PaymentIdSecretArn=PAYMENT_ID_ARN,
        CallbackEndpoints="shop-eu=https://shop.example.com/hooks",
        CallbackAllowedHosts=".example.com",
    )
    resources = created(template, params)
    env, from_secrets = task_env(resources, name)
    assert set(from_secrets) >= secrets, f"{name} lacks {sorted(secrets - set(from_secrets))}"
    assert set(env) >= settings, f"{name} lacks {sorted(settings - set(env))}"
    assert "CALLBACK_ALLOW_PRIVATE_NETWORKS" not in env
    (statement,) = resources["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    for value in from_secrets.values():
        assert value in statement["Resource"], f"{name}: the tasks may not read {value}"


def test_workers_get_api_clients_and_the_callback_secrets(template: Any) -> None:
    """The workers sign callbacks with CALLBACK_SIGNING_SECRETS, or with a client's own
    callback_signing_secrets from API_CLIENTS: the same secret as the API's."""
    with_clients = created(template, with_defaults(template, CertificateArn=CERT,
                                                   ApiClientsSecretArn=CLIENTS_ARN))  # fmt: skip
    _, worker = task_env(with_clients, "worker")
    _, api = task_env(with_clients, "api")
    assert worker["API_CLIENTS"] == api["API_CLIENTS"] == {"Ref": "ApiClientsSecretArn"}
    assert worker["CALLBACK_SIGNING_SECRETS"] == {"Ref": "CallbackSigningSecretsArn"}
    # Without the parameter no container names an empty secret (API_KEYS alone is enough).
    without = created(template, with_defaults(template, CertificateArn=CERT))
    for name in ("api", "worker"):
        env, secrets = task_env(without, name)
        assert "API_CLIENTS" not in secrets, name
        assert not {"CALLBACK_ENDPOINTS", "CALLBACK_ALLOWED_HOSTS"} & set(env), name
    (statement,) = without["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert {"Ref": "ApiClientsSecretArn"} not in statement["Resource"]
    text = README.read_text(encoding="utf-8")
    for word in ("ApiClientsSecretArn", "API_CLIENTS", "CallbackEndpoints", "CallbackAllowedHosts"):
        assert word in text, f"deploy/ecs/README.md lacks {word}"


def test_the_payment_id_secret_is_required_and_the_api_s_alone(template: Any) -> None:
    """PAYMENT_ID_SECRET makes the payment ids, which only the API does, and the API refuses
    production without it: a parameter with no default that only a Secrets Manager ARN
    passes, given to the API alone, readable by the tasks."""
    parameter = template["Parameters"]["PaymentIdSecretArn"]
    assert "Default" not in parameter, "a stack must not deploy without it"
    assert not re.fullmatch(parameter["AllowedPattern"], "")
    assert re.fullmatch(parameter["AllowedPattern"], PAYMENT_ID_ARN)
    with_it = created(template, with_defaults(template, CertificateArn=CERT,
                                              PaymentIdSecretArn=PAYMENT_ID_ARN))  # fmt: skip
    assert task_env(with_it, "api")[1]["PAYMENT_ID_SECRET"] == {"Ref": "PaymentIdSecretArn"}
    (statement,) = with_it["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert {"Ref": "PaymentIdSecretArn"} in statement["Resource"]
    for name in ("worker", "flower"):  # every branch of their Fn::Ifs
        assert not set(API_ONLY_SECRETS) & set(secret_entries(container(template, name))), name
    text = README.read_text(encoding="utf-8")
    assert "PaymentIdSecretArn=arn:aws:secretsmanager" in text
    assert "PAYMENT_ID_SECRET" in text
    assert "never change" in text


def test_defaults_without_a_certificate_do_not_deploy(template: Any) -> None:
    assert not rules_pass(template, with_defaults(template))
    assert rules_pass(template, with_defaults(template, CertificateArn=CERT))


def test_no_plain_http_listener_reaches_the_api_unless_allowed(template: Any) -> None:
    # Even past the rule (say, it were removed), port 80 answers 403 without forwarding.
    resources = created(template, with_defaults(template))
    assert forwarding_listeners(resources) == {}
    (action,) = resources["HttpListener"]["Properties"]["DefaultActions"]
    assert action["Type"] == "fixed-response"


def test_with_a_certificate_http_only_redirects_to_https(template: Any) -> None:
    for allow in ("false", "true"):
        params = with_defaults(template, CertificateArn=CERT, AllowPlainHttp=allow)
        resources = created(template, params)
        assert forwarding_listeners(resources) == {"HttpsListener": "HTTPS"}
        (action,) = resources["HttpListener"]["Properties"]["DefaultActions"]
        assert action["Type"] == "redirect"
        assert action["RedirectConfig"]["Protocol"] == "HTTPS"


def test_plain_http_only_when_asked_for_explicitly(template: Any) -> None:
    assert template["Parameters"]["AllowPlainHttp"]["Default"] == "false"
    params = with_defaults(template, AllowPlainHttp="true")
    assert rules_pass(template, params)
    assert forwarding_listeners(created(template, params)) == {"HttpListener": "HTTP"}
    text = README.read_text(encoding="utf-8")
    assert "AllowPlainHttp" in text
    assert "bearer" in text.lower(), "the README says why plain HTTP is unsafe"


def test_execute_command_off_by_default(template: Any) -> None:
    params = with_defaults(template, CertificateArn=CERT)
    resources = created(template, params)
    services = {k: r for k, r in resources.items() if r["Type"] == "AWS::ECS::Service"}
    assert services, "no ECS service"
    for name, service in services.items():
        assert service["Properties"].get("EnableExecuteCommand", False) is False, name
    assert not resources["TaskRole"]["Properties"].get("Policies"), "no SSM rights unused"
    on = created(
        template, with_defaults(template, CertificateArn=CERT, EnableExecuteCommand="true")
    )
    for name in services:
        assert on[name]["Properties"]["EnableExecuteCommand"] is True, name
    actions = on["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert "ssmmessages:OpenDataChannel" in actions["Action"]


def test_flower_off_by_default_and_reachable_when_on(template: Any) -> None:
    resources = created(template, with_defaults(template, CertificateArn=CERT))
    assert "FlowerService" not in resources
    assert "FlowerTaskDefinition" not in resources
    flower_without_exec = with_defaults(template, CertificateArn=CERT, EnableFlower="true")
    assert not rules_pass(template, flower_without_exec), "Flower is reached through ECS Exec"
    flower = with_defaults(
        template,
        CertificateArn=CERT,
        EnableFlower="true",
        EnableExecuteCommand="true",
        FlowerBasicAuthSecretArn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:f-AbCdEf",
    )
    assert rules_pass(template, flower)
    assert created(template, flower)["FlowerService"]["Properties"]["EnableExecuteCommand"]


# ---------------------------------------------------------------- scaling within the budget


def test_worker_scaling_bounds_derive_from_the_stripe_budget(template: Any) -> None:
    """The binding Stripe limit caps the whole fleet (with a live key's defaults, 25 creates/s
    and 25 customer reads/s: 25 charges/s): tasks beyond what that needs only wait for it."""
    from shared.settings.service_settings import Settings

    p = template["Parameters"]
    assert p["StripeMaxRps"]["Default"] == "", "the template keeps Stripe's published defaults"
    assert p["StripeRateLimits"]["Default"] == ""
    live = Settings(environment="test", stripe_api_key="sk_live_test_fake")
    budget = live.stripe_limits.charge_rate
    assert budget == 25
    needed = math.ceil(budget / PER_TASK_CHARGES_PER_SECOND)
    assert p["WorkerMaxCapacity"]["Default"] == needed + 1, "the tasks the budget needs + 1 spare"
    assert p["WorkerMinCapacity"]["Default"] <= p["WorkerMaxCapacity"]["Default"]
    target = min(PER_TASK_CHARGES_PER_SECOND, budget) * ACCEPTABLE_QUEUEING_SECONDS
    assert p["BacklogPerTaskTarget"]["Default"] == target
    # A busy task holds WorkerConcurrency reserved messages, counted in QueueDepth: a target
    # below that would scale out on the fleet's own prefetch.
    assert p["BacklogPerTaskTarget"]["Default"] > p["WorkerConcurrency"]["Default"]
    text = README.read_text(encoding="utf-8")
    for figure in (f"{PER_TASK_CHARGES_PER_SECOND} charges/s", f"= {target:g}", "ceil("):
        assert figure in text, f"deploy/ecs/README.md lacks {figure!r}"
    assert re.search(r"LLEN.*unacked|unacked.*LLEN", text, re.S)


def _worker_target(template: Any) -> tuple[str, Any]:
    targets = resources_of(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == 1
    ((name, target),) = targets.items()
    props = target["Properties"]
    assert props["ScalableDimension"] == "ecs:service:DesiredCount"
    assert "WorkerService" in str(props["ResourceId"])
    assert props["MinCapacity"] == {"Ref": "WorkerMinCapacity"}
    assert props["MaxCapacity"] == {"Ref": "WorkerMaxCapacity"}
    assert template["Parameters"]["WorkerMinCapacity"]["Default"] >= 1
    return name, target


def _policies(template: Any, target_name: str) -> list[Any]:
    policies = resources_of(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    return [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in policies
        if p["Properties"]["ScalingTargetId"] == {"Ref": target_name}
        and p["Properties"]["PolicyType"] == "TargetTrackingScaling"
    ]


def test_workers_scale_on_backlog_per_task(template: Any) -> None:
    target_name, _ = _worker_target(template)
    custom = [p for p in _policies(template, target_name) if "CustomizedMetricSpecification" in p]
    assert len(custom) == 1
    assert custom[0]["TargetValue"] == {"Ref": "BacklogPerTaskTarget"}
    metrics = custom[0]["CustomizedMetricSpecification"]["Metrics"]
    by_id = {m["Id"]: m for m in metrics}
    stats = {
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"]): m
        for m in metrics
        if "MetricStat" in m
    }
    depth = stats[("PaymentsService", "QueueDepth")]
    assert depth["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "Queue", "Value": "payments"}]
    tasks = stats[("ECS/ContainerInsights", "RunningTaskCount")]
    dims = {d["Name"]: d["Value"] for d in tasks["MetricStat"]["Metric"]["Dimensions"]}
    assert dims["ClusterName"] == {"Ref": "Cluster"}
    assert "WorkerService" in str(dims["ServiceName"])
    returned = [m for m in metrics if m.get("ReturnData", True)]
    assert len(returned) == 1, "exactly one time series may drive the policy"
    assert returned[0]["Expression"].replace(" ", "") == f"{depth['Id']}/{tasks['Id']}"
    assert set(by_id) == {depth["Id"], tasks["Id"], returned[0]["Id"]}
    # RunningTaskCount exists only with Container Insights on.
    (cluster,) = resources_of(template, "AWS::ECS::Cluster").values()
    settings = {s["Name"]: s["Value"] for s in cluster["Properties"]["ClusterSettings"]}
    assert settings["containerInsights"] in ("enabled", "enhanced")


def test_workers_also_scale_on_cpu(template: Any) -> None:
    target_name, _ = _worker_target(template)
    predefined = [
        p["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for p in _policies(template, target_name)
        if "PredefinedMetricSpecification" in p
    ]
    assert predefined == ["ECSServiceAverageCPUUtilization"]


def test_worker_desired_count_is_left_to_autoscaling(template: Any) -> None:
    worker = template["Resources"]["WorkerService"]["Properties"]
    assert "DesiredCount" not in worker, "a stack update would reset the autoscaled count"
    task = template["Resources"][worker["TaskDefinition"]["Ref"]]
    assert [c["Name"] for c in task["Properties"]["ContainerDefinitions"]] == ["worker"]


def emf_line_of_a_busy_fleet(capsys: pytest.CaptureFixture[str]) -> Any:
    """What the worker's maintenance prints for 3 queued messages (the oldest waiting 90 s),
    128 charges reserved by workers, 40 callbacks held by them (a slow receiver's) and 2 dead
    letters. Reserved messages are kept as kombu keeps them: [message, exchange, queue]."""
    import json
    import time

    import fakeredis

    from shared.celery_message import charge_message
    from shared.store.keys import DEAD_LETTERS, UNACKED
    from worker.maintenance import publish_queue_depth

    client = fakeredis.FakeRedis()
    stamp = int((time.time() - 90) * 1000)
    client.lpush(
        "payments", charge_message("pay_1", queue="payments", headers={"enqueued_at": stamp})
    )
    client.lpush("payments", b"m2", b"m3")
    for i in range(128):
        client.hset(UNACKED, f"tag{i}", json.dumps([{"body": "…"}, "", "payments.acme"]))
    for i in range(40):
        client.hset(UNACKED, f"cb{i}", json.dumps([{"body": "…"}, "", "callbacks"]))
    client.zadd(DEAD_LETTERS, {"pay_x": 1, "pay_y": 2})
    publish_queue_depth(client)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from shared.fleet_metrics import WORKER_HEARTBEAT

    assert client.get(WORKER_HEARTBEAT), "the maintenance round is the workers' heartbeat"
    return line


def test_the_scaling_metric_counts_charges_reserved_by_workers_but_not_held_callbacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The EMF line the backlog policy reads: LLEN + the charges in kombu's unacked, not LLEN
    alone (a busy fleet's prefetch empties the list while hundreds of charges are still to do);
    the callbacks a slow receiver holds are no work for more charge workers."""
    line = emf_line_of_a_busy_fleet(capsys)
    assert line["QueueDepth"] == 3 + 128
    assert line["Reserved"] == 128
    assert line["ReservedCallbacks"] == 40
    assert 89 <= line["OldestMessageAgeSeconds"] <= 150
    assert line["DeadLetters"] == 2


def alarms(template: Any, params: dict[str, str]) -> dict[str, Any]:
    return {
        k: r["Properties"]
        for k, r in created(template, params).items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def alarm_metrics(alarm: Any) -> list[Any]:
    if "MetricName" in alarm:
        return [alarm]
    return [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]


def test_alarms_on_dead_letters_backlog_age_and_alb_5xx(template: Any) -> None:
    found = alarms(template, with_defaults(template, CertificateArn=CERT))
    names = {m["MetricName"] for a in found.values() for m in alarm_metrics(a)}
    assert {"DeadLetters", "OldestMessageAgeSeconds", "HTTPCode_Target_5XX_Count"} <= names
    assert {"HTTPCode_ELB_5XX_Count", "QueueDepth"} <= names  # LB errors; workers silent
    for alarm in found.values():
        assert "AlarmActions" not in alarm, "no topic given: no action"
    topic = "arn:aws:sns:eu-west-1:123456789012:payments-oncall"
    for name, alarm in alarms(template, with_defaults(template, CertificateArn=CERT,
                                                      AlarmTopicArn=topic)).items():  # fmt: skip
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopicArn"}], name


def test_alarms_read_what_the_workers_publish(
    template: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    line = emf_line_of_a_busy_fleet(capsys)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    published = {m["Name"] for m in directive["Metrics"]}
    for name, alarm in alarms(template, with_defaults(template, CertificateArn=CERT)).items():
        for metric in alarm_metrics(alarm):
            if metric["Namespace"] != directive["Namespace"]:
                continue
            assert metric["MetricName"] in published, f"{name}: nothing publishes it"
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert dims == {dim: line[dim] for dim in directive["Dimensions"][0]}, name
