# The example `make demo` runs: an aws:executeScript handler as it would appear in a runbook.
import platform
import sys


def script_handler(events, context):
    print("Hello from a scriptbox sandbox, running as uid", __import__("os").getuid())
    print("a line on stderr goes to the log too", file=sys.stderr)
    import boto3  # pinned per runtime in runtimes.toml

    return {
        "greeting": "Hello, {}!".format(events.get("name", "world")),
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "execution": context["automation:EXECUTION_ID"],
    }
