"""Provision a SageMaker endpoint through boto3: package, upload, model, config, endpoint, alarms.

Every step is idempotent, so a retried Airflow task converges instead of duplicating:

* the package is a deterministic tar.gz (same model files -> same bytes -> same SHA-256), and an
  S3 key that already holds a package is never overwritten (same digest: skipped; another
  digest: refused); a large package goes up in parts and a failed or killed multipart upload
  is aborted (by the failing call, else by the next attempt), and what S3 stored is read back
  and hashed before any SageMaker object may point at it;
* model and endpoint-config names are derived from their content by the caller, so an existing
  object with the same name must describe the same thing; a difference means someone changed it
  and provisioning stops rather than serving something nobody reviewed;
* the endpoint name is stable per model: absent -> created, on another config -> updated with a
  blue/green canary whose CloudWatch alarms roll it back automatically, already on this config
  -> left alone.

On failure, what this call created is deleted again (endpoint, then config, then model), so no
half-made object is left pointing at a partial one. An endpoint that existed before is never
deleted: a failed blue/green update leaves SageMaker serving the old config.

The same code path runs against AWS and against moto's server; only `endpoint_url` differs.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from autopilot.adapters.model_loading import PACKAGE_MANIFEST, PACKAGE_SIGNATURE
from autopilot.adapters.registry import sha256_manifest
from autopilot.faults import checkpoint
from autopilot.settings import CREDENTIAL_LOGGERS, quiet_credential_loggers

if TYPE_CHECKING:
    from autopilot.config import AwsDeploymentConfig

__all__ = [
    "MANIFEST_NAME",
    "AwsClients",
    "ProvisionError",
    "ProvisionRetryable",
    "ProvisionTimeout",
    "UploadMismatch",
    "ProvisionResult",
    "aws_clients",
    "delete_deployment",
    "package_model",
    "provision_endpoint",
    "upload_package",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = PACKAGE_MANIFEST  # the manifest of a package (one name: model_loading reads it)
SIGNATURE_NAME = PACKAGE_SIGNATURE  # its HMAC, when registration signed the manifest
# Endpoint states that change on their own; anything else is settled (InService, Failed, ...).
TRANSITIONAL = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
POLL_START = 1.0
POLL_CAP = 30.0
# Keys the create calls accept but the describe calls never return: not comparable.
WRITE_ONLY_KEYS = frozenset({"Tags"})
_CHUNK = 1 << 20
SIGNING_LOGGERS = CREDENTIAL_LOGGERS  # kept at INFO: botocore prints credentials there at DEBUG


class ProvisionError(RuntimeError):
    """Provisioning was refused or failed; the message says which object and why."""


class ProvisionRetryable(ProvisionError):
    """Provisioning did not finish but nothing was decided: the task retries, the alias stays put."""


class ProvisionTimeout(ProvisionRetryable):
    """An endpoint did not settle in time: SageMaker may still finish the change, so this is no verdict."""


class UploadMismatch(ProvisionRetryable):
    """The stored package was not what was sent (altered in transit, or replaced); it was deleted."""


@dataclass(frozen=True)
class AwsClients:
    """The three boto3 clients provisioning needs (built by `aws_clients`)."""

    s3: Any
    sagemaker: Any
    cloudwatch: Any


@dataclass(frozen=True)
class ProvisionResult:
    """What `provision_endpoint` did.

    `action` is "created", "updated" or "unchanged"; `status` the endpoint's final status;
    `created` lists what this call created, as "kind:name" (model, endpoint-config, endpoint).
    """

    endpoint: str
    endpoint_config: str
    model: str
    action: str
    status: str
    created: list[str] = field(default_factory=list)


def aws_clients(region: str, endpoint_url: str | None = None, session: Any | None = None, *,
                limits: AwsDeploymentConfig | None = None) -> AwsClients:
    """Build S3, SageMaker and CloudWatch clients from one boto3 session, with bounded calls.

    `session` defaults to `boto3.Session()` (the standard credential chain); `endpoint_url` is
    None on AWS and the moto server's URL in tests, the only difference between the two.
    `limits` (the config's `deployment.aws`; its defaults when None) bounds every call: at most
    `max_attempts` attempts in botocore's standard retry mode (exponential backoff with jitter
    on throttling, 5xx and connection errors; an auth error such as ExpiredToken or
    AccessDenied is not retried, so it fails at once), each within the connect and read
    timeouts. An outage therefore fails the task in bounded time and Airflow retries it.
    """
    import boto3
    from botocore.config import Config

    from autopilot.config import AwsDeploymentConfig

    limits = limits or AwsDeploymentConfig()
    quiet_credential_loggers()
    if session is None:
        session = boto3.Session()
    config = Config(retries={"mode": "standard", "total_max_attempts": limits.max_attempts},
                    connect_timeout=limits.connect_timeout_seconds, read_timeout=limits.read_timeout_seconds)

    def make(service: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)

    return AwsClients(s3=make("s3"), sagemaker=make("sagemaker"), cloudwatch=make("cloudwatch"))


# --------------------------------------------------------------------------- packaging


class _HashingReader:
    """A file wrapper hashing what tarfile reads, so the archive holds what was verified."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    # Everything that varies between machines or runs is pinned: time, owner, group.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_model(model_dir: Path, out_path: Path, signature: str | None = None) -> tuple[Path, str]:
    """Pack an MLflow model directory into a deterministic tar.gz for SageMaker.

    Files sit at the archive root (SageMaker extracts it into /opt/ml/model), in sorted order,
    with mtime 0, uid/gid 0 and no owner names, and the gzip header carries no name or time, so
    the same files always give the same bytes. `autopilot-manifest.json` inside holds the
    SHA-256 of every other file (`registry.sha256_manifest`); check an unpacked package with
    `verify_manifest(folder, manifest, ignore=(MANIFEST_NAME,))`. With `signature` (the version's
    manifest signature), `autopilot-manifest.sig` holds it, and a container given the signing key
    refuses the package without it (`model_loading.open_package`).

    Returns:
        The archive's path and the SHA-256 hex digest of its bytes.

    Raises:
        FileNotFoundError: `model_dir` is not a directory.
        ValueError: the directory already holds a file named like the manifest, or a file
            changed while it was being packed.
    """
    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    manifest = sha256_manifest(model_dir)
    if MANIFEST_NAME in manifest or SIGNATURE_NAME in manifest:
        raise ValueError(f"{model_dir} already contains {MANIFEST_NAME} or {SIGNATURE_NAME}; they are reserved "
                         "for the package manifest")
    generated = {MANIFEST_NAME: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
    if signature:
        generated[SIGNATURE_NAME] = (signature + "\n").encode()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed, so a crash never leaves a truncated package.
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=".tmp-", suffix=".tar.gz")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted([*manifest, *generated]):
                if name in generated:
                    tar.addfile(_tarinfo(name, len(generated[name]), 0o644), io.BytesIO(generated[name]))
                    continue
                path = model_dir / name
                # Owner-executable files stay executable; every other permission bit is pinned.
                mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                with path.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    reader = _HashingReader(handle)
                    tar.addfile(_tarinfo(name, size, mode), reader)
                if reader.digest.hexdigest() != manifest[name]:
                    raise ValueError(f"{name} changed while {model_dir} was being packaged")
        digest = _file_sha256(Path(tmp_name))
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("packaged %s into %s (%d files, sha256 %s)", model_dir, out_path, len(manifest), digest)
    return out_path, digest


