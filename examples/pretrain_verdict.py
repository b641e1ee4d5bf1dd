"""Pretrain GPT-2 124M on "The Verdict", as chapter 5 of the book does, on the CPU.

    python examples/pretrain_verdict.py [--text data/the-verdict.txt]
                                        [--epochs 10] [--out verdict-model]

Set-up as in the book: GPT_CONFIG_124M with context_length 256, a 90/10
train/validation split, batches of 2 windows of 256 tokens (stride 256),
AdamW (lr 0.0004, weight decay 0.1), 10 epochs, evaluation every 5 steps on
5 batches, a sample continuation of "Every effort moves you" after each epoch.
Writes OUT/model.safetensors (gptc.save) and OUT/losses.png (train and
validation loss against tokens seen). Then:

    gptc --weights OUT/model.safetensors --prompt "Every effort moves you"
"""
import argparse
import os
import sys
import time

import numpy as np

import gptc
from gptc.data import create_dataloader_v1
from gptc.training import train_model_simple


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    default_text = os.path.join(here, "..", "data", "the-verdict.txt")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=default_text, help="the training text")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", default="verdict-model", help="output directory")
    args = parser.parse_args(argv)

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    cfg = dict(gptc.GPT_CONFIG_124M, context_length=256)
    tokenizer = gptc.get_tokenizer()

    gptc.manual_seed(args.seed)
    model = gptc.GPTModel(cfg)
    optimizer = gptc.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)

    split = int(0.9 * len(text))
    train_loader = create_dataloader_v1(text[:split], batch_size=2, max_length=256, stride=256,
                                        drop_last=True, shuffle=True, tokenizer=tokenizer)
    val_loader = create_dataloader_v1(text[split:], batch_size=2, max_length=256, stride=256,
                                      drop_last=False, shuffle=False, tokenizer=tokenizer)
    total_tokens = len(train_loader) * 2 * 256 * args.epochs
    print(f"{len(tokenizer.encode(text))} tokens; {len(train_loader)} training batches, "
          f"{len(val_loader)} validation batches per epoch")

    progress = None
    try:
        from tqdm import tqdm
        bar = tqdm(total=total_tokens, unit="tok", file=sys.stderr, disable=None)
        progress = bar.update
    except ImportError:
        bar = None

    start = time.perf_counter()
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, None, num_epochs=args.epochs,
        eval_freq=5, eval_iter=5, start_context="Every effort moves you",
        tokenizer=tokenizer, progress=progress)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    print(f"Training took {elapsed / 60:.1f} minutes; final train loss {train_losses[-1]:.3f}, "
          f"validation loss {val_losses[-1]:.3f}")

    os.makedirs(args.out, exist_ok=True)
    gptc.save(model.state_dict(), os.path.join(args.out, "model.safetensors"))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(tokens_seen, train_losses, label="Training loss")
        ax.plot(tokens_seen, val_losses, linestyle="-.", label="Validation loss")
        ax.set_xlabel("Tokens seen")
        ax.set_ylabel("Loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "losses.png"), dpi=120)
    except ImportError:
        print("matplotlib is not installed: no loss plot", file=sys.stderr)
    np.savetxt(os.path.join(args.out, "losses.csv"),
               np.column_stack([tokens_seen, train_losses, val_losses]),
               delimiter=",", header="tokens_seen,train_loss,val_loss", comments="")
    print(f"Saved {args.out}/model.safetensors, losses.png and losses.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
