"""deploy/ecs/payments.yaml: cfn-lint clean, and what the service relies on in production."""

from __future__ import annotations

from typing import Any

import pytest

from ._tools import REPO, run_tool

TEMPLATE = REPO / "deploy" / "ecs" / "payments.yaml"
SECRET_NAMES = {"STRIPE_API_KEY", "API_KEYS", "FLOWER_BASIC_AUTH"}


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


def env_entries(c: Any) -> dict[str, Any]:
    """Name -> Value of a container's Environment, entries under Fn::If included."""
    out: dict[str, Any] = {}
    for entry in c.get("Environment", []):
        branches = entry["Fn::If"][1:] if "Fn::If" in entry else [entry]
        for branch in branches:
            if isinstance(branch, dict) and "Name" in branch:
                out[branch["Name"]] = branch["Value"]
    return out


def test_cfn_lint_clean() -> None:
    result = run_tool("cfn-lint", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_gets_120_s_to_finish_in_flight_charges(template: Any) -> None:
    assert container(template, "worker")["StopTimeout"] == 120


@pytest.mark.parametrize(
    ("name", "secrets"),
    [
        ("api", {"STRIPE_API_KEY", "API_KEYS"}),
        ("worker", {"STRIPE_API_KEY"}),
        # Importing worker.celery_app validates settings: production needs the Stripe key.
        ("flower", {"FLOWER_BASIC_AUTH", "STRIPE_API_KEY"}),
    ],
)
def test_secrets_come_from_secrets_manager(template: Any, name: str, secrets: set[str]) -> None:
    c = container(template, name)
    assert not set(env_entries(c)) & SECRET_NAMES, f"{name}: secret in plain Environment"
    from_secrets = {s["Name"]: s["ValueFrom"] for s in c["Secrets"]}
    assert set(from_secrets) == secrets
    for value in from_secrets.values():
        param = value["Ref"]
        assert template["Parameters"][param]["Type"] == "String"
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


def test_redis_url_is_configurable(template: Any) -> None:
    for name in ("api", "worker", "flower"):
        env = env_entries(container(template, name))
        assert env["REDIS_URL"] == {"Ref": "RedisUrl"}
        assert env["ENVIRONMENT"] == "production"


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