# --------------------------------------------------------------------------- upload


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return head


_PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_MIB = 1 << 20


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _stored_sha256(s3: Any, bucket: str, key: str) -> tuple[str, str]:
    """The SHA-256 of the object's bytes, read back in chunks, and the digest its metadata claims."""
    answer = s3.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    body = answer["Body"]
    try:
        for chunk in body.iter_chunks(_CHUNK):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest(), str(answer.get("Metadata", {}).get("sha256", "")).lower()


def _existing_package(s3: Any, bucket: str, key: str, head: dict[str, Any], sha256_hex: str) -> str:
    """Accept a package already under the key only if it is this one, byte for byte."""
    url = f"s3://{bucket}/{key}"
    stored = str(head.get("Metadata", {}).get("sha256", "")).lower()
    if stored != sha256_hex:
        raise ProvisionError(
            f"{url} already holds a different package (sha256 {stored or 'unknown'}, this one {sha256_hex}); "
            "a published package is never overwritten: use a new key"
        )
    actual, _ = _stored_sha256(s3, bucket, key)
    if actual != sha256_hex:
        # Not deleted here: an endpoint config may already point at it. An operator must look.
        raise ProvisionError(f"{url} claims sha256 {sha256_hex} but its bytes hash to {actual}: the stored package "
                             "is corrupt; delete it (nothing may serve it) and run the deploy again")
    log.info("package %s already uploaded with sha256 %s (verified); skipped", url, sha256_hex)
    return url


