"""Drives scriptbox's SSM API with boto3 (run by tests/ssm_api.rs).

argv: endpoint, attachments folder. Every check is an assert; the test fails on a non-zero exit.
"""
import hashlib
import os
import sys
import time
import uuid

import boto3
from botocore.exceptions import ClientError

endpoint, folder = sys.argv[1], sys.argv[2]
ssm = boto3.client(
    "ssm",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)

helper = open(os.path.join(folder, "helper.py"), "rb").read()
sha = hashlib.sha256(helper).hexdigest()

DOC = """schemaVersion: '0.3'
description: Greets and doubles
parameters:
  Who:
    type: String
    default: world
  Times:
    type: Integer
    default: 1
files:
  helper.py:
    checksums:
      sha256: %s
outputs:
  - Greet.Message
  - Double.Doubled
mainSteps:
  - name: Greet
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |
        def h(e, c):
            print("greeting", e["who"])
            return {"msg": " ".join(["hello " + e["who"]] * e["n"])}
      InputPayload:
        who: '{{ Who }}'
        n: '{{ Times }}'
    outputs:
      - Name: Message
        Selector: $.Payload.msg
        Type: String
  - name: Double
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: helper.run
      Attachment: helper.py
      InputPayload:
        n: '{{ Times }}'
    outputs:
      - Name: Doubled
        Selector: $.Payload.doubled
        Type: Integer
""" % sha


def code(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} {kw} did not fail")


def wait(exec_id, until=("Success", "Failed", "TimedOut", "Cancelled"), limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        a = ssm.get_automation_execution(AutomationExecutionId=exec_id)["AutomationExecution"]
        if a["AutomationExecutionStatus"] in until:
            return a
        time.sleep(0.3)
    raise AssertionError(f"{exec_id} did not reach {until}: {a}")


# --- Documents -------------------------------------------------------------------------------
d = ssm.create_document(
    Content=DOC,
    Name="Greeter",
    DocumentType="Automation",
    DocumentFormat="YAML",
    Attachments=[{"Key": "SourceUrl", "Values": ["file://" + folder]}],
)["DocumentDescription"]
assert d["Name"] == "Greeter" and d["DocumentVersion"] == "1", d
assert d["Hash"] == hashlib.sha256(DOC.encode()).hexdigest() and d["HashType"] == "Sha256", d
assert d["Status"] == "Active" and d["DocumentType"] == "Automation", d
assert d["SchemaVersion"] == "0.3" and d["DocumentFormat"] == "YAML", d
assert d["LatestVersion"] == "1" and d["DefaultVersion"] == "1", d
assert d["AttachmentsInformation"] == [{"Name": "helper.py"}], d
assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]} == {"Who": "world", "Times": "1"}, d
assert d["CreatedDate"].year >= 2024, d  # a datetime: the timestamp parsed as epoch seconds

g = ssm.get_document(Name="Greeter")
assert g["Content"] == DOC and g["DocumentVersion"] == "1" and g["DocumentFormat"] == "YAML", g
assert g["AttachmentsContent"][0]["Name"] == "helper.py", g
assert g["AttachmentsContent"][0]["Hash"] == sha, g

desc = ssm.describe_document(Name="Greeter")["Document"]
assert desc["Description"] == "Greets and doubles", desc

names = [i["Name"] for i in ssm.list_documents()["DocumentIdentifiers"]]
assert "Greeter" in names, names
only = ssm.list_documents(Filters=[{"Key": "DocumentType", "Values": ["Automation"]}])
assert [i["Name"] for i in only["DocumentIdentifiers"]] == names, only

# UpdateDocument: a new version; the default stays 1 until UpdateDocumentDefaultVersion.
DOC2 = DOC.replace("Greets and doubles", "Greets and doubles, v2")
u = ssm.update_document(Content=DOC2, Name="Greeter", DocumentVersion="$LATEST")["DocumentDescription"]
assert u["DocumentVersion"] == "2" and u["LatestVersion"] == "2" and u["DefaultVersion"] == "1", u
assert ssm.get_document(Name="Greeter")["DocumentVersion"] == "1"
assert ssm.get_document(Name="Greeter", DocumentVersion="$LATEST")["Content"] == DOC2
assert ssm.get_document(Name="Greeter", DocumentVersion="2")["Content"] == DOC2
dv = ssm.update_document_default_version(Name="Greeter", DocumentVersion="2")["Description"]
assert dv["DefaultVersion"] == "2", dv
assert ssm.describe_document(Name="Greeter")["Document"]["Description"] == "Greets and doubles, v2"

