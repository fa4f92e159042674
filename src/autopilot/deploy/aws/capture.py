"""SageMaker Data Capture of a shadow endpoint, imported into the inference log.

SageMaker answers clients from the production variant only; the shadow variant's answers go to
no caller, only to the endpoint's Data Capture (`provisioning.data_capture_config`, turned on by
`start_shadow`). Capture writes JSON Lines files to
`s3://<bucket>/<prefix>/<capture_prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`, one line
per request:

    {"captureData": {"endpointInput": {"observedContentType": ..., "mode": "INPUT", "data": ..., "encoding": ...},
                     "endpointOutput": {"observedContentType": ..., "mode": "OUTPUT", "data": ..., "encoding": ...}},
     "eventMetadata": {"eventId": ..., "inferenceTime": ..., "inferenceId": ...}, "eventVersion": "0"}

`import_captures` reads both variants' new files since the shadow phase started and writes them
to the inference log: the production variant's requests as served rows (`inference_log`, the
champion's answer and the features) and the shadow variant's as the challenger's answers
(`inference_shadow`). The two are paired by request id, as local shadow rows are: the caller's
`InferenceId` (InvokeEndpoint's parameter, recorded by capture as `eventMetadata.inferenceId`, the
id AWS documents for joining captured data with ground truth), so `/feedback` labels posted with
that id label both. Without an InferenceId the event id stands in (SageMaker does not document
that a request's shadow copy carries its production event's id: such rows may stay unpaired).

Bounded and strict: per look and variant at most `capture_max_objects` new files and
`capture_max_look_mib`; a file above `capture_max_object_mib` is refused from its listed size,
unread; a line above `capture_max_line_kib`, not JSON (never anything else: no pickle), not in
the documented shape, or not one of our container's answers, is counted as bad and skipped.
Idempotent: an event is imported once per (model, variant, event id), and a file once.
Capture records no latency: imported rows carry 0 ms.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from autopilot.deploy.aws.errors import ProvisionError

if TYPE_CHECKING:
    from autopilot.config import AwsDeploymentConfig

__all__ = ["CaptureEvent", "CaptureFormatError", "CaptureImport", "CaptureLimits", "CaptureSink", "ImportedEvent",
           "capture_uri", "import_captures", "parse_capture_line", "variant_prefix"]

log = logging.getLogger(__name__)

ENCODINGS = ("CSV", "JSON", "BASE64")
RECORD_KEYS = ("records", "dataframe_records", "instances")  # what our container's /invocations accepts
MAX_NOTES = 20


class CaptureFormatError(ValueError):
    """A capture line that is not in the documented shape, or not one of our container's requests."""


@dataclass(frozen=True)
class CaptureLimits:
    """How much one look may read, per variant."""

    max_objects: int = 200
    max_object_bytes: int = 32 << 20
    max_look_bytes: int = 256 << 20
    max_line_bytes: int = 1 << 20

    @classmethod
    def of(cls, aws: AwsDeploymentConfig) -> CaptureLimits:
        """The limits of the config's `deployment.aws` (`capture_max_*`)."""
        return cls(max_objects=aws.capture_max_objects, max_object_bytes=int(aws.capture_max_object_mib * (1 << 20)),
                   max_look_bytes=int(aws.capture_max_look_mib * (1 << 20)),
                   max_line_bytes=aws.capture_max_line_kib << 10)


class CaptureSink(Protocol):
    """Where imported events go: the inference log (`serving.inference_log.InferenceLog`), given by the caller."""

    def captured_files(self, model: str, prefix: str) -> set[str]: ...  # noqa: D102

    def import_capture(self, key: str, model: str, events: Sequence[Any], bad_lines: int = 0,  # noqa: D102
                       note: str | None = None) -> tuple[int, int]: ...


@dataclass(frozen=True)
class ImportedEvent:
    """One event's rows for the inference log: the fields of `InferenceRecord`, one mapping per row."""

    variant: str
    event_id: str
    shadow: bool
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class CaptureEvent:
    """One captured request: its ids, time, and the decoded request and answer bodies."""

    event_id: str
    inference_id: str | None
    at: datetime
    request: Any
    answer: Any


@dataclass
class CaptureImport:
    """What one look imported (summed over the variants)."""

    files: int = 0
    refused_files: int = 0
    events: int = 0
    new_events: int = 0
    bad_lines: int = 0
    skipped_events: int = 0
    clashing_rows: int = 0
    more: bool = False  # the look's bounds left new files for the next look
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep a note (the first few) and log it."""
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        log.warning("data capture: %s", text)


def _capture_parts(aws: AwsDeploymentConfig) -> list[str]:
    """The deployment's prefix and `capture_prefix`, without their slashes (empty ones left out)."""
    return [p.strip("/") for p in (aws.prefix, aws.capture_prefix) if p.strip("/")]


