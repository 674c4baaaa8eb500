"""scriptbox's AWS API worker: one AWS call of a runbook action (aws:executeAwsApi and the
actions built on it), made with boto3 as AWS's own Automation service makes it.

Never user code: scriptbox embeds this file (include_str!) and runs it as the handler of a step
of its own, in a runtime image, through the same sandbox, egress and credentials as any step.
The event is {"Service", "Api", "Parameters", "MaxResponseBytes", "Emulator"}; the handler
always returns (never raises) {"ok": true, "response": ...} or {"ok": false, "kind", "message",
...}: the host maps the kind to the step's failure.

Python 3.6 syntax: it may run in any Python runtime of the catalog.
"""

import base64
import datetime
import decimal
import json

# Seconds of one HTTP exchange (AWS: executeAwsApi calls take at most 25 s).
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 20

# Operations whose streaming body an action of AWS's own reads whole (aws:invokeLambdaFunction's
# Payload), bounded by MaxResponseBytes and rendered as bytes (base64).
READ_WHOLE = {("lambda", "Invoke")}


class Failure(Exception):
    """A call that did not produce a response, with its kind (the host's failure reason)."""

    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.extra = extra


def normalize(name):
    """An operation name compared ignoring case, '-' and '_' (describe-snapshots, DescribeSnapshots)."""
    return name.replace("-", "").replace("_", "").lower()


def render(value):
    """A response value as AWS renders it: datetimes ISO 8601, bytes base64."""
    if isinstance(value, dict):
        return {str(k): render(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [render(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    # A streaming body or another object boto3 builds: not part of a JSON response.
    raise Failure(
        "StreamingNotSupported",
        "the response holds a {} value, which is not JSON (a streaming body?)".format(
            type(value).__name__
        ),
    )


def operation_of(client, service, api):
    """The operation `api` names (matched ignoring case, '-' and '_') and its client method."""
    model = client.meta.service_model
    wanted = normalize(api)
    found = [op for op in model.operation_names if normalize(op) == wanted]
    if not found:
        raise Failure(
            "UnknownOperation",
            "service {!r} has no operation {!r} (boto3 {} knows {} operations of it)".format(
                service, api, boto3_version(), len(model.operation_names)
            ),
        )
    operation = found[0]
    methods = {v: k for k, v in client.meta.method_to_api_mapping.items()}
    method = methods.get(operation)
    if method is None:
        raise Failure(
            "UnknownOperation",
            "service {!r} has no client method for {!r}".format(service, operation),
        )
    streaming = model.operation_model(operation).has_streaming_output
    if streaming and (service, operation) not in READ_WHOLE:
        raise Failure(
            "StreamingNotSupported",
            "{}.{} returns a streaming body, which aws:executeAwsApi does not support".format(
                service, operation
            ),
            operation=operation,
        )
    return operation, getattr(client, method)


def boto3_version():
    import boto3

    return boto3.__version__


def client_of(service):
    import boto3
    import botocore.config
    import botocore.exceptions

    session = boto3.session.Session()
    if service not in session.get_available_services():
        raise Failure(
            "UnknownService",
            "{!r} is not a boto3 service name (boto3 {}: ec2, ssm, s3, ...)".format(
                service, boto3_version()
            ),
        )
    config = botocore.config.Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": 2},
    )
    try:
        return session.client(service, config=config)
    except botocore.exceptions.NoRegionError as e:
        raise Failure("NoRegion", str(e))


def lacks_operation(error, emulator):
    """True when an emulator answered as it does for an operation it does not implement: HTTP
    404 or 500/501 without an AWS error code of its own (moto: 500 with an HTML body for ssm)."""
    if not emulator:
        return False
    response = getattr(error, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = str((response.get("Error") or {}).get("Code") or "")
    message = str((response.get("Error") or {}).get("Message") or "")
    if status not in (404, 500, 501):
        return False
    generic = code in ("", str(status), "NotImplemented")
    return generic or "<html" in message.lower() or "<!doctype" in message.lower()


def make_call(event):
    import botocore.exceptions

    service = event["Service"]
    api = event["Api"]
    parameters = event["Parameters"]
    emulator = bool(event.get("Emulator"))
    client = client_of(service)
    operation, method = operation_of(client, service, api)
    try:
        response = method(**parameters)
    except botocore.exceptions.ParamValidationError as e:
        raise Failure("InvalidParameters", str(e), operation=operation)
    except botocore.exceptions.ClientError as e:
        if lacks_operation(e, emulator):
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise Failure(
                "EmulatorLacksOperation", str(e), operation=operation, status=status
            )
        code = str((e.response.get("Error") or {}).get("Code") or "")
        raise Failure("ServiceError", str(e), operation=operation, code=code)
    except (
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
    ) as e:
        raise Failure("CallTimedOut", str(e), operation=operation)
    except botocore.exceptions.EndpointConnectionError as e:
        raise Failure("EndpointUnreachable", str(e), operation=operation)
    except botocore.exceptions.NoCredentialsError as e:
        raise Failure("NoCredentials", str(e), operation=operation)
    if (service, operation) in READ_WHOLE:
        for key, value in list(response.items()):
            if hasattr(value, "read"):
                response[key] = value.read(event["MaxResponseBytes"] + 1)
    rendered = render(response)
    size = len(json.dumps(rendered, separators=(",", ":")).encode("utf-8"))
    if size > event["MaxResponseBytes"]:
        raise Failure(
            "ResponseTooLarge",
            "{}.{} answered {} bytes of JSON, over the limit of {} bytes".format(
                service, operation, size, event["MaxResponseBytes"]
            ),
            operation=operation,
        )
    return operation, rendered


def handler(event, context):
    """The step's handler: one call; never raises."""
    try:
        operation, response = make_call(event)
        return {"ok": True, "operation": operation, "response": response}
    except Failure as f:
        out = {"ok": False, "kind": f.kind, "message": f.message}
        out.update(f.extra)
        return out
    except Exception as e:  # a botocore error of another kind: still a clear failure
        return {
            "ok": False,
            "kind": "CallFailed",
            "message": "{}: {}".format(type(e).__name__, e),
        }