# One file by S3FileUrl (a local file), and VersionName.
single = ssm.create_document(
    Content=DOC,
    Name="Single",
    DocumentType="Automation",
    VersionName="first",
    Attachments=[{"Key": "S3FileUrl", "Values": ["file://" + folder + "/helper.py"], "Name": "helper.py"}],
)["DocumentDescription"]
assert single["VersionName"] == "first" and single["AttachmentsInformation"] == [{"Name": "helper.py"}], single
assert ssm.get_document(Name="Single", VersionName="first")["DocumentVersion"] == "1"
assert code(ssm.get_document, Name="Single", VersionName="second") == "InvalidDocumentVersion"
assert code(
    ssm.create_document, Name="FromS3", Content=DOC, DocumentType="Automation",
    Attachments=[{"Key": "SourceUrl", "Values": ["s3://bucket/prefix"]}],
) == "ValidationException"
ssm.delete_document(Name="Single")

# --- A successful execution with parameters --------------------------------------------------
ex = ssm.start_automation_execution(
    DocumentName="Greeter", DocumentVersion="1", Parameters={"Who": ["bob"], "Times": ["2"]}
)["AutomationExecutionId"]
assert len(ex) == 36, ex
a = wait(ex)
assert a["AutomationExecutionStatus"] == "Success", a
assert a["DocumentName"] == "Greeter" and a["DocumentVersion"] == "1", a
assert a["Parameters"] == {"Who": ["bob"], "Times": ["2"]}, a
assert a["Outputs"]["Greet.Message"] == ["hello bob hello bob"], a
assert a["Outputs"]["Double.Doubled"] == ["4"], a
assert a["ExecutionEndTime"] >= a["ExecutionStartTime"], a
steps = a["StepExecutions"]
assert [s["StepName"] for s in steps] == ["Greet", "Double"], steps
assert steps[0]["Action"] == "aws:executeScript" and steps[0]["StepStatus"] == "Success", steps
assert steps[0]["Outputs"]["Message"] == ["hello bob hello bob"], steps
assert steps[1]["Outputs"]["Doubled"] == ["4"], steps
assert isinstance(steps[0]["Inputs"]["Runtime"], str), steps

se = ssm.describe_automation_step_executions(AutomationExecutionId=ex)["StepExecutions"]
assert [s["StepName"] for s in se] == ["Greet", "Double"], se
one = ssm.describe_automation_step_executions(
    AutomationExecutionId=ex, Filters=[{"Key": "StepName", "Values": ["Double"]}]
)["StepExecutions"]
assert [s["StepName"] for s in one] == ["Double"], one
page = ssm.describe_automation_step_executions(AutomationExecutionId=ex, MaxResults=1)
assert len(page["StepExecutions"]) == 1 and "NextToken" in page, page
rest = ssm.describe_automation_step_executions(
    AutomationExecutionId=ex, MaxResults=1, NextToken=page["NextToken"]
)
assert [s["StepName"] for s in rest["StepExecutions"]] == ["Double"], rest

# The default version (2) runs when no version is given.
ex2 = ssm.start_automation_execution(DocumentName="Greeter")["AutomationExecutionId"]
a2 = wait(ex2)
assert a2["AutomationExecutionStatus"] == "Success" and a2["DocumentVersion"] == "2", a2
assert a2["Outputs"]["Greet.Message"] == ["hello world"], a2

# --- A failing step ---------------------------------------------------------------------------
FAIL = """schemaVersion: '0.3'
mainSteps:
  - name: Boom
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |
        def h(e, c):
            raise ValueError("kaboom")
"""
ssm.create_document(Content=FAIL, Name="Failing", DocumentType="Automation")
fx = ssm.start_automation_execution(DocumentName="Failing")["AutomationExecutionId"]
f = wait(fx)
assert f["AutomationExecutionStatus"] == "Failed", f
assert "kaboom" in f["StepExecutions"][0]["FailureMessage"], f
assert f["StepExecutions"][0]["StepStatus"] == "Failed", f
assert "FailureMessage" in f, f

# --- A stopped execution ----------------------------------------------------------------------
SLEEP = """schemaVersion: '0.3'
mainSteps:
  - name: Nap
    action: aws:executeScript
    inputs:
      Runtime: python3.11
      Handler: h
      Script: |
        import time
        def h(e, c):
            print("napping", flush=True)
            time.sleep(120)
"""
ssm.create_document(Content=SLEEP, Name="Sleeper", DocumentType="Automation")
sx = ssm.start_automation_execution(DocumentName="Sleeper")["AutomationExecutionId"]
running = wait(sx, until=("InProgress",))
ssm.stop_automation_execution(AutomationExecutionId=sx)
right_after = ssm.get_automation_execution(AutomationExecutionId=sx)["AutomationExecution"]
assert right_after["AutomationExecutionStatus"] in ("Cancelling", "Cancelled"), right_after
s = wait(sx, until=("Cancelled", "Success", "Failed", "TimedOut"), limit=60)
assert s["AutomationExecutionStatus"] == "Cancelled", s
assert code(ssm.stop_automation_execution, AutomationExecutionId=sx) == "InvalidAutomationStatusUpdateException"