def capture_uri(aws: AwsDeploymentConfig) -> str:
    """Data Capture's DestinationS3Uri: `capture_prefix` under the deployment's bucket and prefix."""
    return f"s3://{aws.bucket}/{'/'.join(_capture_parts(aws))}"


def variant_prefix(aws: AwsDeploymentConfig, endpoint: str, variant: str) -> str:
    """The S3 key prefix under which capture writes one variant's files (ends with '/')."""
    return "/".join([*_capture_parts(aws), endpoint, variant]) + "/"


# ---------------------------------------------------------------------------- one line


def parse_capture_line(line: bytes | str) -> CaptureEvent:
    """One capture line, strictly: the documented fields, JSON bodies; CaptureFormatError otherwise."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CaptureFormatError(f"not JSON: {exc}") from None
    data = _mapping(doc, "the line").get("captureData")
    meta = _mapping(_mapping(doc, "the line").get("eventMetadata"), "eventMetadata")
    event_id = meta.get("eventId")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise CaptureFormatError(f"eventMetadata.eventId must be a string of 1-128 characters, not {event_id!r}")
    inference_id = meta.get("inferenceId")
    if inference_id is not None and (not isinstance(inference_id, str) or not 0 < len(inference_id) <= 128):
        raise CaptureFormatError(f"eventMetadata.inferenceId must be a string of 1-128 characters, not "
                                 f"{inference_id!r}")
    try:
        at = datetime.fromisoformat(str(meta.get("inferenceTime")))
    except ValueError:
        raise CaptureFormatError(f"eventMetadata.inferenceTime is not an ISO time: "
                                 f"{meta.get('inferenceTime')!r}") from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    data = _mapping(data, "captureData")
    request = _body(_mapping(data.get("endpointInput"), "endpointInput"), "endpointInput")
    answer = _body(_mapping(data.get("endpointOutput"), "endpointOutput"), "endpointOutput")
    return CaptureEvent(event_id=event_id, inference_id=inference_id, at=at, request=request, answer=answer)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CaptureFormatError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _body(part: dict[str, Any], what: str) -> Any:
    """A captured body decoded to JSON: `encoding` JSON (text) or BASE64 of JSON; CSV is not ours."""
    encoding, data = part.get("encoding"), part.get("data")
    if encoding not in ENCODINGS:
        raise CaptureFormatError(f"{what}.encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if not isinstance(data, str):
        raise CaptureFormatError(f"{what}.data must be a string, not {type(data).__name__}")
    if encoding == "CSV" or "csv" in str(part.get("observedContentType", "")).lower():
        raise CaptureFormatError(f"{what} is CSV: autopilot's container takes and answers JSON only")
    text = data
    if encoding == "BASE64":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CaptureFormatError(f"{what}.data is not base64 of UTF-8 text: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CaptureFormatError(f"{what}.data is not JSON: {exc}") from None


# ---------------------------------------------------------------------------- events to rows


def to_rows(event: CaptureEvent, *, variant: str, model: str, shadow: bool,
            version: int | None = None) -> ImportedEvent:
    """The event's rows for the inference log; CaptureFormatError when it is not our container's answer.

    `version`: the challenger's (a shadow answer from another version is refused).
    """
    rows = _request_rows(event.request)
    answer = _mapping(event.answer, "the answer")
    predictions, served_by = answer.get("predictions"), answer.get("model_version")
    if not isinstance(predictions, list) or len(predictions) != len(rows):
        raise CaptureFormatError(f"the answer holds no predictions for the request's {len(rows)} rows "
                                 f"(an error answer?): {sorted(answer)[:5]}")
    if answer.get("model") not in (None, model):
        raise CaptureFormatError(f"the answer is from model {answer.get('model')!r}, not {model!r}")
    if isinstance(served_by, bool) or not isinstance(served_by, int):
        raise CaptureFormatError(f"the answer's model_version must be an integer, not {served_by!r}")
    if version is not None and served_by != version:
        raise CaptureFormatError(f"the shadow answer is from version {served_by}, not the challenger's {version}")
    request_id = event.inference_id or event.event_id
    records = [{"request_id": request_id, "row": i, "model": model, "version": served_by, "at": event.at,
                "features": {} if shadow else row, "prediction": prediction, "latency_ms": 0.0}
               for i, (row, prediction) in enumerate(zip(rows, predictions, strict=True))]
    return ImportedEvent(variant=variant, event_id=event.event_id, shadow=shadow, records=records)


def _request_rows(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        keys = [k for k in RECORD_KEYS if k in body]
        if len(keys) != 1:
            raise CaptureFormatError(f"the request must hold exactly one of {', '.join(RECORD_KEYS)}")
        body = body[keys[0]]
    if not isinstance(body, list) or not body or not all(isinstance(row, dict) for row in body):
        raise CaptureFormatError("the request's records must be a non-empty list of JSON objects")
    return body


# ---------------------------------------------------------------------------- S3


def _new_files(s3: Any, bucket: str, prefix: str, since: datetime, known: set[str]) -> Iterator[tuple[str, int]]:
    """(key, size) of capture files not imported yet, in key order (= hour order), from `since`'s hour on."""
    start = f"{prefix}{since.astimezone(UTC):%Y/%m/%d/%H}"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, StartAfter=start):
        for item in page.get("Contents", []):
            if item["Key"] not in known:
                yield item["Key"], int(item["Size"])


