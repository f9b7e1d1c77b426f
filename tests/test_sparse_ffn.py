"""Sparse FFN execution (sparsezoo.models.sparse_ffn): the down-projection that skips the zeros of its input gives the
dense path's outputs, on random codes of known density (none active, all active, in between) and on a tiny relufied
BERT classifier with padding, for every method; the FLOP counts have known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsezoo.models.sparse_ffn import (
    METHODS,
    TOLERANCE,
    SparseDownProjection,
    dead_neurons,
    disable_sparse_ffn,
    enable_sparse_ffn,
    ffn_flops,
    find_relu_ffns,
    flops,
)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The module's stated tolerance: max |a − b| ≤ TOLERANCE·(1 + max |b|)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= TOLERANCE * (1 + float(b.abs().max()))


def codes(shape: tuple[int, ...], density: float, seed: int = 0) -> torch.Tensor:
    """Non-negative codes with exactly round(density·K) non-zeros per token, at random neurons."""
    g = torch.Generator().manual_seed(seed)
    k = shape[-1]
    vals = torch.rand(*shape, generator=g)
    order = torch.rand(*shape, generator=g).argsort(-1)
    return vals * (order < round(density * k)).float()


def tiny_bert(seed: int = 0):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=32, hidden_act="relu", num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


def batch(b: int = 3, t: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids with right padding: row i keeps t - 2i tokens (attention mask 0 after them)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (b, t), generator=g)
    mask = (torch.arange(t)[None] < torch.tensor([t - 2 * i for i in range(b)])[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def shift_ffn_bias(model: nn.Module, by: float) -> None:
    """Add ``by`` to every up-projection's bias: very negative → no neuron fires, very positive → all fire."""
    with torch.no_grad():
        for s in find_relu_ffns(model):
            model.get_submodule(s.up).bias += by


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5, 0.9, 1.0])
def test_the_down_projection_equals_the_dense_one_at_every_density(method, density):
    torch.manual_seed(1)
    dense = nn.Linear(64, 24)
    h = codes((2, 7, 64), density, seed=2)
    want = dense(h)
    sparse = SparseDownProjection(dense, method).eval()
    with torch.inference_mode():
        got = sparse(h)
    assert got.shape == want.shape and close(got, want)
    if density == 0.0 and method in ("union", "auto"):
        assert sparse.last == {"method": "union", "active": 0} and torch.equal(got, dense.bias.expand_as(got))


def test_auto_takes_the_union_when_few_neurons_fire_in_the_batch_gather_when_few_entries_do_else_dense():
    sparse = SparseDownProjection(nn.Linear(64, 8), "auto").eval()
    h = torch.zeros(40, 64)
    h[:, :10] = 1.0  # 10 of 64 neurons active in the batch
    with torch.no_grad():
        sparse(h)
        assert sparse.last == {"method": "union", "active": 10}
        h = torch.zeros(40, 64)
        h[torch.arange(40), torch.arange(40)] = 2.0  # 40 of 64 neurons in the batch, one per token: 1/64 of the entries
        assert close(sparse(h), sparse.sparse_ffn_original[0](h))
        assert sparse.last == {"method": "gather", "density": 1 / 64}
        sparse(torch.ones(5, 64))
        assert sparse.last == {"method": "dense", "density": 1.0}


def test_auto_decides_a_long_batch_on_its_first_tokens_and_stays_exact():
    from sparsezoo.models.sparse_ffn import AUTO_PROBE_TOKENS

    dense = nn.Linear(64, 8)
    sparse = SparseDownProjection(dense, "auto").eval()
    h = codes((AUTO_PROBE_TOKENS + 50, 64), 0.5)
    with torch.no_grad():
        assert close(sparse(h), dense(h)) and sparse.last == {"method": "dense", "density": 0.5}
        h[:AUTO_PROBE_TOKENS] = 0  # the first tokens fire nothing: the union of the whole batch decides
        h[:, 10:] = 0  # and the others fire 10 of the 64 neurons
        assert close(sparse(h), dense(h)) and sparse.last == {"method": "union", "active": 10}


def test_with_autograd_on_it_is_the_plain_linear_and_gradients_flow():
    dense = nn.Linear(8, 4)
    sparse = SparseDownProjection(dense, "union")
    h = codes((3, 8), 0.25).requires_grad_()
    sparse(h).sum().backward()
    assert h.grad is not None and dense.weight.grad is not None and sparse.last == {}


def test_the_wrapper_follows_weight_changes():
    dense = nn.Linear(8, 4)
    sparse = SparseDownProjection(dense, "union").eval()
    h = codes((3, 8), 0.5)
    with torch.no_grad():
        sparse(h)
        dense.weight.mul_(2)
        assert close(sparse(h), dense(h))


