"""Chapter 5 on gptc: the data loader, the losses before training, and a short
training run that learns."""
import os

import numpy as np
import pytest

import gptc
from gptc.data import DataLoader, GPTDatasetV1, create_dataloader_v1
from gptc.training import calc_loss_loader, text_to_token_ids, token_ids_to_text, \
    train_model_simple
from conftest import VERDICT_PATH as VERDICT


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return gptc.get_tokenizer()
    except gptc.TokenizerError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def verdict():
    if not os.path.isfile(VERDICT):
        pytest.skip(f"{VERDICT} not found")
    with open(VERDICT, encoding="utf-8") as f:
        return f.read()


def test_dataset_windows_and_shifted_targets(tokenizer, verdict):
    """Windows of max_length tokens every stride tokens; targets are the inputs
    shifted by one token."""
    ids = tokenizer.encode(verdict)
    ds = GPTDatasetV1(verdict, tokenizer, max_length=4, stride=3)
    assert len(ds) == len(range(0, len(ids) - 4, 3))
    x, y = ds[2]
    assert x.tolist() == ids[6:10] and y.tolist() == ids[7:11]


def test_dataloader_batches_drop_last_and_seeded_shuffle(tokenizer, verdict):
    """Batches are (batch_size, max_length) int64 pairs; drop_last drops the short
    tail; shuffling follows gptc's seeded generator (same seed, same order)."""
    ds = GPTDatasetV1(verdict[:2000], tokenizer, max_length=8, stride=8)
    n = len(ds)
    batches = list(DataLoader(ds, batch_size=3, drop_last=True))
    assert len(batches) == n // 3 and all(x.shape == (3, 8) and x.dtype == np.int64
                                          for x, _ in batches)
    assert len(list(DataLoader(ds, batch_size=3, drop_last=False))) == -(-n // 3)
    gptc.manual_seed(1)
    first = [x.tolist() for x, _ in DataLoader(ds, batch_size=2, shuffle=True)]
    gptc.manual_seed(1)
    again = [x.tolist() for x, _ in DataLoader(ds, batch_size=2, shuffle=True)]
    plain = [x.tolist() for x, _ in DataLoader(ds, batch_size=2)]
    assert first == again and first != plain
    assert sorted(sum(first, [])) == sorted(sum(plain, []))


@pytest.mark.parametrize("n,batch_size,drop_last", [(37, 4, True), (9, 2, True), (5, 3, False),
                                                      (1, 1, True)])
def test_shuffled_batches_come_in_pytorchs_order(torch, n, batch_size, drop_last):
    """After the same seed, a shuffling DataLoader yields its items in the order
    PyTorch's DataLoader (RandomSampler) does, epoch after epoch, and leaves the
    default generator in the same state."""
    class Items:
        def __len__(self):
            return n

        def __getitem__(self, i):
            return np.array([i]), np.array([i + 1])

    torch.manual_seed(123)
    gptc.manual_seed(123)
    theirs = torch.utils.data.DataLoader(list(range(n)), batch_size=batch_size, shuffle=True,
                                         drop_last=drop_last)
    ours = DataLoader(Items(), batch_size=batch_size, shuffle=True, drop_last=drop_last)
    for epoch in range(3):
        expected = [b.tolist() for b in theirs]
        got = [x[:, 0].tolist() for x, _ in ours]
        assert got == expected, f"epoch {epoch}"
    assert bytes(gptc.get_rng_state()) == bytes(torch.get_rng_state().numpy())


def test_losses_before_training_are_the_books(tokenizer, verdict):
    """Chapter 5's set-up (GPT_CONFIG_124M with context 256, seed 123, 90/10 split,
    batch 2, eval mode): the untrained model's losses are about 10.99 (train) and
    10.98 (validation)."""
    cfg = dict(gptc.GPT_CONFIG_124M, context_length=256)
    gptc.manual_seed(123)
    model = gptc.GPTModel(cfg).eval()
    split = int(0.9 * len(verdict))
    train_loader = create_dataloader_v1(verdict[:split], batch_size=2, max_length=256,
                                        stride=256, drop_last=True, shuffle=True,
                                        tokenizer=tokenizer)
    val_loader = create_dataloader_v1(verdict[split:], batch_size=2, max_length=256,
                                      stride=256, drop_last=False, shuffle=False,
                                      tokenizer=tokenizer)
    with gptc.no_grad():
        train_loss = calc_loss_loader(train_loader, model)
        val_loss = calc_loss_loader(val_loader, model)
    print(f"Training loss: {train_loss}\nValidation loss: {val_loss}")
    assert abs(train_loss - 10.99) < 0.01 and abs(val_loss - 10.98) < 0.01


def test_short_training_run_learns(tokenizer, verdict, capsys):
    """train_model_simple on a small model and a slice of the story: the training
    loss falls well below its starting value, and samples are printed."""
    cfg = {"vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}
    gptc.manual_seed(123)
    model = gptc.GPTModel(cfg)
    optimizer = gptc.optim.AdamW(model.parameters(), lr=0.005, weight_decay=0.1)
    text = verdict[:3000]
    train_loader = create_dataloader_v1(text, batch_size=4, max_length=32, stride=32,
                                        tokenizer=tokenizer)
    val_loader = create_dataloader_v1(verdict[3000:4000], batch_size=4, max_length=32,
                                      stride=32, shuffle=False, tokenizer=tokenizer)
    train_losses, val_losses, seen = train_model_simple(
        model, train_loader, val_loader, optimizer, None, num_epochs=6, eval_freq=5,
        eval_iter=2, start_context="Every effort moves you", tokenizer=tokenizer)
    printed = capsys.readouterr().out
    print(printed)
    assert "Every effort moves you" in printed and "Train loss" in printed
    assert train_losses[-1] < train_losses[0] - 3.0
    assert seen == sorted(seen) and len(seen) == len(train_losses) == len(val_losses)


def test_text_token_round_trip(tokenizer):
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you"