def _read(s3: Any, bucket: str, key: str, limit: int) -> bytes | None:
    """The object's bytes, at most `limit` (None: it grew past `limit` since it was listed)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        data: bytes = body.read(limit + 1)
    finally:
        body.close()
    return None if len(data) > limit else data


def import_captures(s3: Any, sink: CaptureSink, *, aws: AwsDeploymentConfig, endpoint: str, model: str,
                    production_variant: str, shadow_variant: str, challenger_version: int, since: datetime,
                    limits: CaptureLimits | None = None) -> CaptureImport:
    """Import both variants' new capture files since `since` into `sink` (bounded, idempotent).

    `sink` is the inference log (`InferenceLog`): this layer does not import serving, the caller hands it in.
    """
    limits = limits or CaptureLimits.of(aws)
    if not aws.bucket:
        raise ProvisionError("deployment.aws.bucket is empty: there is no Data Capture to import")
    summary = CaptureImport()
    for variant, shadow in ((production_variant, False), (shadow_variant, True)):
        prefix = variant_prefix(aws, endpoint, variant)
        known = sink.captured_files(model, prefix)
        budget, taken = limits.max_look_bytes, 0
        for key, size in _new_files(s3, aws.bucket, prefix, since, known):
            if taken >= limits.max_objects or (taken and size > budget):
                summary.more = True
                break
            taken += 1
            summary.files += 1
            if size > limits.max_object_bytes:
                _refuse(sink, summary, key, model, f"{size} bytes, above capture_max_object_mib")
                continue
            data = _read(s3, aws.bucket, key, limits.max_object_bytes)
            if data is None:
                _refuse(sink, summary, key, model, "grew above capture_max_object_mib since it was listed")
                continue
            budget -= len(data)
            _import_file(sink, summary, key, data, limits, variant=variant, model=model, shadow=shadow,
                         version=challenger_version if shadow else None)
    return summary


def _refuse(sink: CaptureSink, summary: CaptureImport, key: str, model: str, why: str) -> None:
    summary.refused_files += 1
    summary.note(f"refused s3 object {key}: {why}")
    sink.import_capture(key, model, [], note=f"refused: {why}")


def _import_file(sink: CaptureSink, summary: CaptureImport, key: str, data: bytes, limits: CaptureLimits,
                 *, variant: str, model: str, shadow: bool, version: int | None) -> None:
    events: list[ImportedEvent] = []
    bad = skipped = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            if len(line) > limits.max_line_bytes:
                raise CaptureFormatError(f"{len(line)} bytes, above capture_max_line_kib")
            event = parse_capture_line(line)
        except CaptureFormatError as exc:
            bad += 1
            summary.note(f"{key} line {number} skipped: {exc}")
            continue
        try:
            events.append(to_rows(event, variant=variant, model=model, shadow=shadow, version=version))
        except CaptureFormatError as exc:
            skipped += 1
            summary.note(f"{key} event {event.event_id} skipped: {exc}")
    note = f"{bad} bad lines, {skipped} events not ours" if bad or skipped else None
    summary.events += len(events)
    summary.bad_lines += bad
    summary.skipped_events += skipped
    new, clashes = sink.import_capture(key, model, events, bad_lines=bad, note=note)
    summary.new_events += new
    if clashes:
        summary.clashing_rows += clashes
        summary.note(f"{key}: {clashes} rows not imported: their request id (InferenceId) and row were already in "
                     "the inference log; give every InvokeEndpoint call its own InferenceId")
