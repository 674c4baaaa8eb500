"""boto3 against scriptbox serve --ssm-api: a parent runbook whose aws:executeAutomation child
comes from the SSM documents; the child is its own execution with ParentAutomationExecutionId,
its outputs flow back; stopping a parent stops its child. Prints OK PARENT CHILD at the end."""
import sys
import time

import boto3

ssm = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1")

CHILD = """schemaVersion: '0.3'
parameters:
  Who: {type: String}
mainSteps:
  - name: greet
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      InputPayload: {who: '{{ Who }}'}
      Script: |-
        def h(e, c):
            return {"greeting": "hello " + e["who"]}
    outputs:
      - {Name: Greeting, Selector: $.Payload.greeting, Type: String}
outputs: [greet.Greeting]
"""
PARENT = """schemaVersion: '0.3'
mainSteps:
  - name: Child
    action: aws:executeAutomation
    inputs:
      DocumentName: Child
      RuntimeParameters: {Who: boto3}
outputs: [Child.Output, Child.ExecutionId]
"""
SLOW = """schemaVersion: '0.3'
mainSteps:
  - name: nap
    action: aws:sleep
    inputs: {Duration: PT120S}
"""
WAITER = """schemaVersion: '0.3'
mainSteps:
  - name: Slow
    action: aws:executeAutomation
    inputs: {DocumentName: Slow}
"""
for name, body in [("Child", CHILD), ("Parent", PARENT), ("Slow", SLOW), ("Waiter", WAITER)]:
    ssm.create_document(Name=name, Content=body, DocumentType="Automation", DocumentFormat="YAML")


def wait(eid, done=("Success", "Failed", "TimedOut", "Cancelled")):
    deadline = time.time() + 120
    while time.time() < deadline:
        e = ssm.get_automation_execution(AutomationExecutionId=eid)["AutomationExecution"]
        if e["AutomationExecutionStatus"] in done:
            return e
        time.sleep(0.3)
    raise SystemExit(f"{eid} did not end: {e}")


parent_id = ssm.start_automation_execution(DocumentName="Parent")["AutomationExecutionId"]
parent = wait(parent_id)
assert parent["AutomationExecutionStatus"] == "Success", parent
assert "ParentAutomationExecutionId" not in parent, parent
assert parent["Outputs"]["Child.Output"] == ["hello boto3"], parent["Outputs"]
child_id = parent["Outputs"]["Child.ExecutionId"][0]
child = ssm.get_automation_execution(AutomationExecutionId=child_id)["AutomationExecution"]
assert child["ParentAutomationExecutionId"] == parent_id, child
assert child["DocumentName"] == "Child" and child["DocumentVersion"] == "1", child
assert child["AutomationExecutionStatus"] == "Success", child
assert child["Outputs"] == {"greet.Greeting": ["hello boto3"]}, child
assert child["Parameters"]["Who"] == ["boto3"], child
listed = ssm.describe_automation_executions(
    Filters=[{"Key": "ParentExecutionId", "Values": [parent_id]}]
)["AutomationExecutionMetadataList"]
assert [m["AutomationExecutionId"] for m in listed] == [child_id], listed
assert listed[0]["ParentAutomationExecutionId"] == parent_id, listed

# Stopping the parent stops the child it waits for.
waiter_id = ssm.start_automation_execution(DocumentName="Waiter")["AutomationExecutionId"]
slow_id = None
deadline = time.time() + 60
while slow_id is None and time.time() < deadline:
    kids = ssm.describe_automation_executions(
        Filters=[{"Key": "ParentExecutionId", "Values": [waiter_id]}]
    )["AutomationExecutionMetadataList"]
    running = [k for k in kids if k["AutomationExecutionStatus"] == "InProgress"]
    if running:
        slow_id = running[0]["AutomationExecutionId"]
    else:
        time.sleep(0.2)
assert slow_id, "the Slow child never ran"
ssm.stop_automation_execution(AutomationExecutionId=waiter_id)
waiter = wait(waiter_id)
slow = wait(slow_id)
assert waiter["AutomationExecutionStatus"] == "Cancelled", waiter
assert slow["AutomationExecutionStatus"] == "Cancelled", slow
print("OK", parent_id, child_id)
