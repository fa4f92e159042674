"""The deployment section of a model config: service level, serving limits, rollout checks, SageMaker."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from autopilot.config.base import Frozen, Share
from autopilot.config.roots import confined

__all__ = [
    "AwsDeploymentConfig",
    "DeploymentConfig",
    "RolloutConfig",
    "ServiceLevelConfig",
    "ServingConfig",
    "ShadowConfig",
]


class ServiceLevelConfig(Frozen):
    """What the deployed model must sustain; environment selection sizes for it."""

    p95_latency_ms: Annotated[float, Field(gt=0)] = Field(default=100.0, description="Single-row p95 latency.")
    peak_rps: Annotated[float, Field(gt=0)] = Field(default=50.0, description="Peak requests per second.")
    min_replicas: Annotated[int, Field(ge=1)] = Field(default=2, description="Replicas kept for availability.")
    headroom: Annotated[float, Field(ge=1.0, le=10.0)] = Field(
        default=1.5, description="Capacity multiplier over the measured need (1.5 = 50% spare)."
    )


class ServingConfig(Frozen):
    """The serving endpoint's limits (local `autopilot serve` and the generated image alike)."""

    host: str = Field(default="127.0.0.1", description="Interface `autopilot serve` binds to.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8090, description="Port of `autopilot serve` (8080 is the Airflow UI's; containers use 8080)."
    )
    token_env: str = Field(
        default="AUTOPILOT_SERVING_TOKEN",
        description="Environment variable holding the bearer token (never the token itself).",
    )
    max_batch_rows: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1024, description="Most records one /predict request may carry."
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=4_000_000, description="Largest request body accepted (413 above)."
    )
    request_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="A request still unanswered after this gets 504."
    )
    micro_batch_max_rows: Annotated[int, Field(ge=1)] = Field(
        default=256, description="Rows of concurrent requests predicted in one call."
    )
    micro_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] | None = Field(
        default=None,
        description="How long a batch waits for more requests; default (null): adaptive, up to the last "
                    "prediction's duration, and only when the last batch held more than one request.",
    )
    poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="How often the server checks the champion alias for a new version."
    )
    explain_max_rows: Annotated[int, Field(ge=1)] = Field(default=100, description="Most rows one /explain call.")
    # /explain?method=lime (explain/lime_tabular.py): each row costs one model call of
    # lime_num_samples rows, so LIME gets its own, smaller row limit and a time budget.
    lime_max_rows: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=20, description="Most rows one /explain?method=lime call (LIME costs a model call per row)."
    )
    lime_num_samples: Annotated[int, Field(ge=50, le=20_000)] = Field(
        default=1000, description="Perturbed rows LIME scores per explained row (/explain?method=lime)."
    )
    explain_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Time budget of one /explain?method=lime call: past it the call stops before its next model "
                    "call and answers 504 (the worker is freed; request_timeout_seconds still bounds the wait).",
    )
    compiled_fast_path: bool = Field(
        default=True,
        description="Compile the fitted preprocessing to arrays at load (verified against the pipeline on "
                    "synthetic and example rows; the pipeline serves when it does not apply).",
    )
    unseen_categories: Literal["warn", "reject"] = Field(
        default="warn",
        description="A categorical value the model never saw in training (null is missing, not unseen): "
                    "`warn` answers 200 with a `warnings` entry naming the row, column and value; `reject` "
                    "answers 422 naming the column and value. Both count it per column in "
                    "autopilot_unseen_categories_total.",
    )
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        default="auto",
        description="Worker processes `autopilot serve` runs on one port (each uses one core for HTTP and "
                    "validation). `auto`: one per usable core, as many as fit in the free memory at the model's "
                    "measured footprint (its deployment profile), one process on a one-core host; 1: the "
                    "single-process endpoint. The admission limits below bound the whole endpoint, all workers "
                    "together. Overridden by `autopilot serve --workers` and AUTOPILOT_SERVING_WORKERS.",
    )
    # Overload: past these bounds the endpoint sheds load at once (never queues without bound),
    # so admitted requests keep a bounded latency and the process a bounded memory.
    max_concurrent_requests: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=32,
        description="Most /predict, /invocations, /explain and /feedback requests in progress at once; one "
                    "more gets 429 with Retry-After at once, before its body is read. Under sustained overload "
                    "admitted latency is about this / throughput: the default (about the concurrency at which "
                    "micro-batches fill) keeps it near the latency at capacity; raise it to absorb bursts.",
    )
    max_queued_rows: Annotated[int, Field(ge=1)] = Field(
        default=4096,
        description="Most rows waiting for the micro-batcher; a request that would exceed it gets 429 with "
                    "Retry-After (at least max_batch_rows, so a request of the largest size can be admitted).",
    )
    max_connections: Annotated[int, Field(ge=1)] = Field(
        default=1000,
        description="Most open client connections: a connection opened while this many are open gets 503 with "
                    "Retry-After on its requests (the probes /health, /ready, /ping, /metrics excepted) and is "
                    "closed; the connections already open are served as usual.",
    )
    listen_backlog: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=2048,
        description="Connections the kernel holds before the server accepts them (capped by net.core.somaxconn).",
    )
    retry_after_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=1, description="Retry-After (seconds) sent with every 429 and 503 the endpoint sheds load with."
    )
    header_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Longest time from a connection's opening (or a request's first byte) to the end of the "
                    "request's headers; past it the connection gets 408 and is closed, so idle or trickling "
                    "connections cannot hold max_connections.",
    )
    body_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Longest time to receive a whole request body (a slow client gets 408 and its connection "
                    "is closed); the request_timeout_seconds budget starts once the body is in.",
    )

    @model_validator(mode="after")
    def _check_admission(self) -> ServingConfig:
        if self.max_queued_rows < self.max_batch_rows:
            raise ValueError(f"max_queued_rows ({self.max_queued_rows}) is below max_batch_rows "
                             f"({self.max_batch_rows}): a request of the largest allowed size could never be admitted")
        return self


