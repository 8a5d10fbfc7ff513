"""Triage: sample every case of a dataset once and rank them by expert disagreement
(docs/triage.md is the run folder's contract)."""