def test_finds_the_relu_ffns_of_bert_and_not_gelu_ones():
    model = tiny_bert()
    sites = find_relu_ffns(model)
    assert [s.down for s in sites] == [f"bert.encoder.layer.{i}.output.dense" for i in range(2)]
    assert sites[0].up == "bert.encoder.layer.0.intermediate.dense"
    assert sites[0].act == "bert.encoder.layer.0.intermediate.intermediate_act_fn"
    import transformers

    gelu = transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=48))
    assert find_relu_ffns(gelu) == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shift", [-1e3, -0.5, 0.0, 1e3])  # no neuron fires ... every neuron fires
def test_a_relufied_bert_gives_the_dense_logits_with_padding(method, shift):
    model = tiny_bert()
    shift_ffn_bias(model, shift)
    x = batch()
    with torch.inference_mode():
        want = model(**x).logits
        hidden = model(**x, output_hidden_states=True).hidden_states[-1]
    names = enable_sparse_ffn(model, method)
    assert all(not model.get_submodule(n).training for n in names)  # the model's eval mode carries over
    assert names == [f"bert.encoder.layer.{i}.output.dense" for i in range(2)]
    with torch.inference_mode():
        got = model(**x).logits
        got_hidden = model(**x, output_hidden_states=True).hidden_states[-1]
    if method != "dense":
        assert model.get_submodule(names[0]).last["method"] in (method, "union", "dense")
    assert close(got, want) and close(got_hidden, hidden)  # every position, padded ones included
    assert set(model.state_dict()) == set(tiny_bert().state_dict())


def test_disable_puts_the_original_modules_back_and_enable_twice_is_one_swap():
    model = tiny_bert()
    originals = [model.get_submodule(s.down) for s in find_relu_ffns(model)]
    enable_sparse_ffn(model, "union")
    enable_sparse_ffn(model, "gather")
    assert all(model.get_submodule(s.down).method == "gather" for s in find_relu_ffns(model))
    restored = disable_sparse_ffn(model)
    assert restored == [f"bert.encoder.layer.{i}.output.dense" for i in range(2)]
    assert [model.get_submodule(s.down) for s in find_relu_ffns(model)] == originals


def test_unknown_method_or_dead_site_is_refused():
    model = tiny_bert()
    with pytest.raises(ValueError, match="unknown sparse FFN method"):
        enable_sparse_ffn(model, "csr")
    with pytest.raises(ValueError, match="not the down-projection"):
        enable_sparse_ffn(model, dead={"classifier": torch.zeros(3, dtype=torch.bool)})


def test_dead_neurons_removed_statically_give_the_same_logits_and_smaller_layers():
    model = tiny_bert()
    killed = torch.zeros(48, dtype=torch.bool)
    killed[::3] = True  # 16 neurons of each FFN set dead by hand
    with torch.no_grad():
        for s in find_relu_ffns(model):
            model.get_submodule(s.up).bias[killed] = -1e3
    x = batch()
    dead = dead_neurons(model, [x])
    assert all(torch.equal(v, killed) for v in dead.values())  # the tiny init leaves no other neuron dead
    with torch.inference_mode():
        want = model(**x).logits
    enable_sparse_ffn(model, "auto", dead=dead)
    for s in find_relu_ffns(model):
        assert model.get_submodule(s.up).out_features == model.get_submodule(s.down).in_features == 32
    with torch.inference_mode():
        assert close(model(**x).logits, want)
    disable_sparse_ffn(model)
    assert all(model.get_submodule(s.up).out_features == 48 for s in find_relu_ffns(model))


def test_flop_counts_have_known_answers():
    model = tiny_bert()
    shift_ffn_bias(model, -1e3)  # nothing fires: the down-projections read no column
    x = {"input_ids": torch.ones(2, 5, dtype=torch.long)}
    c = ffn_flops(model, x)
    per_layer = 2 * 10 * 16 * 48  # 10 tokens, 16 -> 48 (up) and 48 -> 16 (down)
    assert c == {"dense": 2 * 2 * per_layer, "union": 2 * per_layer, "nonzero": 2 * per_layer, "up": 2 * per_layer}
    dense = flops(model, x)
    enable_sparse_ffn(model, "union")
    assert dense - flops(model, x) == 2 * per_layer  # the executed GEMMs: the down-projections' FLOPs are gone
    shift_ffn_bias(model, 2e3)  # everything fires
    c = ffn_flops(model, x)
    assert c["union"] == c["nonzero"] == c["dense"]
