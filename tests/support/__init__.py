"""Test support code: a Hub-protocol server for the real ``huggingface_hub`` client (:mod:`.hub_server`)."""
