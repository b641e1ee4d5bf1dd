"""The committed TensorFlow fixture (tests/fixtures/tf_gpt2_tiny/): its
hyperparameters and the rule its tensors follow, recomputed with NumPy alone.

tests/make_tf_fixture.py wrote the files with TensorFlow from ``fixture_tensors``;
the tests compare what gptc reads with the same function, value by value.
"""
import os

import numpy as np

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                           "tf_gpt2_tiny")

#: OpenAI's hparams.json keys, for a GPT-2 small enough to commit.
HPARAMS = {"n_vocab": 96, "n_ctx": 12, "n_embd": 16, "n_head": 2, "n_layer": 2}


def variable_shapes(hparams=HPARAMS):
    """OpenAI's GPT-2 variables and their shapes (Conv1D weights as [1, nx, nf])."""
    nx, vocab, ctx = hparams["n_embd"], hparams["n_vocab"], hparams["n_ctx"]
    shapes = {"model/wte": [vocab, nx], "model/wpe": [ctx, nx]}
    for layer in range(hparams["n_layer"]):
        h = f"model/h{layer}"
        shapes.update({
            f"{h}/ln_1/g": [nx], f"{h}/ln_1/b": [nx],
            f"{h}/attn/c_attn/w": [1, nx, 3 * nx], f"{h}/attn/c_attn/b": [3 * nx],
            f"{h}/attn/c_proj/w": [1, nx, nx], f"{h}/attn/c_proj/b": [nx],
            f"{h}/ln_2/g": [nx], f"{h}/ln_2/b": [nx],
            f"{h}/mlp/c_fc/w": [1, nx, 4 * nx], f"{h}/mlp/c_fc/b": [4 * nx],
            f"{h}/mlp/c_proj/w": [1, 4 * nx, nx], f"{h}/mlp/c_proj/b": [nx],
        })
    shapes.update({"model/ln_f/g": [nx], "model/ln_f/b": [nx]})
    return shapes


def fixture_value(name, shape):
    """The values of variable ``name``: multiples of 1/1024 in [-0.5, 0.5), exact
    in float32, drawn by a generator seeded with the name's bytes. Layer-norm
    gains are shifted by 1 so that the model stays well conditioned."""
    rng = np.random.default_rng(list(name.encode("ascii")))
    value = (rng.integers(-512, 512, size=shape) / 1024).astype(np.float32)
    return value + np.float32(1.0) if name.endswith("/g") else value


def fixture_tensors(hparams=HPARAMS):
    """Every variable of the fixture, name -> float32 array."""
    return {name: fixture_value(name, shape)
            for name, shape in variable_shapes(hparams).items()}
