"""Hook life cycles: a penalty hooks a model only while attached, gives back every ``inplace`` flag it took, and the
HF ``SparsityTrainer`` hooks the model only while ``train()`` runs; ``nn.DataParallel`` is refused (issue 12, item 16).

Real timm ``test_resnet`` (built with ``inplace=True`` ReLUs) and random inputs: these tests are about hooks, not accuracy.
"""

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback, TrainingArguments

from sparsezoo.errors import SparsezooError
from sparsezoo.train.hf_trainer import SparsityTrainer
from sparsezoo.train.penalties import DataParallelError, SparsityPenalty


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=3)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def inplace_flags(model: nn.Module) -> dict[str, bool]:
    return {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")}


X, Y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])


def step(model: nn.Module, reg: SparsityPenalty) -> torch.Tensor:
    loss = F.cross_entropy(model(X), Y) + reg.penalty()
    loss.backward()
    return loss


# ------------------------------------------------------------------------------------------------ SparsityPenalty
def test_detach_gives_back_exactly_the_inplace_flags_attach_took():
    model = resnet()
    model.act1.inplace = False  # off before the penalty: it must stay off afterwards
    before, hooks = inplace_flags(model), hook_count(model)
    reg = SparsityPenalty(model, hoyer_square=1e-3)  # hoyer saves the site outputs: in-place must go off
    assert inplace_flags(model) == before  # building selects sites and changes nothing
    reg.attach()
    assert not any(inplace_flags(model)[s.name] for s in reg.sites)
    assert set(reg.inplace_disabled) == {s.name for s in reg.sites} - {"act1"}
    step(model, reg)
    reg.detach()
    assert inplace_flags(model) == before and hook_count(model) == hooks


def test_attach_and_detach_are_idempotent_and_reattach_works():
    model = resnet()
    before, hooks = inplace_flags(model), hook_count(model)
    reg = SparsityPenalty(model, l1=1e-2, hoyer_square=1e-3)
    reg.attach()
    once = hook_count(model)
    assert reg.attach() is reg and hook_count(model) == once == hooks + len(reg.sites) + 1
    reg.detach()
    reg.detach()
    assert hook_count(model) == hooks and inplace_flags(model) == before
    reg.attach()
    assert step(model, reg).item() > F.cross_entropy(model(X), Y).item()  # the penalty is back
    reg.detach()
    assert hook_count(model) == hooks and inplace_flags(model) == before


def test_context_manager_cleans_up_when_the_body_raises():
    model = resnet()
    before, hooks = inplace_flags(model), hook_count(model)
    with pytest.raises(KeyError), SparsityPenalty(model, hoyer_square=1e-3) as reg:
        assert reg.attached and hook_count(model) > hooks
        raise KeyError("boom")
    assert not reg.attached and hook_count(model) == hooks and inplace_flags(model) == before


def test_two_penalties_on_one_model_work_independently():
    model = resnet()
    before = inplace_flags(model)
    with SparsityPenalty(model, hoyer_square=1.0) as alone:
        model(X)
        hoyer_alone = alone.penalty().item()
    a = SparsityPenalty(model, hoyer_square=1.0).attach()
    b = SparsityPenalty(model, l1=1.0, hoyer_square=1.0, sites=r"^layer").attach()
    model(X)
    assert a.penalty().item() == pytest.approx(hoyer_alone)  # b's hooks add nothing to a's sums
    assert b.penalty().item() > 0 and set(b.last_terms) == {"l1", "hoyer_square"}
    a.detach()  # b still needs its sites' outputs intact: their in-place stays off
    assert not any(inplace_flags(model)[s.name] for s in b.sites)
    assert inplace_flags(model)["act1"] is True  # only a needed the stem's off
    model(X)
    b.penalty().backward()
    b.detach()
    assert inplace_flags(model) == before


def test_a_data_parallel_model_is_refused():
    model = resnet()
    for wrapped in (nn.DataParallel(model), nn.Sequential(nn.DataParallel(model))):  # works on CPU as a wrapper
        with pytest.raises(DataParallelError, match="torchrun"):
            SparsityPenalty(wrapped, l1=1e-3)


# ------------------------------------------------------------------------------------------------ SparsityTrainer
class Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(3, 32, 32, generator=g), "labels": torch.tensor(i % 3)}


class Record(TrainerCallback):
    """Hook count and in-place flags of the model after every optimizer step (or raise at step ``fail_at``)."""

    def __init__(self, model: nn.Module, fail_at: int = 0):
        self.model, self.fail_at, self.seen = model, fail_at, []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append((hook_count(self.model), inplace_flags(self.model)))
        if state.global_step == self.fail_at:
            raise RuntimeError("training failed")


