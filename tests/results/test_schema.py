"""The record schema (harness.results.schema) against what is written and read: every
committed record, the schema-1 fixture after upgrading, and the test records."""

import json
from pathlib import Path

import pytest

from harness.results import schema
from harness.results.store import record_paths, upgrade

REPO = Path(__file__).resolve().parents[2]
RECORDS = record_paths(REPO / "results")
FIXTURES = Path(__file__).parent / "fixtures"


def test_there_are_committed_records():
    assert len(RECORDS) >= 30


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_committed_records_have_every_field_and_only_described_ones(path):
    record = upgrade(json.loads(path.read_text()), str(path))
    assert schema.missing_fields(record) == []
    assert schema.undeclared_fields(record) == []


def test_schema_1_record_upgrades_to_the_schema():
    record = upgrade(json.loads((FIXTURES / "record_v1.json").read_text()))
    assert schema.missing_fields(record) == []
    assert schema.undeclared_fields(record) == []


def test_missing_fields_names_the_path_and_follows_the_status():
    record = upgrade(json.loads((FIXTURES / "record_v1.json").read_text()))
    del record["metrics"]["dev_history"][0]["step"]
    del record["protocol"]["hash"]
    record["memory"] = {"method": "m"}                 # neither a measurement nor an error
    record["sparsity"] = None                          # allowed: null
    record["git"] = None                               # not allowed
    assert schema.missing_fields(record) == ["protocol.hash", "git", "metrics.dev_history[0].step",
                                             "memory.phases", "memory.ratios"]
    failed = {key: record[key] for key in schema.RecordHeader.__annotations__} | {"status": "failed"}
    assert schema.missing_fields(failed) == ["protocol.hash", "git", "error", "wall_seconds"]   # no metrics


def test_undeclared_fields_names_what_the_schema_does_not_describe():
    record = upgrade(json.loads((FIXTURES / "record_v1.json").read_text()))
    record["throughput"]["warp_speed"] = 9.0
    record["memory"] = {"error": "x", "hint": "y"}
    assert schema.undeclared_fields(record) == ["throughput.warp_speed", "memory.hint"]


@pytest.mark.parametrize("fields", [{}, {"variant": "hf-ft"}, {"status": "failed"},
                                    {"hardware": "cuda:NVIDIA H100"}])
def test_test_records_follow_the_schema(make_record, fields):
    record = make_record(**fields)
    assert schema.missing_fields(record) == [] and schema.undeclared_fields(record) == []
    assert schema.record_type(record) is (schema.FailedRecord if fields.get("status") == "failed"
                                          else schema.FinishedRecord)


def test_committed_records_keep_the_schema_key_order():
    """The order of a committed record's keys is the schema's declaration order."""
    declared = list(schema.FinishedRecord.__annotations__)
    for path in RECORDS:
        keys = list(json.loads(path.read_text()))
        assert keys == [key for key in declared if key in keys], path.name
