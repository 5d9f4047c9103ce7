"""The training step plans on the host: no device read-back, and the same results as the general path."""

import dataclasses

import pytest
import torch

from musicmoe.models import MODALITIES, Translator
from musicmoe.models.hostsync import HostSyncCounter
from musicmoe.models.moe import GroupedMoE, HardRoutingPlan

CONFIGS = {
    "moe": dict(),
    "dense": dict(shared_across_modalities=True),
    "learned positions": dict(pos_encoding="learned"),
    "delay": dict(codebook_mode="delay"),
    "moe every other layer": dict(moe_every=2, dec_layers=3),
    "hard routing with capacity": dict(capacity_factor=0.5),
    "top-k": dict(experts_per_modality=2, top_k=1),
}


def step(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_host_planned_step_matches_the_general_path(name, mt):
    model = Translator(mt.config(**CONFIGS[name]), mt.VOCAB)
    batch = mt.collate(mt.examples(mt.ALL + mt.MIXED))  # rows not ordered by target modality, padded
    assert batch.info is not None and list(batch.info.tgt_modality) != sorted(batch.info.tgt_modality)
    fast, g_fast = step(model, batch)
    slow, g_slow = step(model, dataclasses.replace(batch, info=None))
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-6)
    assert fast.loss_per_task.keys() == slow.loss_per_task.keys()
    assert fast.loss_per_modality.keys() == slow.loss_per_modality.keys()
    for k in slow.loss_per_task:
        torch.testing.assert_close(fast.loss_per_task[k], slow.loss_per_task[k], rtol=1e-5, atol=1e-6)
    for k in slow.loss_per_modality:
        torch.testing.assert_close(fast.loss_per_modality[k], slow.loss_per_modality[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(fast.moe_stats, slow.moe_stats):
        assert torch.equal(a.counts, b.counts) and int(a.dropped) == int(b.dropped)
        assert int(a.assignments) == int(b.assignments)
    for key in slow.metrics:
        torch.testing.assert_close(fast.metrics[key].float(), slow.metrics[key].float(), rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_slow.keys()
    for n in g_slow:
        torch.testing.assert_close(g_fast[n], g_slow[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ["moe", "dense", "learned positions", "delay", "moe every other layer"])
@pytest.mark.parametrize("padded", [True, False])
def test_training_step_reads_nothing_back(name, padded, mt):
    model = Translator(mt.config(validate_inputs=False, **CONFIGS[name]), mt.VOCAB)
    lengths = dict(src_len=(3, 9), tgt_len=(2, 7)) if padded else dict(src_len=(6, 6), tgt_len=(5, 5))
    batch = mt.collate(mt.examples(mt.MIXED, **lengths))
    if not padded:
        assert bool(batch.src_mask.all()) and bool(batch.tgt_mask.all())
    with HostSyncCounter() as syncs:
        model(batch).loss.backward()
    assert not syncs.events, syncs.report()
    # the general path (no host info) does read back; the counter sees it
    with HostSyncCounter() as syncs:
        model(dataclasses.replace(batch, info=None)).loss.backward()
    assert any(e.op in ("nonzero", "tolist", "__bool__") for e in syncs.events)


def test_counter_names_the_ops_and_places():
    x = torch.arange(6)
    with HostSyncCounter() as syncs:
        x.sum().item()
        _ = x[x > 2]
        torch.bincount(x)
        torch.repeat_interleave(x, x)
        torch.repeat_interleave(x, 2)  # repeats known on the host: fine
        x.index_select(0, torch.argsort(x))  # fine
    assert [e.op for e in syncs.events] == ["item", "__getitem__ (boolean mask)", "bincount", "repeat_interleave"]
    assert all("test_model_hostsync.py" in e.where for e in syncs.events)
    assert syncs.report().startswith("4 host sync(s)")


def test_batch_info_travels_and_follows_row_selection(mt):
    batch = mt.collate(mt.examples(mt.MIXED))
    assert batch.to("cpu").info == batch.info
    rows = [3, 0, 5]
    sub = batch.select_rows(torch.tensor(rows), rows)
    assert sub.info.task == tuple(batch.info.task[i] for i in rows)
    assert torch.equal(sub.task, batch.task[rows])
    assert batch.select_rows(torch.tensor(rows)).info is None  # no host rows: the info is dropped
    sub.check(mt.VOCAB)
    with pytest.raises(ValueError, match="Batch.info"):
        dataclasses.replace(sub, info=batch.info).check(mt.VOCAB)


def test_grouped_rows_keep_every_row():
    from musicmoe.models.batch import Batch, BatchInfo

    mods = (3, 1, 0, 1, 3)
    t = torch.tensor(mods)
    batch = Batch(torch.zeros(5, 2, 1, dtype=torch.long), torch.ones(5, 2, dtype=torch.bool), t,
                  torch.zeros(5, 3, 1, dtype=torch.long), torch.ones(5, 3, dtype=torch.bool), t,
                  torch.arange(5), BatchInfo((2,) * 5, (3,) * 5, mods, mods, tuple(range(5))))
    grouped = Translator.group_rows(batch)
    assert grouped.info.tgt_modality == (0, 1, 1, 3, 3) and grouped.info.task == (2, 1, 3, 0, 4)
    assert grouped.task.tolist() == [2, 1, 3, 0, 4]


def test_contiguous_plan_routes_rows_by_group():
    moe = GroupedMoE(8, 16, n_groups=len(MODALITIES), experts_per_group=1, top_k=0)
    rows, length = [2, 0, 1, 1], 3
    mods = torch.tensor([m for m, r in enumerate(rows) for _ in range(r)])
    grid = mods[:, None].expand(-1, length)
    mask = torch.ones(4, length, dtype=torch.bool)
    mask[1, 2] = mask[3, 1:] = False
    x = torch.randn(4, length, 8)
    plan = HardRoutingPlan.contiguous(rows, grid, grid, mask, len(MODALITIES))
    y, stats = moe(x, grid, grid, mask, plan)
    y_ref, stats_ref = moe(x, grid, grid, mask)  # sorted by a device argsort
    torch.testing.assert_close(y, y_ref)
    assert torch.equal(stats.counts, stats_ref.counts) and int(stats.assignments) == int(mask.sum())
    moe.capacity_factor = 1.0
    with pytest.raises(ValueError, match="capacity"):
        moe(x, grid, grid, mask, plan)


def test_compiled_forward_matches_eager_and_keeps_parameter_names(mt):
    model = Translator(mt.config(), mt.VOCAB)
    names = [n for n, _ in model.named_parameters()]
    batch = mt.collate(mt.examples(mt.MIXED))
    expected = model(batch)
    model.compile_forward(backend="eager")  # dynamo tracing only: seconds on the CPU
    got = model(batch)
    torch.testing.assert_close(got.loss, expected.loss)
    assert got.loss_per_task.keys() == expected.loss_per_task.keys()
    assert [n for n, _ in model.named_parameters()] == names and set(model.state_dict()) >= set(names)