def cross_entropy(outputs, labels, num_items_in_batch=None):
    return F.cross_entropy(outputs, labels)


def trainer_for(model, tmp_path, sparsity=None, callbacks=(), **kw):
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=2, per_device_train_batch_size=4,
                             logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                             remove_unused_columns=False)
    return SparsityTrainer(model=model, args=args, train_dataset=Batches(), compute_loss_func=cross_entropy,
                           callbacks=list(callbacks), sparsity=sparsity or {"hoyer_square": 1e-3}, **kw)


def test_trainer_hooks_the_model_only_while_train_runs(tmp_path):
    model = resnet()
    before, hooks = inplace_flags(model), hook_count(model)
    rec = Record(model)
    trainer = trainer_for(model, tmp_path, callbacks=[rec])
    assert hook_count(model) == hooks and inplace_flags(model) == before  # nothing until train()
    trainer.train()
    n_sites = len(trainer.sparsity.sites)
    assert [c for c, _ in rec.seen] == [hooks + n_sites + 1] * 2
    assert all(not flags[s.name] for _, flags in rec.seen for s in trainer.sparsity.sites)
    assert hook_count(model) == hooks and inplace_flags(model) == before  # detached at on_train_end
    assert [r["sparsity/hoyer_square"] > 0 for r in trainer.state.log_history if "loss" in r] == [True, True]
    batch = {"x": X, "labels": Y}  # compute_loss outside train() still adds the penalty, and leaves no hooks
    assert trainer.compute_loss(model, batch).item() > cross_entropy(model(X), Y).item()
    assert hook_count(model) == hooks and inplace_flags(model) == before


def test_a_second_trainer_adds_no_hooks_and_a_second_train_call_still_penalizes(tmp_path):
    model = resnet()
    hooks = hook_count(model)
    rec = Record(model)
    first = trainer_for(model, tmp_path, callbacks=[rec])
    second = trainer_for(model, tmp_path, sparsity={"l1": 1e-2}, callbacks=[rec])
    assert hook_count(model) == hooks
    second.train()
    first.train()
    first.train()  # on_train_begin attaches again
    assert len(rec.seen) == 6
    assert [c for c, _ in rec.seen] == [hooks + len(first.sparsity.sites) + 1] * 6  # one set at a time, never two
    assert [r["sparsity/hoyer_square"] > 0 for r in first.state.log_history if "loss" in r] == [True, True]
    assert hook_count(model) == hooks


def test_trainer_detaches_when_train_raises(tmp_path):
    model = resnet()
    before, hooks = inplace_flags(model), hook_count(model)
    trainer = trainer_for(model, tmp_path, callbacks=[Record(model, fail_at=1)])
    with pytest.raises(RuntimeError, match="training failed"):
        trainer.train()
    assert hook_count(model) == hooks and inplace_flags(model) == before
    assert not trainer.sparsity.attached


def test_trainer_leaves_a_penalty_attached_by_the_caller_attached(tmp_path):
    model = resnet()
    with SparsityPenalty(model, l1=1e-2) as reg:
        trainer_for(model, tmp_path, sparsity=reg).train()
        assert reg.attached
    assert not reg.attached


def test_trainer_rebuilds_its_penalty_on_the_model_from_model_init(tmp_path):
    trainer = trainer_for(None, tmp_path, model_init=resnet)
    trainer.train()  # model_init made a new model: the penalty must be on it, not on the first one
    assert trainer.sparsity.model is trainer.model
    assert [r["sparsity/hoyer_square"] > 0 for r in trainer.state.log_history if "loss" in r] == [True, True]
    reg = SparsityPenalty(resnet(), l1=1e-2)
    with pytest.raises(ValueError, match="model_init"):
        trainer_for(None, tmp_path, sparsity=reg, model_init=resnet).train()


def test_trainer_refuses_data_parallel_with_one_line(tmp_path):
    with pytest.raises(DataParallelError, match="torchrun") as err:
        trainer_for(nn.DataParallel(resnet()), tmp_path)  # a DataParallel model passed in (works on CPU)
    assert isinstance(err.value, SparsezooError) and "\n" not in str(err.value)
    args = TrainingArguments(output_dir=str(tmp_path / "dp"), use_cpu=True, report_to=[])
    args._n_gpu = 2  # what TrainingArguments records on a machine with two visible GPUs (none here)
    with pytest.raises(DataParallelError, match="n_gpu=2.*torchrun"):
        SparsityTrainer(model=resnet(), args=args, train_dataset=Batches(), sparsity={"l1": 1e-2})
