"""Model facts from a folder: read without the model, and still answered when the folder disappears."""

from __future__ import annotations

import shutil

from embedding_server.engine.facts import facts_of
from embedding_server.engine.registry import ModelEntry
from tests.support.checkpoints import make_tiny_bert


def test_facts_of_an_unloaded_folder_come_from_its_config(tmp_path):
    make_tiny_bert(tmp_path / "m")
    facts = facts_of(ModelEntry("m", tmp_path / "m"), "float32")
    assert facts.name == "m" and facts.architecture == "bert" and facts.dimension > 0 and not facts.loaded
    assert facts.size > 0 and len(facts.digest) == 64 and facts.outputs == frozenset({"dense"})


def test_a_folder_removed_while_its_model_unloads_is_described_not_an_error(tmp_path):
    """/api/tags lists entries kept while unloading; the folder may be gone by then (it used to answer 500)."""
    make_tiny_bert(tmp_path / "m")
    entry = ModelEntry("m", tmp_path / "m")
    shutil.rmtree(tmp_path / "m")
    facts = facts_of(entry, "float32")
    assert facts.size == 0 and facts.digest == "" and facts.architecture == "unknown"
