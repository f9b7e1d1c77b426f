"""The zoo's recorded numbers under the split protocol: VariantResult read back with and without the fields added for
it (results recorded before still list), the table's decision-features and speedup columns, and measure() reporting
test numbers only when every run of the entry has them."""

import json
import shutil
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from sparsezoo.zoo import Listing, VariantResult, ZooResultsError, list_entries, registry, results_table
from sparsezoo.zoo.measuring import analysis_samples, evaluated, measure

OLD = {  # a variant as zoo-results.json recorded it before the split protocol
    "variant": "dense", "recipe_hash": "88a38098c435724c", "penalties": {}, "activation": None, "top1": 0.78,
    "recovery": 1.0, "recovery_class": "conservative", "zero_frac": 0.41, "near_zero_frac": 0.43, "l0_frac": 0.58,
    "dead_units": 65, "sites": 35, "margin_median_factor": 84.4, "layers_inside_theorem": 0, "layers_measured": 35,
    "mu_local_median": 0.5, "cka_to_baseline": 1.0, "class_selectivity_top16": 0.99, "wall_seconds": 616.0,
    "analysis_samples": 512,
}
NEW = {**OLD, "decision_features": 23.5, "eval_split": "test", "selection_split": "validation", "val_top1": 0.8,
       "val_recovery": 1.0, "analysis_split": "test", "speedup": 1.25}
ADDED = ("decision_features", "eval_split", "selection_split", "val_top1", "val_recovery", "analysis_split", "speedup")


def test_a_variant_recorded_before_the_split_protocol_reads_with_the_new_fields_none():
    r = VariantResult.from_json(OLD)
    assert all(getattr(r, name) is None for name in ADDED)
    assert r.to_json() == {**OLD, **dict.fromkeys(ADDED)}


def test_a_variant_with_the_new_fields_round_trips():
    r = VariantResult.from_json(NEW)
    assert r.to_json() == NEW == asdict(r)
    assert VariantResult.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert VariantResult.from_json({**NEW, "from_a_later_version": 1}) == r  # unknown keys are left out


def test_a_variant_missing_a_recorded_field_is_a_results_error():
    with pytest.raises(ZooResultsError, match="zoo-results.json: recorded results lack top1"):
        VariantResult.from_json({k: v for k, v in OLD.items() if k != "top1"}, "zoo-results.json")
    with pytest.raises(ZooResultsError, match="not a JSON object"):
        VariantResult.from_json([1, 2])


def test_the_table_shows_decision_features_beside_zero_frac_and_the_speedup():
    table = results_table([Listing("e", "E", ["dense", "l1", "new"],
                                   {"dense": OLD, "l1": {**NEW, "variant": "l1", "speedup": None}, "new": NEW})])
    header, _, old, unbenchmarked, new = table.splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[4:6] == ["zero_frac %", "decision features (median)"] and columns[-1] == "speedup"
    assert [c.strip() for c in old.strip("|").split("|")][5] == "—" and old.endswith("| — |")
    assert "| 41.0 | 23.5 | 43.0 |" in new and new.endswith("| 1.25× |") and unbenchmarked.endswith("| — |")


def test_zoo_list_reads_results_recorded_before_the_new_fields(tmp_path):
    name = next(iter(registry().entries))
    (tmp_path / "zoo-results.json").write_text(json.dumps({"zoo": 1, "entries": {name: {"variants": {"dense": OLD}}}}))
    listing = next(item for item in list_entries(tmp_path / "no-build", tmp_path) if item.entry == name)
    assert listing.results["dense"]["decision_features"] is None and listing.results["dense"]["top1"] == 0.78
    assert "| — |" in results_table([listing])
    (tmp_path / "zoo-results.json").write_text(json.dumps({"entries": {name: {"variants": {"dense": {"top1": 1}}}}}))
    with pytest.raises(ZooResultsError, match=f"{name}:dense.*lack variant"):
        list_entries(tmp_path / "no-build", tmp_path)


SPLITS = {"train": {"name": "train", "size": 1000}, "validation": {"name": "val-from-train", "size": 96},
          "test": {"name": "test", "size": 500}}


def metrics(top1, test_top1=None):
    final = {"top1": top1, "sparsity": {"from": "validation"}}
    m = {"final": final, "splits": SPLITS}
    if test_top1 is not None:
        m["test"] = {"top1": test_top1, "loss": 0.1, "sparsity": {"from": "test"}}
    return m


def test_a_run_with_a_test_block_is_reported_on_test_and_selected_on_validation():
    e = evaluated(metrics(0.9, 0.85))
    assert (e.top1, e.sparsity, e.eval_split, e.selection_split, e.val_top1) == \
        (0.85, {"from": "test"}, "test", "val-from-train", 0.9)
    v = evaluated(metrics(0.9, 0.85), use_test=False)
    assert (v.top1, v.sparsity, v.eval_split, v.selection_split) == (0.9, {"from": "validation"}, "val-from-train",
                                                                      "val-from-train")


def test_a_run_from_before_the_protocol_is_reported_on_validation():
    old = evaluated({"final": {"top1": 0.7, "sparsity": {}}})
    assert (old.top1, old.eval_split, old.selection_split, old.val_top1) == (0.7, "validation", "validation", 0.7)
    named = evaluated({"final": {"top1": 0.7, "sparsity": {}}, "splits": {**SPLITS, "test": None}, "test": None})
    assert (named.eval_split, named.selection_split) == ("val-from-train", "val-from-train")


def test_the_analysis_reads_the_split_the_numbers_are_reported_on(monkeypatch):
    import sparsezoo.data.inputs as inputs

    calls = []

    def loader(loaded, spec, samples, batch_size, *, split=None):
        calls.append(split)
        return ("test-loader" if split else "loader"), min(samples, 120), "desc", []

    monkeypatch.setattr(inputs, "sample_loader", loader)
    run = SimpleNamespace(recipe=SimpleNamespace(data=None), metrics=metrics(0.9, 0.85))
    got = analysis_samples(None, run, 64, evaluated(run.metrics))
    assert (got.loader, got.split, calls[-1]) == ("test-loader", "test", "test")
    old = evaluated(run.metrics, use_test=False)  # an entry reported on validation: validation, then train
    got = analysis_samples(None, run, 512, old)
    assert (got.loader, got.count, got.split, calls[-1]) == ("loader", 120, "val-from-train + train", None)
    assert analysis_samples(None, run, 64, old).split == "val-from-train"


def _copy_run(src, dst, test_top1=None):
    shutil.copytree(src, dst)
    if test_top1 is not None:
        path = dst / "metrics.json"
        m = json.loads(path.read_text())
        m["splits"] = {"train": {"name": "train", "size": 256}, "validation": {"name": "validation", "size": 96},
                       "test": {"name": "test", "size": 200}}
        m["test"] = {"top1": test_top1, "loss": 1.0, "sparsity": m["final"]["sparsity"]}
        path.write_text(json.dumps(m))


def test_measure_reports_test_numbers_only_when_every_run_has_them(l1_run, tmp_path, monkeypatch):
    import sparsezoo.data.inputs as inputs

    _, out, _ = l1_run
    entry = SimpleNamespace(name="tiny", baseline="dense")
    asked, real = [], inputs.sample_loader

    def loader(*args, split=None):  # the digits runs have no test split: record the split asked for, read validation
        asked.append(split)
        return real(*args)

    monkeypatch.setattr(inputs, "sample_loader", loader)
    _copy_run(out, tmp_path / "both" / "dense", 0.5)
    _copy_run(out, tmp_path / "both" / "l1", 0.25)
    res = measure(entry, tmp_path / "both", ["dense", "l1"], 16)
    val = json.loads((out / "metrics.json").read_text())["final"]["top1"]
    r = res["l1"]
    assert (r.top1, r.recovery, r.eval_split, r.selection_split) == (0.25, 0.5, "test", "validation")
    assert (r.val_top1, r.val_recovery, r.analysis_split, r.analysis_samples) == (val, 1.0, "test", 16)
    assert set(asked) == {"test"}
    assert r.decision_features >= 1 and r.speedup is None and res["dense"].cka_to_baseline == 1.0
    _copy_run(out, tmp_path / "mixed" / "dense")
    _copy_run(out, tmp_path / "mixed" / "l1", 0.25)
    mixed = measure(entry, tmp_path / "mixed", ["dense", "l1"], 16)["l1"]
    assert (mixed.top1, mixed.recovery, mixed.eval_split, mixed.selection_split) == (val, 1.0, "validation",
                                                                                    "validation")
    assert asked[-1] is None  # validation (then train): no run is reported on test


def test_the_seeds_table_gives_mean_and_range_and_calls_recovery_on_the_means():
    from sparsezoo.zoo import seeds_table
    from sparsezoo.zoo.results import seed_groups, seed_summary

    names = ["dense", "dense-seed1", "dense-seed2", "l1", "frontier", "frontier-seed1", "frontier-seed2", "x-seed3"]
    assert seed_groups(names) == {"dense": ["dense", "dense-seed1", "dense-seed2"],
                                  "frontier": ["frontier", "frontier-seed1", "frontier-seed2"]}
    top1 = {"dense": 0.99, "dense-seed1": 0.98, "dense-seed2": 0.97, "l1": 0.9, "frontier": 0.98,
            "frontier-seed1": 0.96, "frontier-seed2": 0.97, "x-seed3": 0.5}
    results = {v: {**OLD, "top1": t, "zero_frac": 0.5 + i / 100} for i, (v, t) in enumerate(top1.items())}
    s = seed_summary(results, ["frontier", "frontier-seed1", "frontier-seed2"], ["dense", "dense-seed1", "dense-seed2"])
    assert s["seeds"] == 3 and s["top1_mean"] == pytest.approx(0.97) and (s["top1_min"], s["top1_max"]) == (0.96, 0.98)
    assert s["recovery_of_means"] == pytest.approx(0.97 / 0.98)
    assert (s["zero_frac_min"], s["zero_frac_max"]) == (0.54, 0.56)
    table = seeds_table([Listing("e", "t", names, results)])
    assert "| e | frontier | 3 | 97.0 (96.0–98.0) | 55.0 (54.0–56.0) | 99.0 |" in table
    assert seeds_table([Listing("e", "t", ["dense", "l1"], results)]) == ""  # no seed runs: no table
