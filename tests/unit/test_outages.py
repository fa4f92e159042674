"""An outage is told apart from an answer: real exceptions from the real libraries, as they are raised."""

from __future__ import annotations

import socket

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError
from mlflow.exceptions import MlflowException, RestException
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from autopilot.outages import is_outage


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_through_mlflows_rest_client_is_an_outage() -> None:
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    creds = MlflowHostCreds(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(MlflowException) as raised:
        http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0, timeout=2)
    assert is_outage(raised.value)


def test_server_errors_and_retry_codes_are_outages_but_answers_are_not() -> None:
    assert is_outage(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}))
    assert is_outage(RestException({"error_code": "INTERNAL_ERROR", "message": "db gone"}))
    assert is_outage(MlflowException("API request to endpoint /x failed with error code 503 != 200"))
    assert not is_outage(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no model"}))
    assert not is_outage(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no alias"}))
    assert not is_outage(MlflowException("Model is missing inputs ['age']", error_code="BAD_REQUEST"))


def test_database_and_transport_errors_anywhere_in_the_chain_are_outages() -> None:
    engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/x",
                           connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as raised, engine.connect() as conn:
        conn.execute(text("select 1"))
    assert is_outage(raised.value)
    try:
        try:
            requests.get(f"http://127.0.0.1:{_closed_port()}/", timeout=2)
        except requests.RequestException as exc:
            raise RuntimeError("loading the reports failed") from exc
    except RuntimeError as wrapped:
        assert is_outage(wrapped)
    assert is_outage(ConnectionResetError("peer reset")) and is_outage(TimeoutError("slow"))


def test_aws_throttling_and_unreachable_endpoints_are_outages_but_refusals_are_not() -> None:
    assert is_outage(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "CreateEndpoint")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    assert is_outage(throttled) and not is_outage(denied)


def test_model_and_data_errors_are_not_outages() -> None:
    assert not is_outage(ValueError("Input contains NaN"))
    assert not is_outage(KeyError("sex"))
    assert not is_outage(FileNotFoundError("model.skops"))


def test_a_context_suppressed_with_from_none_is_not_followed() -> None:
    try:
        try:
            raise ConnectionRefusedError("the store is down")
        except ConnectionRefusedError:
            raise ValueError("the model file is not a skops archive") from None
    except ValueError as verdict:
        assert not is_outage(verdict)
