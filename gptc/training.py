"""The chapter-5 training loop: losses over batches and loaders, evaluation,
sample generation, and ``train_model_simple``."""
import numpy as np

from .autograd import no_grad
from .generate import generate_text_simple
from .nn.functional import cross_entropy

__all__ = ["text_to_token_ids", "token_ids_to_text", "calc_loss_batch", "calc_loss_loader",
           "evaluate_model", "generate_and_print_sample", "train_model_simple"]


def text_to_token_ids(text, tokenizer):
    """Token ids of ``text`` as a (1, n) int64 array."""
    return np.array([tokenizer.encode(text, allowed_special={"<|endoftext|>"})], dtype=np.int64)


def token_ids_to_text(token_ids, tokenizer):
    """Text of a (1, n) or (n,) array of token ids."""
    return tokenizer.decode(np.asarray(token_ids).reshape(-1).tolist())


def calc_loss_batch(input_batch, target_batch, model, device=None):
    """Mean next-token cross-entropy of one batch (a Tensor: .backward() trains)."""
    logits = model(input_batch)
    # (batch, seq_len, vocab) -> (batch * seq_len, vocab), as the book's flatten(0, 1)
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), np.asarray(target_batch).reshape(-1))


def calc_loss_loader(data_loader, model, device=None, num_batches=None):
    """Average loss over the first ``num_batches`` batches (all by default);
    NaN for an empty loader, as in the book."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model).item()
    return total / num_batches


def evaluate_model(model, train_loader, val_loader, device=None, eval_iter=5):
    """(train loss, validation loss) over ``eval_iter`` batches each, in eval mode."""
    model.eval()
    with no_grad():
        train_loss = calc_loss_loader(train_loader, model, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    """Print a greedy continuation of ``start_context`` (one line)."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    ids = generate_text_simple(model, text_to_token_ids(start_context, tokenizer),
                               max_new_tokens=max_new_tokens, context_size=context_size)
    print(token_ids_to_text(ids, tokenizer).replace("\n", " "))
    model.train()


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer, progress=None):
    """The book's training loop. Returns (train_losses, val_losses, tokens_seen),
    one entry per evaluation. ``progress``, if given, is called with the number
    of tokens of each batch (e.g. a tqdm bar's update)."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.size
            global_step += 1
            if progress is not None:
                progress(input_batch.size)
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader,
                                                      eval_iter=eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen
