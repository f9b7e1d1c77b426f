"""Exact compaction (issue 24 item 1): known answers on hand-made dead units, the widths-aware save that
sparsezoo.load reads, the ONNX export run in ONNX Runtime, and the ``sparsezoo compact`` command."""

import json
import shutil
from functools import partial

import pytest
import torch
from torch import nn

from sparsezoo.models.compaction import CompactionReport, compact, find_dead_units, save_compacted, verify

DEAD = -1e4  # a BatchNorm / Linear bias this negative keeps a unit at 0 for any input of these tests


def _logits_close(a, b, rel=1e-5):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= rel * float(a.abs().max())


def _conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.2, 0.2)
        net[1].bias[[1, 4, 5]] = DEAD  # dead, and its consumer is a conv: removable
        net[4].bias[2] = DEAD  # dead, but it feeds a pool + flatten: no rule, kept
    return net


def test_conv_net_known_answer():
    net, x = _conv_net(), torch.randn(16, 3, 8, 8)
    dead = find_dead_units(net, [x[:5], x[5:]])
    assert torch.equal(dead.fires["2"], find_dead_units(net, [x[i:i + 1] for i in range(16)]).fires["2"])
    assert dead.dead("2").tolist() == [1, 4, 5] and dead.dead("5").tolist() == [2] and dead.samples == 16
    new, report = compact(net, dead)
    assert (new[0].weight.shape, new[0].out_channels, new[1].num_features, new[3].weight.shape, new[3].in_channels) \
        == ((5, 3, 3, 3), 5, 5, (6, 5, 3, 3), 5)
    assert net[0].out_channels == 8  # the original is left as it was
    assert report.removed_units == 3 and report.dead_units == 4 and report.kept == {"unsupported": 1}
    assert report.params_before - report.params_after == 3 * (3 * 9 + 1) + 3 * 2 + 3 * 6 * 9
    fresh = torch.randn(7, 3, 8, 8)
    assert _logits_close(net(fresh), new(fresh))
    check = verify(net, new, [fresh], report)
    assert check.exact and check.removed_fired == 0 and check.top1_agreement == 1.0


def test_unit_dead_on_training_data_that_fires_elsewhere_is_reported():
    net = _conv_net()
    with torch.no_grad():
        net[1].bias[3] = -5.0  # zero on small inputs, fires on large ones
    small, large = torch.randn(8, 3, 8, 8) * 0.01, torch.randn(8, 3, 8, 8) * 100
    new, report = compact(net, find_dead_units(net, [small]))
    assert 3 in report.chains[0].removed_channels
    check = verify(net, new, [large], report, "test")
    assert check.removed_fired >= 1 and check.fired_by_site["2"] >= 1 and not check.exact


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     hidden_act="relu", num_labels=3, max_position_embeddings=32)
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.bias[[0, 3, 7]] = DEAD
        model.bert.encoder.layer[1].intermediate.dense.bias[[2]] = DEAD
    return model


def _token_batch(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[0, t // 2:] = 0  # padding: left out of the dead-unit counts
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(n, dtype=torch.long)}


def test_bert_ffn_known_answer():
    model = _tiny_bert()
    dead = find_dead_units(model, [_token_batch(4, 9, 0), _token_batch(3, 5, 1)])
    new, report = compact(model, dead)
    widths = [(m.intermediate.dense.out_features, m.output.dense.in_features) for m in new.bert.encoder.layer]
    assert widths == [(32 - len(dead.dead(f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn")),) * 2
                      for i in range(2)]
    assert {0, 3, 7} <= set(report.chains[0].removed_channels) and 2 in report.chains[-1].removed_channels
    assert new.bert.encoder.layer[0].intermediate.dense.weight.shape[0] == widths[0][0]
    held_out = _token_batch(5, 11, 2)
    out_a, out_b = model(**{k: v for k, v in held_out.items() if k != "labels"}).logits, \
        new(**{k: v for k, v in held_out.items() if k != "labels"}).logits
    assert _logits_close(out_a, out_b)
    assert verify(model, new, [held_out], report).exact


def _mobilenet():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=4).eval()
    with torch.no_grad():
        for block in (model.blocks[1][0], model.blocks[3][1]):
            block.bn2.bias[:5] = DEAD  # dead after the depthwise's activation: the whole chain goes
        model.blocks[2][0].bn1.bias[:4] = DEAD  # dead after the expansion only: the depthwise's output is then
        model.blocks[2][0].bn2.bias[:4] = 1.0  # a constant (1 here): folded into the projection's BatchNorm
        model.bn2.bias[:100] = DEAD  # head channels: conv_head rows and classifier columns go
        model.blocks[0][0].bn1.bias[5:7] = DEAD  # after the first depthwise: the stem channel goes with it
        model.bn1.bias[:3], model.blocks[0][0].bn1.bias[:3] = DEAD, 1.0  # stem only: folded
    return model


def _only(dead, wanted):
    """``dead`` with only the ``wanted`` channels (site -> indices) dead: a randomly initialized network has units
    that happen to be zero on a few samples, and those may fire on fresh inputs."""
    for site, fires in dead.fires.items():
        hand = torch.zeros_like(fires, dtype=torch.bool)
        hand[wanted.get(site, [])] = True
        dead.fires[site] = torch.where(hand, fires, fires.clamp(min=1))
    return dead


def test_mobilenetv2_inverted_residual_chain_compacts_exactly():
    model, x = _mobilenet(), torch.randn(6, 3, 32, 32)
    hand = {"blocks.1.0.bn2.act": range(5), "blocks.3.1.bn2.act": range(5), "blocks.2.0.bn1.act": range(4),
            "bn2.act": range(100), "bn1.act": range(3), "blocks.0.0.bn1.act": range(5, 7)}
    dead = _only(find_dead_units(model, [x]), {k: list(v) for k, v in hand.items()})
    assert all(int((dead.fires[k] == 0).sum()) == len(v) for k, v in hand.items())
    new, report = compact(model, dead)
    for i, j in ((1, 0), (3, 1)):
        c = model.blocks[i][j].conv_pw.out_channels - 5
        blk = new.blocks[i][j]
        assert (blk.conv_pw.out_channels, blk.bn1.num_features, blk.conv_dw.groups, blk.conv_dw.weight.shape[0],
                blk.bn2.running_var.shape[0], blk.conv_pwl.in_channels) == (c,) * 6
    assert new.conv_head.out_channels == new.bn2.num_features == new.classifier.in_features == 1280 - 100
    assert report.removed_units == 119 and report.kept == {}
    first = new.blocks[0][0]
    assert new.conv_stem.out_channels == new.bn1.num_features == first.conv_dw.groups == first.conv_pw.in_channels == 11
    folded = new.blocks[2][0]
    assert folded.conv_pw.out_channels == folded.conv_dw.groups == model.blocks[2][0].conv_pw.out_channels - 4
    assert not torch.equal(folded.bn3.running_mean, model.blocks[2][0].bn3.running_mean)
    fresh = torch.randn(4, 3, 32, 32)
    assert _logits_close(model(fresh), new(fresh))
    assert report.params_after < report.params_before


def test_squeeze_excite_channels_go_with_the_chain():
    from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

    torch.manual_seed(0)
    block = InvertedResidual(8, 8, exp_ratio=4.0, se_layer=partial(SqueezeExcite, rd_ratio=0.25)).eval()
    with torch.no_grad():
        block.bn2.bias[[0, 9, 20]] = DEAD
        block.bn1.bias[5], block.bn2.bias[5] = DEAD, 1.0  # dead after the expansion only: the gate sees a constant
    net = nn.Sequential(block).eval()
    new, report = compact(net, find_dead_units(net, [torch.randn(4, 8, 6, 6)]))
    se = new[0].se
    assert se.conv_reduce.in_channels == se.conv_expand.out_channels == new[0].conv_pwl.in_channels == 29
    x = torch.randn(3, 8, 6, 6)
    assert _logits_close(net(x), new(x)) and report.removed_units == 3 and report.kept["depthwise"] == 1


def test_compacted_bert_saves_loads_and_runs_in_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    import sparsezoo
    from sparsezoo.models.onnx_export import check_onnx, export_onnx

    model = _tiny_bert()
    source = tmp_path / "run"
    model.save_pretrained(source)
    new, report = compact(model, find_dead_units(model, [_token_batch(4, 9, 0)]))
    out = tmp_path / "compact"
    out.mkdir()
    save_compacted(out, new, report, source)
    loaded = sparsezoo.load(str(out)).model
    batch = _token_batch(3, 7, 5)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    assert torch.equal(loaded(**inputs).logits, new(**inputs).logits)
    assert loaded.bert.encoder.layer[0].intermediate.dense.out_features == 32 - report.chains[0].removed
    export_onnx(new, batch, out / "model.onnx")
    check = check_onnx(out / "model.onnx", new, [batch, _token_batch(2, 12, 6)])  # other batch and sequence sizes
    assert check.ok and check.samples == 5 and check.top1_agreement == 1.0


def test_report_json_round_trips():
    net = _conv_net()
    _, report = compact(net, find_dead_units(net, [torch.randn(16, 3, 8, 8)]))
    doc = json.loads(json.dumps(report.to_json()))
    assert isinstance(report, CompactionReport)
    assert doc["removed_units"] == 3 and doc["dead_but_kept"] == {"unsupported": 1}
    assert doc["widths"]["0"]["tensors"]["weight"] == [5, 3, 3, 3] and doc["widths"]["3"]["attrs"]["in_channels"] == 5


# ----------------------------------------------------------------------------- the command


def _cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of the command run in this process (the conftest ``cli`` drops stdout)."""
    from sparsezoo.cli import main

    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_compacts_a_run_exactly_and_the_result_loads(l1_run, tmp_path, cli, capsys):
    import sparsezoo

    _, run, _ = l1_run
    out = tmp_path / "compact"
    code, printed, err = _cli(capsys, "compact", str(run), "--out", str(out))
    assert code == 0, err
    assert "removed" in printed and "validation:" in printed and "(exact)" in printed and "ONNX Runtime" in printed
    doc = json.loads((out / "compaction.json").read_text())
    assert doc["compaction"]["removed_units"] > 0
    assert all(v["exact"] for v in doc["verification"].values()) and "validation" in doc["verification"]
    assert doc["onnx"]["ok"] and (out / "model.onnx").is_file()
    original, small = sparsezoo.load(str(run)).model, sparsezoo.load(str(out)).model
    assert sum(p.numel() for p in small.parameters()) == doc["compaction"]["params_after"]
    x = torch.zeros(2, 3, 32, 32)
    assert _logits_close(original(x), small(x), 1e-4)
    code, err = cli("compact", str(run), "--out", str(out))
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1


def test_cli_nothing_to_remove_writes_nothing(l1_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    _, run, _ = l1_run
    alive = tmp_path / "alive"
    shutil.copytree(run, alive, ignore=shutil.ignore_patterns("checkpoints"))
    state = load_file(str(alive / "model.safetensors"))
    for k in [k for k in state if k.endswith("running_var")]:  # every BatchNorm outputs +1: every unit fires
        base = k[: -len("running_var")]
        state[base + "weight"] = torch.zeros_like(state[base + "weight"])
        state[base + "bias"] = torch.ones_like(state[base + "bias"])
    save_file(state, str(alive / "model.safetensors"))
    out = tmp_path / "out"
    code, printed, err = _cli(capsys, "compact", str(alive), "--out", str(out), "--no-onnx")
    assert code == 0, err
    assert printed.startswith("nothing to remove") and "wrote nothing" in printed
    assert not out.exists()


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path, cli):
    (tmp_path / "notes.txt").write_text("not a run")
    code, err = cli("compact", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("sparsezoo compact: error:")
    assert not (tmp_path / "out").exists()
