"""Training data as the book builds it (chapter 2, used in chapter 5).

``GPTDatasetV1`` cuts a token stream into overlapping windows of
``max_length`` tokens (a new window every ``stride`` tokens); each target is
its input shifted one token to the left, so the model learns to predict the
next token at every position. ``DataLoader`` groups windows into batches.
"""
import numpy as np

from . import _C
from .random import Generator, default_generator, randperm

__all__ = ["GPTDatasetV1", "DataLoader", "create_dataloader_v1"]


class GPTDatasetV1:
    """Sliding windows over the token ids of ``txt``: item i is
    ``(ids[i*stride : i*stride + max_length], ids[i*stride + 1 : i*stride + max_length + 1])``."""

    def __init__(self, txt, tokenizer, max_length, stride):
        if max_length <= 0 or stride <= 0:
            raise ValueError(f"max_length and stride must be positive, got {max_length}, {stride}")
        token_ids = np.asarray(tokenizer.encode(txt, allowed_special={"<|endoftext|>"}),
                               dtype=np.int64)
        starts = range(0, len(token_ids) - max_length, stride)
        self.input_ids = [token_ids[i:i + max_length] for i in starts]
        self.target_ids = [token_ids[i + 1:i + max_length + 1] for i in starts]

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


class DataLoader:
    """Batches of ``(inputs, targets)`` int64 arrays of shape (batch_size, max_length).

    With ``shuffle`` the order is a new random permutation each epoch, drawn
    exactly as PyTorch's ``RandomSampler`` draws it: without a ``generator``,
    one 64-bit draw from the default generator seeds a fresh generator for
    the epoch's ``randperm``. Like PyTorch's DataLoader, each ``iter()`` also
    draws a (here unused) worker base seed from the default generator. So
    after ``gptc.manual_seed(s)`` the batches come in the same order, and
    the generator is left in the same state, as the book's DataLoader after
    ``torch.manual_seed(s)``. ``drop_last`` skips a final, smaller batch.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, num_workers=0,
                 generator=None):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = generator

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        # PyTorch's DataLoader iterator draws a base seed for its workers from
        # the default generator when it is created, with or without workers;
        # drawing it too keeps the generator's stream in step with PyTorch's.
        _C.random_int64(default_generator)
        return self._batches()

    def _batches(self):
        n = len(self.dataset)
        if self.shuffle:
            generator = self.generator
            if generator is None:
                generator = Generator().manual_seed(_C.random_int64(default_generator))
            order = randperm(n, generator=generator)
        else:
            order = np.arange(n)
        for start in range(0, n, self.batch_size):
            chosen = order[start:start + self.batch_size]
            if len(chosen) < self.batch_size and self.drop_last:
                return
            items = [self.dataset[int(i)] for i in chosen]
            yield np.stack([x for x, _ in items]), np.stack([y for _, y in items])


def create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True,
                         drop_last=True, num_workers=0, tokenizer=None):
    """The book's loader: GPT-2 tokenizer, sliding windows, batches."""
    if tokenizer is None:
        from .tokenizer import get_tokenizer
        tokenizer = get_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)
