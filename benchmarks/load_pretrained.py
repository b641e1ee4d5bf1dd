#!/usr/bin/env python3
"""Memory and time of loading GPT-2 of each size from disk, on random weights.

For each size, a fresh subprocess writes a random model of that shape (tied
head, as GPT-2's) with ``model.save_pretrained`` (Hugging Face's layout, one
float32 model.safetensors), and another fresh subprocess loads it with
``gptc.GPTModel.from_pretrained``, reporting the load time and the growth of
its peak resident memory (VmHWM after the load minus VmRSS before it) against
the parameters' bytes. With ``--tensorflow-python``, that interpreter (one
with TensorFlow, never a gptc dependency) also writes the same shapes as an
OpenAI checkpoint (``tf.raw_ops.SaveV2``, OpenAI's variable names), loaded
with ``gptc.pretrained.gpt2_model_from_tf_ckpt``, which verifies every
tensor's CRC-32C.

The files are read right after being written, so they come from the page
cache: the times are the loader's, not the disk's.

    python3 benchmarks/load_pretrained.py [--sizes gpt2-small,gpt2-xl] [--dir /tmp/x]
                                          [--tensorflow-python /tmp/tfvenv/bin/python]
"""
import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITE_SAFETENSORS = """
import sys
import numpy as np
import gptc
from gptc.nn.utils import skip_init
cfg = gptc.gpt2_config(sys.argv[1], qkv_bias=True)
model = skip_init(gptc.GPTModel, cfg, tie_weights=True)
rng = np.random.default_rng(0)
for param in model.parameters():
    rng.standard_normal(dtype=np.float32, out=param)
    param *= np.float32(0.02)
model.save_pretrained(sys.argv[2])
"""

WRITE_TENSORFLOW = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
sizes = {"gpt2-small": (768, 12, 12), "gpt2-medium": (1024, 24, 16),
         "gpt2-large": (1280, 36, 20), "gpt2-xl": (1600, 48, 25)}
nx, n_layer, n_head = sizes[sys.argv[1]]
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
shapes = {"model/wte": [50257, nx], "model/wpe": [1024, nx], "model/ln_f/g": [nx],
          "model/ln_f/b": [nx]}
for i in range(n_layer):
    for name, shape in (("ln_1/g", [nx]), ("ln_1/b", [nx]), ("attn/c_attn/w", [1, nx, 3 * nx]),
                        ("attn/c_attn/b", [3 * nx]), ("attn/c_proj/w", [1, nx, nx]),
                        ("attn/c_proj/b", [nx]), ("ln_2/g", [nx]), ("ln_2/b", [nx]),
                        ("mlp/c_fc/w", [1, nx, 4 * nx]), ("mlp/c_fc/b", [4 * nx]),
                        ("mlp/c_proj/w", [1, 4 * nx, nx]), ("mlp/c_proj/b", [nx])):
        shapes[f"model/h{i}/{name}"] = shape
rng = np.random.default_rng(0)
names = sorted(shapes)
tensors = [tf.constant(rng.standard_normal(shapes[n], dtype=np.float32) * 0.02) for n in names]
tf.raw_ops.SaveV2(prefix=os.path.join(out, "model.ckpt"), tensor_names=names,
                  shape_and_slices=[""] * len(names), tensors=tensors)
with open(os.path.join(out, "checkpoint"), "w") as f:
    f.write('model_checkpoint_path: "model.ckpt"\\nall_model_checkpoint_paths: "model.ckpt"\\n')
with open(os.path.join(out, "hparams.json"), "w") as f:
    json.dump({"n_vocab": 50257, "n_ctx": 1024, "n_embd": nx, "n_head": n_head,
               "n_layer": n_layer}, f)
"""

LOAD = """
import sys, time
import gptc
from gptc import pretrained

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

before = status("VmRSS")
start = time.perf_counter()
if sys.argv[1] == "safetensors":
    model = gptc.GPTModel.from_pretrained(sys.argv[2])
else:
    model = pretrained.gpt2_model_from_tf_ckpt(sys.argv[2])
seconds = time.perf_counter() - start
params = sum(p.nbytes for p in model.parameters())
print(before, status("VmHWM"), params, seconds)
"""


def _run(python, code, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        REPO_ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([python, "-c", code, *args], env=env, capture_output=True,
                            text=True, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        sys.exit(f"{python} failed:\n{result.stderr}")
    return result.stdout


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="gpt2-small,gpt2-medium,gpt2-large,gpt2-xl")
    parser.add_argument("--dir", help="where to write the files (default: a temporary "
                                      "directory, removed at the end)")
    parser.add_argument("--tensorflow-python", metavar="PYTHON",
                        help="an interpreter with TensorFlow, to time OpenAI checkpoints too")
    parser.add_argument("--repeats", type=int, default=2,
                        help="loads per file; the fastest is reported (default: 2)")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="gptc-load-")
    print(f"# {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# {shlex.join([sys.executable] + sys.argv)}")
    print("| size | format | parameters | files | load | peak growth | growth / parameters |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    try:
        for size in args.sizes.split(","):
            formats = [("safetensors", sys.executable, WRITE_SAFETENSORS)]
            if args.tensorflow_python:
                formats.append(("tensorflow", args.tensorflow_python, WRITE_TENSORFLOW))
            for kind, python, writer in formats:
                path = os.path.join(work, f"{size}-{kind}")
                _run(python, writer, size, path)
                runs = [[float(v) for v in _run(sys.executable, LOAD, kind, path).split()]
                        for _ in range(args.repeats)]
                before, peak, params, seconds = min(runs, key=lambda r: r[3])
                growth = max(r[1] - r[0] for r in runs)
                print(f"| {size} | {kind} | {params / 2 ** 20:,.0f} MiB | "
                      f"{_dir_bytes(path) / 2 ** 20:,.0f} MiB | {seconds:.2f} s | "
                      f"{growth / 2 ** 20:,.0f} MiB | {growth / params:.3f} |", flush=True)
                shutil.rmtree(path)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
