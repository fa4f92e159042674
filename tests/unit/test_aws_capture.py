"""Data Capture lines, strictly: the documented shape (AWS SageMaker Data Capture), JSON bodies only."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from autopilot.config import AwsDeploymentConfig
from autopilot.deploy.aws.capture import CaptureFormatError, capture_uri, parse_capture_line, to_rows, variant_prefix


def line(input_data: str = '{"records": [{"age": 40}, {"age": 50}]}', input_encoding: str = "JSON",
         output: Any = None, content_type: str = "application/json", **meta: Any) -> str:
    answer = output if output is not None else {"model": "m", "model_version": 4, "predictions": [0.25, 0.75]}
    return json.dumps({"captureData": {
        "endpointInput": {"observedContentType": content_type, "mode": "INPUT", "data": input_data,
                          "encoding": input_encoding},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": base64.b64encode(json.dumps(answer).encode()).decode(), "encoding": "BASE64"}},
        "eventMetadata": {"eventId": "e-1", "inferenceTime": "2026-12-07T09:01:02.123Z", **meta},
        "eventVersion": "0"})


def test_a_documented_line_becomes_rows_keyed_by_the_inference_id() -> None:
    event = parse_capture_line(line(inferenceId="order-17"))
    assert (event.event_id, event.inference_id) == ("e-1", "order-17")
    assert event.at == datetime(2026, 12, 7, 9, 1, 2, 123000, tzinfo=UTC)
    served = to_rows(event, variant="AllTraffic", model="m", shadow=False)
    assert [(r["request_id"], r["row"], r["features"], r["prediction"]) for r in served.records] == [
        ("order-17", 0, {"age": 40}, 0.25), ("order-17", 1, {"age": 50}, 0.75)]
    shadowed = to_rows(event, variant="shadow", model="m", shadow=True, version=4)
    assert shadowed.shadow and all(r["features"] == {} for r in shadowed.records)
    with pytest.raises(CaptureFormatError, match="not the challenger's 5"):
        to_rows(event, variant="shadow", model="m", shadow=True, version=5)
    # no InferenceId: the event id stands in
    assert to_rows(parse_capture_line(line()), variant="AllTraffic", model="m", shadow=False).records[0][
        "request_id"] == "e-1"


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON"),
    (json.dumps([1, 2]), "must be a JSON object"),
    (line(input_data="age\n40", input_encoding="CSV", content_type="text/csv"), "CSV"),
    (line(input_encoding="GZIP"), "encoding must be one of"),
    (line(input_data="%%%", input_encoding="BASE64"), "not base64"),
    (line(eventId=""), "eventId"),
    (line(inferenceTime="yesterday"), "not an ISO time"),
])
def test_malformed_lines_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(CaptureFormatError, match=message):
        parse_capture_line(text)


def test_an_error_answer_is_not_ours_to_import() -> None:
    event = parse_capture_line(line(output={"error": "no model is loaded yet"}))
    with pytest.raises(CaptureFormatError, match="no predictions"):
        to_rows(event, variant="AllTraffic", model="m", shadow=False)


def test_the_capture_destination_is_under_the_deployments_bucket_and_prefix() -> None:
    aws = AwsDeploymentConfig(bucket="b", prefix="/models/", capture_prefix="data-capture")
    assert capture_uri(aws) == "s3://b/models/data-capture"
    assert variant_prefix(aws, "ep", "shadow") == "models/data-capture/ep/shadow/"