# --- DescribeAutomationExecutions: filters and paging -----------------------------------------
lst = ssm.describe_automation_executions(
    Filters=[{"Key": "DocumentNamePrefix", "Values": ["Greet"]}]
)["AutomationExecutionMetadataList"]
assert sorted(m["AutomationExecutionId"] for m in lst) == sorted([ex, ex2]), lst
lst = ssm.describe_automation_executions(
    Filters=[{"Key": "ExecutionStatus", "Values": ["Failed"]}]
)["AutomationExecutionMetadataList"]
assert [m["AutomationExecutionId"] for m in lst] == [fx], lst
lst = ssm.describe_automation_executions(Filters=[{"Key": "ExecutionId", "Values": [sx]}])
assert lst["AutomationExecutionMetadataList"][0]["AutomationExecutionStatus"] == "Cancelled", lst
seen, token = [], None
while True:
    kw = {"MaxResults": 2}
    if token:
        kw["NextToken"] = token
    p = ssm.describe_automation_executions(**kw)
    seen += [m["AutomationExecutionId"] for m in p["AutomationExecutionMetadataList"]]
    token = p.get("NextToken")
    if not token:
        break
assert sorted(seen) == sorted([ex, ex2, fx, sx]), seen

# --- Every error as the right ClientError code ------------------------------------------------
missing = str(uuid.uuid4())
assert code(ssm.get_document, Name="NoSuchDoc") == "InvalidDocument"
assert code(ssm.describe_document, Name="NoSuchDoc") == "InvalidDocument"
assert code(ssm.delete_document, Name="NoSuchDoc") == "InvalidDocument"
assert code(ssm.update_document, Name="NoSuchDoc", Content=DOC) == "InvalidDocument"
assert code(ssm.get_document, Name="Greeter", DocumentVersion="9") == "InvalidDocumentVersion"
assert code(ssm.update_document, Name="Greeter", Content=DOC + "\n# 3", DocumentVersion="1") == "InvalidDocumentVersion"
assert code(ssm.update_document, Name="Greeter", Content=DOC2, DocumentVersion="$LATEST") == "DuplicateDocumentContent"
assert code(ssm.create_document, Name="Greeter", Content=FAIL, DocumentType="Automation") == "DocumentAlreadyExists"
assert code(ssm.create_document, Name="Broken", Content="schemaVersion: '0.3'\nmainSteps: 7\n", DocumentType="Automation") == "InvalidDocumentContent"
assert code(ssm.create_document, Name="Broken", Content="{not yaml: [", DocumentType="Automation") == "InvalidDocumentContent"
assert code(ssm.create_document, Name="Cmd", Content=FAIL, DocumentType="Command") == "ValidationException"
assert code(ssm.create_document, Name="x", Content=FAIL, DocumentType="Automation") == "ValidationException"
# The attachment's checksum must match `files`: a folder without the file is refused.
assert code(ssm.create_document, Name="NoFiles", Content=DOC, DocumentType="Automation") == "InvalidDocumentContent"
assert code(ssm.start_automation_execution, DocumentName="NoSuchDoc") == "AutomationDefinitionNotFoundException"
assert code(ssm.start_automation_execution, DocumentName="Greeter", DocumentVersion="7") == "AutomationDefinitionVersionNotFoundException"
assert code(ssm.start_automation_execution, DocumentName="Greeter", Parameters={"Times": ["many"]}) == "InvalidAutomationExecutionParametersException"
assert code(ssm.start_automation_execution, DocumentName="Greeter", Parameters={"Nope": ["1"]}) == "InvalidAutomationExecutionParametersException"
assert code(ssm.get_automation_execution, AutomationExecutionId=missing) == "AutomationExecutionNotFoundException"
assert code(ssm.describe_automation_step_executions, AutomationExecutionId=missing) == "AutomationExecutionNotFoundException"
assert code(ssm.stop_automation_execution, AutomationExecutionId=missing) == "AutomationExecutionNotFoundException"
assert code(ssm.describe_automation_executions, NextToken="garbage") == "InvalidNextToken"
assert code(ssm.describe_automation_executions, Filters=[{"Key": "StartTimeBefore", "Values": ["yesterday"]}]) == "InvalidFilterValue"
assert code(ssm.list_documents, Filters=[{"Key": "Colour", "Values": ["red"]}]) == "InvalidFilterKey"
# Modelled exceptions come out as their botocore classes too.
try:
    ssm.get_automation_execution(AutomationExecutionId=missing)
except ssm.exceptions.AutomationExecutionNotFoundException:
    pass

# DeleteDocument: one version, then the whole document.
assert code(ssm.delete_document, Name="Greeter", DocumentVersion="2") == "InvalidDocumentOperation"
ssm.delete_document(Name="Greeter", DocumentVersion="1")
assert code(ssm.get_document, Name="Greeter", DocumentVersion="1") == "InvalidDocumentVersion"
ssm.delete_document(Name="Failing")
assert code(ssm.get_document, Name="Failing") == "InvalidDocument"
# Executions outlive their document.
assert ssm.get_automation_execution(AutomationExecutionId=fx)["AutomationExecution"]["AutomationExecutionStatus"] == "Failed"

print("IDS", ex, ex2, fx, sx)
print("OK")