def _abort_stale_uploads(s3: Any, bucket: str, key: str) -> None:
    """Abort unfinished multipart uploads of `key` (a killed earlier attempt leaves its parts behind)."""
    try:
        answer = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    except ClientError as exc:
        if _error_code(exc) != "AccessDenied":
            raise
        # A policy without s3:ListBucketMultipartUploads: the bucket's lifecycle rule
        # (AbortIncompleteMultipartUpload) is then what removes them; say so and go on.
        log.warning("cannot list unfinished multipart uploads of s3://%s/%s (AccessDenied); leaving them to "
                    "the bucket's AbortIncompleteMultipartUpload lifecycle rule", bucket, key)
        return
    for upload in answer.get("Uploads", []):
        if upload.get("Key") != key:
            continue
        log.warning("aborting an unfinished multipart upload of s3://%s/%s started %s (an earlier attempt "
                    "died mid-upload)", bucket, key, upload.get("Initiated"))
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def _put_single(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str) -> None:
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    with path.open("rb") as body:
        # One PUT: readers see the whole object or nothing; S3 checks ChecksumSHA256 on arrival.
        s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumSHA256=checksum, Metadata={"sha256": sha256_hex},
                      ContentType="application/gzip", IfNoneMatch="*")


def _put_multipart(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str, part_size: int) -> None:
    """Upload in parts, each SHA-256 checked by S3; any failure aborts the upload (no parts left)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256",
                                           Metadata={"sha256": sha256_hex}, ContentType="application/gzip")["UploadId"]
    try:
        parts: list[dict[str, Any]] = []
        with path.open("rb") as handle:
            while chunk := handle.read(part_size):
                number = len(parts) + 1
                checksum = _b64_sha256(chunk)
                answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                                        ChecksumSHA256=checksum)
                parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum})
                checkpoint("deploy.upload.part_uploaded")
        # Conditional like the single PUT: a concurrent writer's object is never replaced.
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                                     IfNoneMatch="*")
    except BaseException as exc:  # including a task timeout or SIGTERM: never leave parts behind
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            log.warning("aborted the multipart upload of s3://%s/%s: %s", bucket, key, exc)
        except Exception as abort_error:  # the original error matters more; the next attempt aborts it
            log.error("could not abort the multipart upload of s3://%s/%s (%s); the next deploy aborts it",
                      bucket, key, abort_error)
        raise


def _verify_upload(s3: Any, bucket: str, key: str, sha256_hex: str) -> None:
    """Read the new object back; if it is not what was sent, delete it (nothing points at it yet)."""
    actual, claimed = _stored_sha256(s3, bucket, key)
    if actual == sha256_hex and claimed == sha256_hex:
        return
    s3.delete_object(Bucket=bucket, Key=key)
    raise UploadMismatch(f"s3://{bucket}/{key} did not hold what was uploaded (its bytes hash to {actual}, "
                         f"metadata sha256 {claimed or 'missing'}, expected {sha256_hex}): deleted it; "
                         "run the deploy again")


def upload_package(s3: Any, bucket: str, key: str, path: Path, sha256_hex: str, *,
                   limits: AwsDeploymentConfig | None = None) -> str:
    """Upload a package once, and verify what S3 stored before anything may point at it.

    Packages up to `limits.multipart_threshold_mib` go in one PUT carrying `ChecksumSHA256`;
    larger ones as a multipart upload with a SHA-256 checksum per part, aborted on any failure
    (an earlier attempt killed mid-upload is aborted first). Both writes are conditional
    (`If-None-Match: *`), so two concurrent uploads cannot overwrite each other, and both carry
    the hex digest in the object's `sha256` metadata. Afterwards the object is read back and
    hashed: one that differs (an S3-compatible store that ignores checksums, a proxy that
    altered it, a writer that replaced it) is deleted and the upload fails. An object already
    under the key is accepted only with the same digest, in its metadata and in its bytes.

    Returns:
        The package's s3:// URL.

    Raises:
        ProvisionError: the file does not match `sha256_hex`, the key holds another package or
            a corrupt one, or the stored object did not match (it has been deleted).
    """
    from autopilot.config import AwsDeploymentConfig

    limits = limits or AwsDeploymentConfig()
    path = Path(path)
    sha256_hex = sha256_hex.lower()
    url = f"s3://{bucket}/{key}"
    actual = _file_sha256(path)
    if actual != sha256_hex:
        raise ProvisionError(f"{path} has sha256 {actual}, not the expected {sha256_hex}")
    head = _head(s3, bucket, key)
    if head is not None:
        return _existing_package(s3, bucket, key, head, sha256_hex)
    _abort_stale_uploads(s3, bucket, key)
    size = path.stat().st_size
    try:
        if size > limits.multipart_threshold_mib * _MIB:
            _put_multipart(s3, bucket, key, path, sha256_hex, limits.multipart_part_mib * _MIB)
        else:
            _put_single(s3, bucket, key, path, sha256_hex)
    except ClientError as exc:
        if _error_code(exc) not in _PRECONDITION_FAILED:
            raise
        # Another writer stored the key between our HEAD and our write: accept it only if identical.
        head = _head(s3, bucket, key)
        if head is None:
            raise
        return _existing_package(s3, bucket, key, head, sha256_hex)
    checkpoint("deploy.upload.stored")
    _verify_upload(s3, bucket, key, sha256_hex)
    log.info("uploaded package %s (%d bytes, sha256 %s, verified)", url, size, sha256_hex)
    return url


# --------------------------------------------------------------------------- provisioning


def _absent(exc: ClientError) -> bool:
    # SageMaker answers a describe of a missing object with ValidationException "Could not find".
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return _error_code(exc) in {"ValidationException", "ResourceNotFound"} and "could not find" in message.lower()


def _describe(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = call(**kwargs)
    except ClientError as exc:
        if _absent(exc):
            return None
        raise
    return found


def _differences(wanted: Any, actual: Any, path: str) -> list[str]:
    """Where `actual` (a describe answer) disagrees with `wanted` (create kwargs).

    Subset semantics: keys SageMaker adds (ARNs, times, defaults) are ignored, everything we
    asked for must be there with the same value.
    """
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, found {actual!r}"]
        found: list[str] = []
        for key, value in wanted.items():
            if key in WRITE_ONLY_KEYS:
                continue
            if key not in actual:
                found.append(f"{path}.{key}: missing")
            else:
                found += _differences(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(actual) != len(wanted):
            return [f"{path}: expected {len(wanted)} item(s), found {actual!r}"]
        pairs = enumerate(zip(wanted, actual, strict=True))
        return [d for i, (w, a) in pairs for d in _differences(w, a, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(wanted, numbers) and isinstance(actual, numbers) and not isinstance(wanted, bool):
        return [] if float(wanted) == float(actual) else [f"{path}: {actual!r} != {wanted!r}"]
    return [] if wanted == actual else [f"{path}: {actual!r} != {wanted!r}"]


def _alarm_endpoints(alarm: dict[str, Any]) -> set[str]:
    """EndpointName dimension values an alarm watches (plain metric or metric-math queries)."""
    dimension_lists = [alarm.get("Dimensions", [])]
    for query in alarm.get("Metrics", []):
        dimension_lists.append(query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", []))
    return {d["Value"] for dims in dimension_lists for d in dims if d.get("Name") == "EndpointName"}


def _validate(endpoint: str, sagemaker: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                                                                   list[dict[str, Any]]]:
    """Check the plan before anything is created; refuse a deployment without rollback alarms."""
    if not endpoint:
        raise ProvisionError("an endpoint name is required")
    missing = [k for k in ("create_model", "create_endpoint_config", "deployment_config") if not sagemaker.get(k)]
    if missing:
        raise ProvisionError(f"deployment plan for {endpoint} lacks {', '.join(missing)}")
    model_kwargs = dict(sagemaker["create_model"])
    config_kwargs = dict(sagemaker["create_endpoint_config"])
    deployment = dict(sagemaker["deployment_config"])
    alarms = [dict(a) for a in sagemaker.get("alarms") or []]
    model = model_kwargs.get("ModelName")
    config = config_kwargs.get("EndpointConfigName")
    if not model or not config:
        raise ProvisionError(f"deployment plan for {endpoint} needs ModelName and EndpointConfigName")
    # A blue/green update without alarms cannot roll itself back: refuse rather than deploy blind.
    rollback_alarms = [a.get("AlarmName") for a in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])]
    if not rollback_alarms:
        raise ProvisionError(
            f"refusing to deploy {endpoint}: DeploymentConfig has no AutoRollbackConfiguration alarms"
        )
    defined = {a.get("AlarmName") for a in alarms}
    undefined = [name for name in rollback_alarms if name not in defined]
    if undefined:
        raise ProvisionError(
            f"refusing to deploy {endpoint}: rollback alarm(s) {undefined} are not defined in the plan's alarms"
        )
    for alarm in alarms:
        watched = _alarm_endpoints(alarm)
        if watched - {endpoint}:
            raise ProvisionError(
                f"refusing to deploy {endpoint}: alarm {alarm.get('AlarmName')} watches endpoint(s) {sorted(watched)}"
            )
    variants = config_kwargs.get("ProductionVariants") or []
    if not variants:
        raise ProvisionError(f"endpoint config {config} has no ProductionVariants")
    others = sorted({v.get("ModelName") for v in variants} - {model})
    if others:
        raise ProvisionError(f"endpoint config {config} references model(s) {others}, not {model}")
    return model_kwargs, config_kwargs, deployment, alarms


def _ensure(kind: str, name: str, describe: Callable[[], dict[str, Any] | None], create: Callable[[], Any],
            wanted: dict[str, Any], created: list[tuple[str, str]]) -> None:
    """Create an object if absent; if present, it must match what was asked for."""
    existing = describe()
    if existing is None:
        log.info("creating %s %s", kind, name)
        create()
        created.append((kind, name))
        return
    differences = _differences(wanted, existing, kind)
    if differences:
        # Names are derived from content: the same name with other content means tampering.
        raise ProvisionError(f"existing {kind} {name} differs from the plan: {'; '.join(differences)}")
    log.info("%s %s already exists and matches; reused", kind, name)


def _interval(attempt: int, seed: str) -> float:
    """Backoff: 1 s doubling to 30 s, shortened by up to 10 % with a jitter derived from `seed`.

    The jitter is deterministic (a hash, not a random draw) so runs are reproducible, yet
    different endpoints polled together do not hit the API in lockstep.
    """
    base = min(POLL_CAP, POLL_START * 2 ** min(attempt, 16))
    fraction = int.from_bytes(hashlib.sha256(f"{seed}:{attempt}".encode()).digest()[:4], "big") / 2**32
    return base * (1.0 - 0.1 * fraction)


def _wait_settled(sagemaker: Any, endpoint: str, timeout: float, sleep: Callable[..., None],
                  *, until_gone: bool = False) -> dict[str, Any] | None:
    """Poll an endpoint until its status stops changing (or it is gone); None when gone.

    Elapsed time is the larger of the wall clock and the sum of the intervals slept, so an
    injected `sleep` that returns at once still reaches the timeout.
    """
    started = time.monotonic()
    slept = 0.0
    attempt = 0
    while True:
        described = _describe(sagemaker.describe_endpoint, EndpointName=endpoint)
        status = None if described is None else described.get("EndpointStatus")
        if described is None or (not until_gone and status not in TRANSITIONAL):
            return described
        elapsed = max(time.monotonic() - started, slept)
        if elapsed >= timeout:
            goal = "to be deleted" if until_gone else "to settle"
            raise ProvisionTimeout(f"timed out after {elapsed:.0f} s waiting for endpoint {endpoint} {goal} "
                                   f"(status {status})")
        delay = min(_interval(attempt, endpoint), timeout - elapsed)
        log.info("endpoint %s is %s; next check in %.1f s", endpoint, status, delay)
        sleep(delay)
        slept += delay
        attempt += 1


def _cleanup(sagemaker: Any, endpoint: str, created: list[tuple[str, str]], timeout: float,
             sleep: Callable[..., None]) -> None:
    """Delete what this call created, endpoint first, unless something still uses it.

    Best effort: a cleanup error is logged, never raised over the original error.
    """
    if not created:
        return
    if ("endpoint", endpoint) in created:
        try:
            log.warning("deleting endpoint %s created by this failed call", endpoint)
            sagemaker.delete_endpoint(EndpointName=endpoint)
            _wait_settled(sagemaker, endpoint, timeout, sleep, until_gone=True)
        except Exception as exc:  # keep the original error; say what is left
            log.error("could not delete endpoint %s: %s", endpoint, exc)
    try:
        current = _describe(sagemaker.describe_endpoint, EndpointName=endpoint)
    except Exception as exc:
        log.error("cannot tell whether endpoint %s still uses the new objects (%s); leaving them", endpoint, exc)
        return
    in_use: set[str] = set()
    if current is not None:
        in_use.add(str(current.get("EndpointConfigName")))
        pending = current.get("PendingDeploymentSummary") or {}
        if pending.get("EndpointConfigName"):
            in_use.add(str(pending["EndpointConfigName"]))
        if current.get("EndpointStatus") in TRANSITIONAL:
            # An update still in flight may be moving to the new config: leave it all in place.
            in_use.update(name for kind, name in created if kind == "endpoint-config")
    config_kept = False
    for kind, name in reversed(created):
        if kind == "endpoint":
            continue
        if kind == "endpoint-config" and name in in_use:
            log.warning("keeping endpoint config %s: endpoint %s references it", name, endpoint)
            config_kept = True
            continue
        if kind == "model" and config_kept:
            log.warning("keeping model %s: its endpoint config is still in use", name)
            continue
        try:
            log.warning("deleting %s %s created by this failed call", kind, name)
            if kind == "endpoint-config":
                sagemaker.delete_endpoint_config(EndpointConfigName=name)
            else:
                sagemaker.delete_model(ModelName=name)
        except Exception as exc:
            log.error("could not delete %s %s: %s", kind, name, exc)
            config_kept = config_kept or kind == "endpoint-config"


def _revert_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    """The DeploymentConfig of a revert: all traffic at once, without the auto-rollback alarms.

    A revert runs because those alarms (or the rollout's checks) condemned the new version; the
    alarms are likely still in ALARM, and SageMaker rolls back any deployment during which one
    trips, so keeping them would undo the revert itself. The target is the previous, proven fleet.
    """
    policy = deployment.get("BlueGreenUpdatePolicy", {})
    revert: dict[str, Any] = {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                              "TerminationWaitInSeconds": 0}
    if "MaximumExecutionTimeoutInSeconds" in policy:
        revert["MaximumExecutionTimeoutInSeconds"] = policy["MaximumExecutionTimeoutInSeconds"]
    return {"BlueGreenUpdatePolicy": revert}


def _start_deployment(sm: Any, endpoint: str, config: str, deployment: dict[str, Any], current: dict[str, Any] | None,
                      revert: bool, created: list[tuple[str, str]]) -> str | None:
    """Create or update the endpoint towards `config`; the action, or None when it already serves it."""
    if current is None:
        if revert:
            raise ProvisionError(f"endpoint {endpoint} does not exist: there is nothing to revert")
        log.info("creating endpoint %s on config %s", endpoint, config)
        # CreateEndpoint accepts DeploymentConfig (botocore model); it sets the rollback
        # alarms for later updates. moto 5.2.5 accepts and ignores it.
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config, DeploymentConfig=deployment)
        created.append(("endpoint", endpoint))
        return "created"
    status = str(current.get("EndpointStatus"))
    if status == "Failed":
        raise ProvisionError(f"endpoint {endpoint} is Failed ({current.get('FailureReason')}); "
                             "it cannot be updated: delete it (delete_deployment) and provision again")
    if current.get("EndpointConfigName") == config:
        if status != "InService":
            raise ProvisionError(f"endpoint {endpoint} is on config {config} but {status}")
        log.info("endpoint %s already serves config %s; unchanged", endpoint, config)
        return None
    verb = "reverting" if revert else "updating"
    log.info("%s endpoint %s from config %s to %s (blue/green%s)", verb, endpoint, current.get("EndpointConfigName"),
             config, ", all at once" if revert else "")
    sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config,
                       DeploymentConfig=_revert_deployment(deployment) if revert else deployment,
                       RetainAllVariantProperties=False)
    return "reverted" if revert else "updated"


def provision_endpoint(clients: AwsClients, *, endpoint: str, sagemaker: dict[str, Any], wait_timeout: float = 1800.0,
                       poll: Callable[..., None] | None = None, revert: bool = False) -> ProvisionResult:
    """Bring `endpoint` to the planned model and endpoint config, idempotently.

    `sagemaker` is the plan: `create_model` and `create_endpoint_config` (kwargs of those
    calls), `deployment_config` (DeploymentConfig for CreateEndpoint/UpdateEndpoint, with
    AutoRollbackConfiguration alarms) and `alarms` (put_metric_alarm kwargs). Steps: refuse a
    plan whose rollback alarms are missing or undefined (nothing is created); put the alarms;
    create the model and endpoint config unless they exist (an existing one must match); create
    the endpoint, update it to the new config (blue/green, RetainAllVariantProperties=False),
    or leave it when it already serves this config; wait for InService with exponential
    backoff (`poll(seconds)` sleeps; inject it in tests). An update SageMaker rolled back
    (InService on another config) is a failure.

    `revert=True` moves an existing endpoint back to a previous version's plan after a failed
    rollout: the alarms are left as they are, traffic shifts all at once and without the
    auto-rollback alarms (`_revert_deployment` says why), and an absent endpoint is an error.

    Raises:
        ProvisionError: refused, failed (with SageMaker's FailureReason) or timed out; what this
            call created has been deleted again unless the endpoint still references it.
    """
    sleep = poll or time.sleep
    model_kwargs, config_kwargs, deployment, alarms = _validate(endpoint, sagemaker)
    model = model_kwargs["ModelName"]
    config = config_kwargs["EndpointConfigName"]
    sm = clients.sagemaker
    created: list[tuple[str, str]] = []

    def result(action: str, status: str) -> ProvisionResult:
        return ProvisionResult(endpoint=endpoint, endpoint_config=config, model=model, action=action, status=status,
                               created=[f"{kind}:{name}" for kind, name in created])

    try:
        for alarm in [] if revert else alarms:
            log.info("putting CloudWatch alarm %s", alarm["AlarmName"])
            clients.cloudwatch.put_metric_alarm(**alarm)
        _ensure("model", model, lambda: _describe(sm.describe_model, ModelName=model),
                lambda: sm.create_model(**model_kwargs), model_kwargs, created)
        _ensure("endpoint-config", config, lambda: _describe(sm.describe_endpoint_config, EndpointConfigName=config),
                lambda: sm.create_endpoint_config(**config_kwargs), config_kwargs, created)

        # Another run may be mid-deployment: decide only once the endpoint has settled.
        current = _wait_settled(sm, endpoint, wait_timeout, sleep)
        action = _start_deployment(sm, endpoint, config, deployment, current, revert, created)
        if action is None:  # already InService on this config
            return result("unchanged", "InService")

        final = _wait_settled(sm, endpoint, wait_timeout, sleep)
        if final is None:
            raise ProvisionError(f"endpoint {endpoint} disappeared while being {action}")
        status = str(final.get("EndpointStatus"))
        if status != "InService":
            reason = final.get("FailureReason") or "no reason given"
            raise ProvisionError(f"endpoint {endpoint} ended {status}: {reason}")
        if final.get("EndpointConfigName") != config:
            # Blue/green with auto-rollback: an alarm fired and SageMaker went back to the old fleet.
            raise ProvisionError(f"endpoint {endpoint} was rolled back to config {final.get('EndpointConfigName')} "
                                 f"({final.get('FailureReason') or 'a rollback alarm fired'})")
        log.info("endpoint %s is InService on config %s (%s)", endpoint, config, action)
        return result(action, status)
    except Exception as exc:
        _cleanup(sm, endpoint, created, min(wait_timeout, 600.0), sleep)
        if isinstance(exc, ProvisionError):
            raise
        raise ProvisionError(f"provisioning endpoint {endpoint} failed: {exc}") from exc


def delete_deployment(clients: AwsClients, endpoint: str, *, alarm_names: Sequence[str] = (),
                      timeout: float = 600.0, poll: Callable[..., None] | None = None) -> list[str]:
    """Tear down an endpoint, its current endpoint config and that config's models, and alarms.

    Older configs and models are left alone (retention decides about them). Missing objects
    are skipped, so a repeated teardown is harmless.

    Returns:
        What was deleted, as "kind:name".
    """
    sleep = poll or time.sleep
    sm = clients.sagemaker
    deleted: list[str] = []
    current = _describe(sm.describe_endpoint, EndpointName=endpoint)
    config_names: list[str] = []
    if current is not None:
        config_names.append(str(current["EndpointConfigName"]))
        log.info("deleting endpoint %s", endpoint)
        sm.delete_endpoint(EndpointName=endpoint)
        _wait_settled(sm, endpoint, timeout, sleep, until_gone=True)
        deleted.append(f"endpoint:{endpoint}")
    for config in config_names:
        described = _describe(sm.describe_endpoint_config, EndpointConfigName=config)
        if described is None:
            continue
        log.info("deleting endpoint config %s", config)
        sm.delete_endpoint_config(EndpointConfigName=config)
        deleted.append(f"endpoint-config:{config}")
        for model in sorted({v["ModelName"] for v in described.get("ProductionVariants", []) if v.get("ModelName")}):
            if _describe(sm.describe_model, ModelName=model) is not None:
                log.info("deleting model %s", model)
                sm.delete_model(ModelName=model)
                deleted.append(f"model:{model}")
    if alarm_names:
        log.info("deleting alarms %s", list(alarm_names))
        clients.cloudwatch.delete_alarms(AlarmNames=list(alarm_names))
        deleted += [f"alarm:{name}" for name in alarm_names]
    return deleted