class ShadowConfig(Frozen):
    """Shadow deployment: the challenger answers a copy of live traffic before it may take over.

    The champion alone answers clients; the challenger's predictions go to the inference log
    marked as shadow, off the request path. When enough shadow rows have labels (or `max_hours`
    passed) the quality comparison on that traffic is written as a second opinion into the
    decision record, and `on_worse` says what a worse challenger gets.
    """

    enabled: bool = Field(
        default=False, description="Hold a version that passed the gates as `challenger` in shadow before it "
                                   "is promoted (local serving copies traffic to it; SageMaker: a shadow variant).")
    sample: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="Share of served requests copied to the challenger (1.0: all of them).")
    min_rows: Annotated[int, Field(ge=1)] = Field(
        default=500, description="Shadow rows the challenger must have answered before the shadow phase can end.")
    min_labeled_rows: Annotated[int, Field(ge=10)] = Field(
        default=200, description="Shadow rows with labels (/feedback) needed for the quality comparison.")
    max_hours: Annotated[float, Field(gt=0, le=24 * 90)] = Field(
        default=72.0, description="Longest shadow phase: past it the phase ends with whatever labels there are "
                                  "(too few: the record says so, no second opinion).")
    poll_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = Field(
        default=15.0, description="How often the training DAG's shadow task looks at the shadow log "
                                  "(reschedule mode: no worker slot is held between looks).")
    run_wait_seconds: Annotated[float, Field(ge=0, le=24 * 3600)] = Field(
        default=0.0, description="`autopilot run` (no scheduler to look again later): how long its shadow stage "
                                 "waits in process for enough shadow rows before it leaves the version pending in "
                                 "shadow (promotable by hand); 0: look once.")
    max_queued_rows: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=8192, description="Most rows waiting for the challenger; a copy that would exceed it is dropped "
                                  "and counted (autopilot_shadow_rows_total{outcome=\"dropped\"}), never waited for.")
    on_worse: Literal["note", "review", "reject"] = Field(
        default="note",
        description="What a challenger the shadow comparison finds worse than the champion gets: `note` (the "
                    "default) records it as a second opinion and promotes as the gates decided (the gates "
                    "already judged it on the holdout); `review` holds it for a human; `reject` promotes nothing.")
    on_too_few_labels: Literal["promote", "review", "reject"] = Field(
        default="promote",
        description="What happens when `max_hours` passed without `min_labeled_rows` labeled shadow rows: "
                    "`promote` as the gates decided (the record says there was no second opinion), `review` "
                    "holds it for a human, `reject` promotes nothing.")


class RolloutConfig(Frozen):
    """How a new champion is checked on the live endpoint before the deployment counts as done."""

    smoke_rows: Annotated[int, Field(ge=1)] = Field(default=20, description="Test rows sent as the smoke test.")
    bake_seconds: Annotated[float, Field(ge=0)] = Field(
        default=60.0, description="How long errors and latency are watched after the swap."
    )
    bake_interval_seconds: Annotated[float, Field(gt=0)] = Field(default=5.0, description="Time between checks.")
    max_error_rate: Share = Field(default=0.01, description="Highest share of 5xx answers during the bake.")
    max_p95_latency_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Highest observed p95 during the bake; defaults to the service level's."
    )
    swap_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="How long to wait for the endpoint to serve the new version."
    )
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)


class AwsDeploymentConfig(Frozen):
    """SageMaker deployment (used when `target: aws`)."""

    region: str = Field(default="us-east-1", description="AWS region of the bucket and the endpoint.")
    bucket: str = Field(default="autopilot-models", description="S3 bucket for model packages.")
    prefix: str = Field(default="models", description="Key prefix under the bucket.")
    execution_role_arn: str = Field(
        default="arn:aws:iam::123456789012:role/autopilot-sagemaker",
        description="IAM role SageMaker assumes to read the package and pull the image.",
    )
    image_uri: str = Field(
        default="123456789012.dkr.ecr.us-east-1.amazonaws.com/autopilot-serving:latest",
        description="The serving image (built from the generated Dockerfile).",
    )
    aws_conn_id: str = Field(default="aws_default", description="Airflow connection used inside the DAG.")
    canary_percent: Annotated[float, Field(gt=0, lt=100)] = Field(
        default=10.0, description="Share of capacity the blue/green canary shifts first."
    )
    canary_wait_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=600, description="Canary bake before the rest of the traffic moves."
    )
    termination_wait_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=300, description="How long the old fleet is kept after the shift, for a fast rollback."
    )
    alarm_error_rate: Share = Field(default=0.01, description="5xx share that triggers an auto-rollback alarm.")
    wait_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=1800.0, description="Longest wait for an endpoint to reach InService."
    )
    # Bounds on every AWS call (botocore client config): an outage fails the task in bounded
    # time (Airflow retries it), it never hangs a worker.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        default=4, description="Attempts per AWS call (the first plus retries; botocore standard mode, "
                               "which retries throttling, 5xx and connection errors, never auth errors)."
    )
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0, description="Longest wait to connect to an AWS endpoint."
    )
    read_timeout_seconds: Annotated[float, Field(gt=0, le=900)] = Field(
        default=60.0, description="Longest wait for an AWS answer (per attempt; an upload part counts as one)."
    )
    multipart_threshold_mib: Annotated[float, Field(ge=0)] = Field(
        default=64.0, description="Packages larger than this go to S3 as a multipart upload (aborted on failure; "
                                  "0: always multipart)."
    )
    multipart_part_mib: Annotated[int, Field(ge=5, le=5120)] = Field(
        default=16, description="Part size of a multipart upload (S3's minimum is 5 MiB)."
    )
    # Shadow on SageMaker: the variants' answers come back through Data Capture (S3 JSON Lines).
    capture_prefix: str = Field(
        default="data-capture", description="Key prefix (under `prefix` in `bucket`) where a shadow endpoint's "
                                            "Data Capture writes both variants' requests and answers, imported by "
                                            "each look of the shadow stage into the inference log."
    )
    capture_max_objects: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=200, description="Most new capture files one shadow look reads (the rest wait for the next look)."
    )
    capture_max_object_mib: Annotated[float, Field(gt=0, le=1024)] = Field(
        default=32.0, description="A capture file larger than this is refused unread (counted and noted)."
    )
    capture_max_look_mib: Annotated[float, Field(gt=0, le=10_240)] = Field(
        default=256.0, description="Most capture bytes one shadow look reads (the rest wait for the next look)."
    )
    capture_max_line_kib: Annotated[int, Field(ge=1, le=65_536)] = Field(
        default=1024, description="A capture line (one request and its answer) longer than this is skipped "
                                  "and counted as bad."
    )


class DeploymentConfig(Frozen):
    """Where and how the champion is deployed."""

    target: Literal["local", "aws"] = Field(
        default="local", description="local: `autopilot serve` follows the champion; aws: S3 + SageMaker."
    )
    instance_catalog: str | None = Field(
        default=None,
        description="Instance types and prices (YAML, relative to this config file); default: the bundled catalog.",
    )
    service_level: ServiceLevelConfig = Field(default_factory=ServiceLevelConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    aws: AwsDeploymentConfig = Field(default_factory=AwsDeploymentConfig)

    @field_validator("instance_catalog")
    @classmethod
    def _check_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return confined(value, info)
