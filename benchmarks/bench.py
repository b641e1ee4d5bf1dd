#!/usr/bin/env python3
"""Benchmark gptc against PyTorch running the book's GPTModel (tests/torch_reference.py).

One run, one machine, the same thread count for everyone. Cases (``--cases``):

  1  GPT-2 124M forward, batch (2, 4), eval mode, all logits; PyTorch and, when installed
     (pip install ".[bench]"), ONNX Runtime running the book's model exported to ONNX
  2  forward (4, 64)
  3  forward (1, 1024)
  4  greedy generation with a KV cache, "Hello, I am" + N tokens, tokens/s: gptc.generate
     against a KV-cache version of the book's model written here (prefill, then one-token
     steps)
  5  matmul GFLOP/s on the model's shapes: gptc._C.linear vs NumPy x @ W.T vs F.linear
  6  peak resident memory of the (1, 1024) forward, each in a fresh subprocess
  7  streaming-read bandwidth, the decode bound it implies, and the weight-streaming
     floor of a few-token forward (case 1 as a multiple of it)
  8  one training step, (2, 256), train mode (dropout 0.1): forward, cross-entropy,
     backward, AdamW (lr 0.0004, weight decay 0.1)
  9  bfloat16 weights (model.to_dtype("bfloat16")): decode tokens/s against float32
     (gptc.generate, case 4's prompt), the largest logit difference on the book's batch,
     and top-1 agreement with float32 over the generated tokens
 10  int8 weights (model.to_dtype("int8")): decode tokens/s of float32, bfloat16 and int8
     and prefill (1, 256) against float32 (interleaved), the int8 bandwidth bound, bytes
     per weight, and quality against float32 on the seed-123 model and on a model trained
     by examples/pretrain_verdict.py (cached in --verdict-model), with its validation loss
  11 the arithmetic peak: each kernel set's register-only FMA loop, 1 and N threads
     (also run with case 5, whose GEMM figures it turns into fractions of the peak)
 12 where the time of the forwards goes: each forward of cases 1-3 against its matrix
     products timed alone (the model's weight shapes with M = batch x tokens, times their
     count), the rest (attention, layer norms, GELU, embeddings, glue) by difference; the
     products' GFLOP/s as a fraction of case 11's peak

Times are medians over repeated runs after a warm-up; the spread is (min-max, n). The
libraries of one comparison take turns, block by block (time_rivals).
Ratios are PyTorch time / gptc time: above 1 means gptc is faster.

    python3 benchmarks/bench.py [--threads N] [--new-tokens N] [--quick]
                                [--cases 1,2,5] [--json results.json]
                                [--verdict-model DIR] [--verdict-epochs N] [--verdict-text FILE]
"""
import argparse
import collections
import datetime
import functools
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prefer the in-place build of this checkout (python3 setup.py build_ext --inplace)
# over an installed gptc.
if any(name.startswith("_C") and name.endswith(".so")
       for name in os.listdir(os.path.join(REPO_ROOT, "gptc"))):
    sys.path.insert(0, REPO_ROOT)

# numpy, torch and gptc are imported in main() once the thread count is known:
# OpenBLAS reads OPENBLAS_NUM_THREADS when numpy is first imported.
np = torch = gptc = None

HELLO_IDS = [15496, 11, 314, 716]           # "Hello, I am"
BOOK_BATCH = [[6109, 3626, 6100, 345],      # "Every effort moves you"
              [6109, 1110, 6622, 257]]      # "Every day holds a"
MIB = 2 ** 20
# The book's GPT_CONFIG_124M (main() checks it equals gptc's); the memory subprocess
# for PyTorch uses it so that it never loads gptc.
CFG_124M = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
            "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}

# Per case: (warm-up calls, minimum timed samples, time budget in seconds per implementation).
REPEATS = {
    "full": {"fwd_2x4": (3, 20, 5.0), "fwd_4x64": (1, 7, 8.0), "fwd_1x1024": (1, 5, 25.0),
             "generate": (1, 3, 0.0), "matmul": (2, 7, 1.5), "bandwidth": 10,
             "train_step": (1, 5, 20.0), "fma_iterations": 20_000_000},
    "quick": {"fwd_2x4": (1, 3, 0.5), "fwd_4x64": (1, 2, 0.0), "fwd_1x1024": (0, 1, 0.0),
              "generate": (0, 1, 0.0), "matmul": (1, 3, 0.2), "bandwidth": 3,
              "train_step": (1, 2, 0.0), "fma_iterations": 2_000_000},
}


# ---------------------------------------------------------------- helpers

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for gptc, PyTorch and NumPy's BLAS "
                             "(default: all CPUs this process may use)")
    parser.add_argument("--new-tokens", type=int, default=100,
                        help="tokens to generate in case 4 (default 100)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--cases", default="1,2,3,4,5,6,7,8,9,10,11,12",
                        help="comma-separated subset of the cases 1-12 (default: all)")
    parser.add_argument("--verdict-model", metavar="DIR",
                        default=os.path.join(os.path.expanduser("~"), ".cache", "gptc-bench",
                                             "verdict-model"),
                        help="case 10: where examples/pretrain_verdict.py's model is kept "
                             "(trained into it on the first run; default: %(default)s)")
    parser.add_argument("--verdict-epochs", type=int, default=10,
                        help="case 10: epochs of that training (default: 10, the book's)")
    parser.add_argument("--verdict-text", metavar="FILE",
                        default=os.path.join(REPO_ROOT, "data", "the-verdict.txt"),
                        help="case 10: The Verdict (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every result to PATH")
    parser.add_argument("--memory-child", choices=["gptc", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.new_tokens < 1:
        parser.error("--new-tokens must be at least 1")
    try:
        args.cases = sorted({int(c) for c in args.cases.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--cases takes case numbers separated by commas, got {args.cases!r}")
    if not args.cases or not set(args.cases) <= set(CASES):
        parser.error(f"--cases takes numbers from {sorted(CASES)}, got {args.cases}")
    if 10 in args.cases and not os.path.isfile(args.verdict_text):
        parser.error(f"case 10 reads The Verdict, not found at {args.verdict_text} "
                     "(--verdict-text FILE)")
    return args


def progress(message):
    print(message, file=sys.stderr, flush=True)


def time_calls(fn, warmup, min_samples, budget):
    """Seconds per call of fn(): `warmup` untimed calls, then timed samples until
    there are at least `min_samples` and `budget` seconds have passed. Short calls
    are repeated inside one sample (at least ~20 ms per sample), as timeit does."""
    number = calls_per_sample(fn, warmup)
    time.sleep(0.2)   # let the previous library's spinning worker threads go idle
    return sample_block(fn, number, min_samples, budget)


# Rivals (gptc and the libraries it is compared with) are timed in at most this many
# alternating blocks each, so that a slow spell of the VM falls on all of them alike
# instead of on whichever happened to run then (seen here: the same (4, 64) forward's
# median 412 ms in one run and 449 ms in the next).
MAX_ROUNDS = 5


def time_rivals(fns, warmup, min_samples, budget):
    """Seconds per call of each of fns (name -> function), as time_calls measures one,
    the rivals taking turns: each warmed up, then `rounds` blocks each, in the order of
    fns and then reversed, each block at least min_samples / rounds samples and
    budget / rounds seconds. Returns name -> samples."""
    rounds = max(1, min(MAX_ROUNDS, min_samples))
    block_samples = -(-min_samples // rounds)
    numbers = {name: calls_per_sample(fn, warmup) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else reversed(list(fns)):
            time.sleep(0.2)   # let the previous library's spinning worker threads go idle
            samples[name] += sample_block(fns[name], numbers[name], block_samples,
                                          budget / rounds)
    return samples


def calls_per_sample(fn, warmup):
    """`warmup` untimed calls of fn; how many calls make one sample of ~20 ms or more."""
    number = 1
    for _ in range(warmup):
        once = timed(fn)
        if once < 0.02:
            number = max(1, int(0.02 / max(once, 1e-7)))
    return number


def sample_block(fn, number, min_samples, budget):
    """Timed samples of `number` calls each, until there are at least `min_samples`
    and `budget` seconds have passed (at most 10000)."""
    samples = []
    start = time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
        if len(samples) >= 10000:
            break
    return samples


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def fmt_time(s):
    """A summary of seconds as 'median (min-max, n=...)' in ms."""
    return f"{s['median'] * 1e3:.1f} ms ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f}, n={s['n']})"


def fmt_rate(s, work, unit, digits=1):
    """A summary of seconds as a rate: work / median time (and the range)."""
    unit = f" {unit}" if unit else ""
    return (f"{work / s['median']:.{digits}f}{unit} ({work / s['max']:.{digits}f}-"
            f"{work / s['min']:.{digits}f}, n={s['n']})")


def print_table(title, headers, rows, notes=()):
    """The one table printer: a title, a header row, left-aligned columns and the notes
    under them."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip())
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(line)
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def proc_status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def l3_cache_bytes():
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()
        units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (OSError, ValueError, IndexError):
        return 32 * MIB


def command_line():
    """The command line of this process (the interpreter by its base name)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        argv = [sys.executable] + sys.argv
    return shlex.join([os.path.basename(argv[0])] + argv[1:])


def openblas_core():
    """The kernel OpenBLAS chose at run time ("SkylakeX", "Haswell", ...), asked of the
    library NumPy loaded, or None. np.show_config() names only the build's target list:
    NumPy's OpenBLAS may run its AVX-512 kernel while the configuration says Haswell.
    OPENBLAS_CORETYPE=Haswell (read when NumPy is imported) forces its AVX2 kernel, the
    peer of GPTC_ISA=avx2."""
    import ctypes
    import glob
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")
    for path in glob.glob(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def numpy_blas():
    """NumPy's BLAS and the kernel it runs: threadpoolctl if installed, else
    numpy.show_config, with openblas_core()."""
    core = openblas_core()
    core = f", running its {core} kernel" if core else ""
    try:
        import threadpoolctl
        infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            i = infos[0]
            return (f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                    f"{i.get('num_threads')} threads){core}")
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        config = blas.get("openblas configuration", "")
        return f"{blas.get('name')} {blas.get('version')}{core}" + (
            f" [build: {config}]" if config else "")
    except Exception:   # older NumPy: no dict mode
        return "unknown (numpy.show_config() prints it)" + core


def import_torch_reference():
    path = os.path.join(REPO_ROOT, "tests", "torch_reference.py")
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def long_ids(n_tokens, batch=1):
    """Deterministic token ids spread over the vocabulary."""
    return (np.arange(batch * n_tokens, dtype=np.int64).reshape(batch, n_tokens)
            * 7919 + 11) % CFG_124M["vocab_size"]


# ---------------------------------------------------------------- models

def build_models():
    """GPT-2 124M built once in gptc with seed 123, loaded into the book's
    PyTorch model through its state_dict. Both in eval mode."""
    cfg = gptc.GPT_CONFIG_124M
    gptc.manual_seed(123)
    gmodel = gptc.GPTModel(cfg)
    gmodel.eval()
    ref = import_torch_reference()
    tmodel = ref.GPTModel(cfg)
    tmodel.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            gmodel.state_dict().items()})
    tmodel.eval()
    return gmodel, tmodel, ref


def param_bytes(gmodel):
    return sum(p.numel() for p in gmodel.parameters()) * 4


# What one decode step of GPT-2 124M reads: every parameter except the two embedding
# tables, of which it reads one row each (out_head is a separate matrix, read whole).
DECODE_BYTES_124M = (163_009_536 - 50257 * 768 - 1024 * 768) * 4


def decode_bytes(gmodel):
    """Bytes of weights one decode step reads (float32): all parameters but the token
    and position embeddings, which contribute a single row each."""
    tables = gmodel.tok_emb.weight.nbytes + gmodel.pos_emb.weight.nbytes
    if gmodel.out_head.weight is gmodel.tok_emb.weight:   # tied: the head reads it whole
        tables -= gmodel.tok_emb.weight.nbytes
    return param_bytes(gmodel) - tables


# ---------------------------------------------------------------- cases 1-3: forward

def onnx_session(tmodel, threads):
    """The book's PyTorch GPTModel exported to ONNX (dynamic batch and length) and
    opened in ONNX Runtime's CPU provider with `threads` intra-op threads; None
    (and a note) when onnxruntime or onnx is not installed (pip install ".[bench]")."""
    try:
        import onnxruntime
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        progress("  ONNX Runtime not installed (pip install \".[bench]\"): its column stays empty")
        return None
    import tempfile
    import warnings
    path = os.path.join(tempfile.mkdtemp(prefix="gptc-bench-"), "gpt2-124m.onnx")
    progress("  exporting the PyTorch model to ONNX")
    example = torch.from_numpy(np.array(BOOK_BATCH, dtype=np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tmodel, (example,), path, input_names=["idx"],
                          output_names=["logits"], dynamo=False,
                          dynamic_axes={"idx": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch", 1: "seq"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.version = onnxruntime.__version__
    return session


def case_forward(gmodel, tmodel, ids, repeats, label, onnx=None):
    warmup, min_samples, budget = repeats
    ids_t = torch.from_numpy(ids)
    out = {}

    def run_torch():
        with torch.inference_mode():
            return tmodel(ids_t)

    def run_gptc():
        # inference: no gradient recording (the one-call C forward), as
        # torch.inference_mode() on the other side
        with gptc.no_grad():
            return gmodel(ids)

    rivals = {"gptc": run_gptc, "torch": run_torch}
    if onnx is not None:
        rivals["onnx"] = lambda: onnx.run(None, {"idx": ids})
    progress(f"  {label}: {', '.join(rivals)}, taking turns")
    samples = time_rivals(rivals, warmup, min_samples, budget)
    logits = run_gptc()
    for name, s in samples.items():
        out[name], out[name + "_samples"] = summary(s), s
    out["ratio"] = out["torch"]["median"] / out["gptc"]["median"]
    out["max_abs_logit_diff"] = float(np.abs(logits - run_torch().numpy()).max())
    if onnx is not None:
        out["ratio_onnx"] = out["onnx"]["median"] / out["gptc"]["median"]
        out["max_abs_logit_diff_onnx"] = float(np.abs(logits - rivals["onnx"]()[0]).max())
    return out


# ---------------------------------------------------------------- case 4: generation

def torch_generate_kv(tmodel, idx, max_new_tokens, context_size):
    """Greedy generation with the book's PyTorch GPTModel (tests/torch_reference.py)
    and a KV cache: the prompt runs once through the book's modules with every
    layer's keys and values kept, then each new token runs alone and attends over
    them; the out_head runs on the last position only. When the sequence outgrows
    context_size the cropped window runs again from position 0, as the recompute
    of the book's generate_text_simple sees it. Call under torch.inference_mode()."""
    blocks = list(tmodel.trf_blocks)
    att0 = blocks[0].att
    n_heads, head_dim = att0.num_heads, att0.head_dim
    batch, n_tokens = idx.shape
    capacity = min(context_size, n_tokens + max_new_tokens - 1)
    # per layer: keys and values (batch, heads, capacity, head_dim), filled up to `cached`
    keys = [torch.empty(batch, n_heads, capacity, head_dim) for _ in blocks]
    values = [torch.empty(batch, n_heads, capacity, head_dim) for _ in blocks]

    def run(tokens, past):
        """Logits of the last of `tokens` (batch, n) at positions past .. past + n - 1."""
        n = tokens.shape[1]
        x = tmodel.tok_emb(tokens) + tmodel.pos_emb(torch.arange(past, past + n))
        x = tmodel.drop_emb(x)
        for layer, block in enumerate(blocks):
            att = block.att
            h = block.norm1(x)
            split = lambda t: t.view(batch, n, n_heads, head_dim).transpose(1, 2)
            keys[layer][:, :, past:past + n] = split(att.W_key(h))
            values[layer][:, :, past:past + n] = split(att.W_value(h))
            q = split(att.W_query(h))
            k = keys[layer][:, :, :past + n]
            v = values[layer][:, :, :past + n]
            scores = q @ k.transpose(2, 3)
            if n > 1:   # a single new token may see the whole cache
                mask = torch.ones(n, past + n, dtype=torch.bool).triu(past + 1)
                scores.masked_fill_(mask, -torch.inf)
            weights = torch.softmax(scores / head_dim ** 0.5, dim=-1)
            context = (att.dropout(weights) @ v).transpose(1, 2).reshape(batch, n, -1)
            x = x + block.drop_shortcut(att.out_proj(context))
            x = x + block.drop_shortcut(block.ff(block.norm2(x)))
        return tmodel.out_head(tmodel.final_norm(x[:, -1:, :]))[:, -1, :]

    out = torch.empty(batch, n_tokens + max_new_tokens, dtype=torch.long)
    out[:, :n_tokens] = idx
    length = n_tokens
    for step in range(max_new_tokens):
        if step > 0 and length <= context_size:
            logits = run(out[:, length - 1:length], length - 1)
        else:
            start = max(0, length - context_size)
            logits = run(out[:, start:length], 0)
        out[:, length] = torch.argmax(logits, dim=-1)
        length += 1
    return out


def case_generate(gmodel, tmodel, new_tokens, repeats):
    warmup, min_samples, budget = repeats
    idx = np.array([HELLO_IDS], dtype=np.int64)
    idx_t = torch.from_numpy(idx)
    results, ids = {}, {}

    def run_gptc():
        ids["gptc"] = gptc.generate(gmodel, idx, max_new_tokens=new_tokens, context_size=1024)

    def run_torch():
        with torch.inference_mode():
            ids["torch"] = torch_generate_kv(tmodel, idx_t, max_new_tokens=new_tokens,
                                             context_size=1024)

    progress("  generation: gptc, torch, taking turns")
    samples = time_rivals({"gptc": run_gptc, "torch": run_torch}, warmup, min_samples, budget)
    for name, s in samples.items():
        results[name], results[name + "_samples"] = summary(s), s
        results[name + "_ids"] = np.asarray(ids[name])[0].tolist()
    results["identical_ids"] = results["gptc_ids"] == results["torch_ids"]
    results["ratio"] = results["torch"]["median"] / results["gptc"]["median"]
    results["new_tokens"] = new_tokens
    results["gptc_tokens_per_s"] = new_tokens / results["gptc"]["median"]
    results["torch_tokens_per_s"] = new_tokens / results["torch"]["median"]
    return results


# ---------------------------------------------------------------- case 11: FMA peak

# Best of this many runs of the FMA loop: on a VM a vCPU can lose its core to the
# host for part of a run (seen here: 241 against 454 GFLOP/s for the same loop).
PEAK_TRIES = 7


def case_fma_peak(threads, iterations):
    """The arithmetic peak of every kernel set this CPU runs: its register-only
    loop of independent multiply-adds (gptc._C.fma_peak), on 1 and `threads`
    threads, best of PEAK_TRIES. The set in use is restored afterwards."""
    before = gptc._C.isa()
    out = {}
    try:
        for isa in gptc._C.supported_isas():
            gptc._C.set_isa(isa)
            progress(f"  FMA peak: {isa}")
            counts = sorted({1, threads})
            out[isa] = {n: max(gptc._C.fma_peak(n, iterations) for _ in range(PEAK_TRIES))
                        for n in counts}
    finally:
        gptc._C.set_isa(before)
    return out


# ---------------------------------------------------------------- case 5: matmul

MATMUL_SHAPES = [  # (K, N): x (M, K) times W.T, W stored (N, K) as nn.Linear stores it
    (768, 2304, "qkv (3 x 768)"),
    (768, 3072, "ff up"),
    (3072, 768, "ff down"),
    (768, 50257, "out_head"),
]


def case_matmul(repeats):
    warmup, min_samples, budget = repeats
    rng = np.random.default_rng(0)
    rows = []
    for m in (256, 1):
        for k, n, name in MATMUL_SHAPES:
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(k ** -0.5)
            x_t, w_t = torch.from_numpy(x), torch.from_numpy(w)

            def run_torch():
                with torch.inference_mode():
                    return torch.nn.functional.linear(x_t, w_t)

            label = f"({m}x{k})·({k}x{n})"
            progress(f"  matmul {label}")
            flop = 2.0 * m * k * n
            samples = time_rivals({"gptc": lambda: gptc._C.linear(x, w, None),
                                   "numpy": lambda: x @ w.T, "torch": run_torch},
                                  warmup, min_samples, budget)
            g, nmp, t = (summary(samples[name]) for name in ("gptc", "numpy", "torch"))
            expected = x @ w.T
            err = float(np.abs(gptc._C.linear(x, w, None) - expected).max())
            rows.append({"shape": label, "layer": name, "m": m, "k": k, "n": n,
                         "gflop": flop / 1e9, "gptc": g, "numpy": nmp, "torch": t,
                         "gptc_gflops": flop / g["median"] / 1e9,
                         "numpy_gflops": flop / nmp["median"] / 1e9,
                         "torch_gflops": flop / t["median"] / 1e9,
                         "ratio_numpy": nmp["median"] / g["median"],
                         "ratio_torch": t["median"] / g["median"],
                         "max_abs_diff_vs_numpy": err})
    return rows


# ---------------------------------------------------------------- case 12: forward split

def case_forward_split(gmodel, repeats):
    """For each forward of cases 1-3 (gptc, eval mode, no gradients): its time, and the
    time of its matrix products alone, each product timed with random operands of its
    shape (x: M = batch * tokens rows) and multiplied by how often the forward runs it.
    Timed alone, a product may find its weight in cache where the forward streams it
    from memory, so the products' share is a lower bound for few rows."""
    warmup, min_samples, budget = repeats
    cfg = gptc.GPT_CONFIG_124M
    d, layers = cfg["emb_dim"], cfg["n_layers"]
    products = [(d, 3 * d, "qkv", layers), (d, d, "out_proj", layers),
                (d, 4 * d, "ff up", layers), (4 * d, d, "ff down", layers),
                (d, cfg["vocab_size"], "out_head", 1)]
    rng = np.random.default_rng(12)
    out = []
    for number, (_, make_ids, label) in FORWARD_INPUTS.items():
        ids = make_ids()
        m = ids.size
        progress(f"  forward split {label}")
        with gptc.no_grad():
            fwd = summary(time_calls(lambda: gmodel(ids), warmup, min_samples, budget))
        total_s = flop = 0.0
        for k, n, _, count in products:
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = rng.standard_normal((n, k), dtype=np.float32)
            t = summary(time_calls(lambda: gptc._C.linear(x, w, None), warmup, min_samples,
                                   budget / 4))
            total_s += t["median"] * count
            flop += 2.0 * m * k * n * count
        out.append({"case": number, "label": label, "forward": fwd,
                    "products_s": total_s, "products_gflops": flop / total_s / 1e9,
                    "products_share": total_s / fwd["median"]})
    return out


# ---------------------------------------------------------------- case 6: memory

def memory_child(impl, threads):
    """Runs in a fresh process: build the model, one (1, 1024) forward, report
    resident memory as JSON on stdout."""
    global np, torch, gptc
    import numpy as np
    ids = long_ids(1024)
    if impl == "gptc":
        import gptc
        gptc.set_num_threads(threads)
        rss_import = proc_status_kib("VmRSS")
        gptc.manual_seed(123)
        model = gptc.GPTModel(CFG_124M)
        model.eval()
        n_params = sum(p.numel() for p in model.parameters())

        def forward():
            with gptc.no_grad():   # inference keeps no activations
                return model(ids)
    else:
        import torch
        torch.set_num_threads(threads)
        ref = import_torch_reference()
        rss_import = proc_status_kib("VmRSS")
        torch.manual_seed(123)   # the same weights as gptc's seed 123 (checked by the tests)
        model = ref.GPTModel(CFG_124M)
        model.eval()
        n_params = sum(p.numel() for p in model.parameters())
        ids_t = torch.from_numpy(ids)

        def forward():
            with torch.inference_mode():
                return model(ids_t)
    rss_model = proc_status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:   # reset VmHWM to the current RSS so the peak is the forward's alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    logits = forward()
    hwm = proc_status_kib("VmHWM")
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = hwm if hwm_reset and hwm is not None else maxrss_after
    print(json.dumps({"impl": impl, "param_bytes": n_params * 4,
                      "logits_bytes": int(np.prod(logits.shape)) * 4,
                      "rss_after_import_kib": rss_import, "rss_model_kib": rss_model,
                      "peak_forward_kib": peak, "hwm_reset": hwm_reset,
                      "ru_maxrss_before_kib": maxrss_before,
                      "ru_maxrss_after_kib": maxrss_after}))


def case_memory(threads):
    results = {}
    for impl in ("gptc", "torch"):
        progress(f"  memory: {impl} (fresh subprocess)")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                               impl, "--threads", str(threads)],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"memory subprocess for {impl} failed:\n{proc.stderr}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        # Everything resident at the forward's peak beyond the imported libraries
        # and the parameters: activations, logits, allocator slack.
        r["extra_over_params_mib"] = ((r["peak_forward_kib"] - r["rss_after_import_kib"])
                                      * 1024 - r["param_bytes"]) / MIB
        r["forward_delta_mib"] = (r["peak_forward_kib"] - r["rss_model_kib"]) / 1024
        results[impl] = r
    return results


# ---------------------------------------------------------------- case 7: bandwidth

def case_bandwidth(threads, reads, weight_bytes):
    """Streaming-read bandwidth: gptc._C.read_bandwidth reads a float32 array much
    larger than the L3 cache with the kernel set's widest loads, on 1 thread and on
    `threads` threads, best of `reads`; the better figure is the bound's bandwidth.
    (NumPy's sum is no such measure: its pairwise float32 adds kept one thread at
    about half the memory's speed here.)"""
    size = max(512 * MIB, 8 * l3_cache_bytes())
    a = np.ones(size // 4, dtype=np.float32)
    results = {"array_mib": size / MIB, "l3_mib": l3_cache_bytes() / MIB,
               "isa": gptc._C.isa(), "readers": {}}
    for n in sorted({1, threads}):
        gptc._C.read_bandwidth(a, n)
        label = "1 thread" if n == 1 else f"{n} threads"
        results["readers"][label] = max(gptc._C.read_bandwidth(a, n) for _ in range(reads))
    del a
    results["bandwidth_gbs"] = max(results["readers"].values())
    results["weight_bytes_per_token"] = weight_bytes
    results["decode_bound_tokens_per_s"] = results["bandwidth_gbs"] * 1e9 / weight_bytes
    return results


# ---------------------------------------------------------------- case 8: training step

TRAIN_BATCH = (2, 256)


def case_train_step(repeats):
    """One chapter-5 training step of GPT-2 124M with context_length 256: forward,
    cross-entropy, backward, AdamW (lr 0.0004, weight decay 0.1). The model is built
    in gptc (seed 123) and loaded into PyTorch; both in train mode (dropout 0.1), on
    the same batch of random token ids. Each side's optimizer state persists across
    the warm-up and timed steps."""
    warmup, min_samples, budget = repeats
    cfg = dict(gptc.GPT_CONFIG_124M, context_length=TRAIN_BATCH[1])
    gptc.manual_seed(123)
    gmodel = gptc.GPTModel(cfg)
    ref = import_torch_reference()
    tmodel = ref.GPTModel(cfg)
    tmodel.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            gmodel.state_dict().items()})
    gmodel.train()
    tmodel.train()
    torch.manual_seed(123)   # dropout masks
    g_opt = gptc.optim.AdamW(gmodel.parameters(), lr=0.0004, weight_decay=0.1)
    t_opt = torch.optim.AdamW(tmodel.parameters(), lr=0.0004, weight_decay=0.1)
    rng = np.random.default_rng(8)
    data = rng.integers(0, cfg["vocab_size"], (TRAIN_BATCH[0], TRAIN_BATCH[1] + 1))
    inputs, targets = data[:, :-1], data[:, 1:]
    inputs_t, targets_t = torch.from_numpy(inputs), torch.from_numpy(targets).flatten()
    losses = {"gptc": [], "torch": []}

    def step_gptc():
        g_opt.zero_grad()
        loss = gptc.nn.functional.cross_entropy(gmodel(inputs).flatten(0, 1),
                                                targets.flatten())
        loss.backward()
        g_opt.step()
        losses["gptc"].append(loss.item())

    def step_torch():
        t_opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tmodel(inputs_t).flatten(0, 1), targets_t)
        loss.backward()
        t_opt.step()
        losses["torch"].append(loss.item())

    out = {"batch": list(TRAIN_BATCH)}
    progress(f"  training step {TRAIN_BATCH}: gptc, torch, taking turns")
    samples = time_rivals({"gptc": step_gptc, "torch": step_torch}, warmup, min_samples,
                          budget)
    for name, s in samples.items():
        out[name], out[name + "_samples"] = summary(s), s
        out[name + "_losses"] = losses[name]
    out["ratio"] = out["torch"]["median"] / out["gptc"]["median"]
    out["tokens_per_step"] = TRAIN_BATCH[0] * TRAIN_BATCH[1]
    del g_opt, t_opt, gmodel, tmodel
    return out


# ---------------------------------------------------------------- case 9: bfloat16

def case_bfloat16(gmodel, new_tokens, repeats):
    """gptc.generate ("Hello, I am" + new_tokens, greedy) with the float32 weights and
    with bfloat16 copies (model.to_dtype), in one run; the largest logit difference
    between the two on the book's batch; and, feeding the float32 continuation to the
    bfloat16 model (teacher forcing), how often its top-1 choice is float32's."""
    warmup, min_samples, budget = repeats
    idx = np.array([HELLO_IDS], dtype=np.int64)
    batch = np.array(BOOK_BATCH, dtype=np.int64)
    out = {}
    try:
        for dtype in ("float32", "bfloat16"):
            gmodel.to_dtype(dtype)
            progress(f"  generation, {dtype} weights")

            def run():
                return gptc.generate(gmodel, idx, max_new_tokens=new_tokens, context_size=1024)
            samples = time_calls(run, warmup, min_samples, budget)
            out[dtype] = summary(samples)
            out[dtype + "_samples"] = samples
            out[dtype + "_tokens_per_s"] = new_tokens / out[dtype]["median"]
            with gptc.no_grad():
                ids = run()
                out[dtype + "_ids"] = ids[0].tolist()
                out[dtype + "_book_logits"] = gmodel(batch)
                if dtype == "float32":
                    text = ids
                # the top-1 choice at each of the new_tokens positions of float32's text
                out[dtype + "_next"] = gmodel(text[:, :-1]).argmax(-1)[0, len(HELLO_IDS) - 1:]
    finally:
        gmodel.to_dtype("float32")
    out["speedup"] = out["float32"]["median"] / out["bfloat16"]["median"]
    out["max_abs_logit_diff"] = float(np.abs(out.pop("bfloat16_book_logits")
                                             - out.pop("float32_book_logits")).max())
    out["top1_agreement"] = float((out.pop("bfloat16_next") == out.pop("float32_next")).mean())
    out["identical_ids"] = out["float32_ids"] == out["bfloat16_ids"]
    out["new_tokens"] = new_tokens
    return out


# ---------------------------------------------------------------- case 10: int8

INT8_DTYPES = ("float32", "bfloat16", "int8")
VERDICT_PROMPT = [6109, 3626, 6100, 345]    # "Every effort moves you"


def case_int8(gmodel, new_tokens, repeats, bandwidth_gbs, verdict_dir, verdict_text,
              verdict_epochs):
    """int8 weights (model.to_dtype("int8")) against float32 and bfloat16 in one run:
    decode tokens/s (gptc.generate, case 4's prompt; the dtypes interleaved round by
    round), prefill (1, 256) time against float32 (interleaved), the int8 bandwidth bound,
    bytes per weight of the int8 copies; quality against float32 on the seed-123 model
    and on the model examples/pretrain_verdict.py trains (trained once into verdict_dir):
    the largest logit difference on the book's batch, the top-1 agreement along float32's
    greedy continuation (teacher forcing) in one forward (many rows: widened weights)
    and in KV-cache decoder steps (a row: quantised activations), and the trained
    model's validation loss on The Verdict per dtype."""
    from gptc.data import create_dataloader_v1
    from gptc.training import calc_loss_loader
    warmup, min_samples, budget = repeats
    idx = np.array([HELLO_IDS], dtype=np.int64)
    rounds = max(3, min_samples)
    out = {"new_tokens": new_tokens, "rounds": rounds}

    def interleaved(label, run):
        samples = {dtype: [] for dtype in INT8_DTYPES}
        for r in range(rounds):
            for dtype in samples if label == "decode" else ("float32", "int8"):
                gmodel.to_dtype(dtype)
                progress(f"  {label}, {dtype} weights, round {r + 1} of {rounds}")
                run(warmup=True)
                samples[dtype].append(timed(run))
        gmodel.to_dtype("float32")
        return {dtype: summary(v) for dtype, v in samples.items() if v}

    def generate(warmup=False):
        return gptc.generate(gmodel, idx, max_new_tokens=4 if warmup else new_tokens,
                             context_size=1024)
    out["decode"] = interleaved("decode", generate)
    prefill_ids = long_ids(256)

    def prefill(warmup=False):
        with gptc.no_grad():
            return gmodel(prefill_ids)
    out["prefill"] = interleaved("prefill (1, 256)", prefill)

    gmodel.to_dtype("int8")
    weights = {id(m.weight): m.weight for m in gmodel.modules() if type(m) is gptc.nn.Linear}
    out["int8_bytes"] = sum(w.int8.nbytes for w in weights.values())
    out["bytes_per_weight"] = out["int8_bytes"] / sum(w.size for w in weights.values())
    gmodel.to_dtype("float32")
    out["bandwidth_gbs"] = bandwidth_gbs
    out["int8_bound_tokens_per_s"] = bandwidth_gbs * 1e9 / out["int8_bytes"]

    def quality(model, prompt):
        """Max |logit diff| on the book's batch and top-1 agreements, int8 against float32."""
        batch = np.array(BOOK_BATCH, dtype=np.int64)
        n = len(prompt)
        with gptc.no_grad():
            f32 = model(batch)
            text = gptc.generate(model, np.array([prompt]), max_new_tokens=new_tokens,
                                 context_size=n + new_tokens)
            ref = model(text[:, :-1]).argmax(-1)[0, n - 1:]
            model.to_dtype("int8")
            diff = float(np.abs(model(batch) - f32).max())
            forward = model(text[:, :-1]).argmax(-1)[0, n - 1:]
        decoder = gptc._C.Decoder(**model._one_call_arguments(), batch=1, capacity=text.shape[1])
        steps = [int(decoder.prefill(np.ascontiguousarray(text[:, :n])).argmax())]
        steps += [int(decoder.step(np.ascontiguousarray(text[:, t])).argmax())
                  for t in range(n, text.shape[1] - 1)]
        model.to_dtype("float32")
        return {"max_abs_logit_diff": diff, "top1_forward": float((forward == ref).mean()),
                "top1_decoder": float((np.array(steps) == ref).mean())}
    progress("  quality, seed-123 model")
    out["seed123"] = quality(gmodel, HELLO_IDS)

    weights_file = os.path.join(verdict_dir, "model.safetensors")
    if not os.path.isfile(weights_file):
        progress(f"  training on The Verdict for {verdict_epochs} epochs into {verdict_dir} "
                 "(once: later runs load it)")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
        subprocess.run([sys.executable, os.path.join(REPO_ROOT, "examples", "pretrain_verdict.py"),
                        "--text", verdict_text, "--epochs", str(verdict_epochs),
                        "--out", verdict_dir], env=env, check=True, stdout=sys.stderr)
    trained = gptc.GPTModel(dict(gptc.GPT_CONFIG_124M, context_length=256))
    trained.load_state_dict(gptc.load(weights_file))
    trained.eval()
    progress("  quality, trained model")
    out["trained"] = quality(trained, VERDICT_PROMPT)
    with open(verdict_text, encoding="utf-8") as f:
        text = f.read()
    val_loader = create_dataloader_v1(text[int(0.9 * len(text)):], batch_size=2, max_length=256,
                                      stride=256, drop_last=False, shuffle=False,
                                      tokenizer=gptc.get_tokenizer())
    out["val_loss"] = {}
    for dtype in INT8_DTYPES:
        trained.to_dtype(dtype)
        with gptc.no_grad():
            out["val_loss"][dtype] = calc_loss_loader(val_loader, trained)
    out["verdict_dir"], out["verdict_epochs"] = verdict_dir, verdict_epochs
    del trained
    return out


# ---------------------------------------------------------------- the cases, by number

Table = collections.namedtuple("Table", "title headers rows notes", defaults=((),))
Table.__doc__ = "One printed table: a title, column headers, rows and notes printed under it."


class Run:
    """What the cases of one run share: the arguments, the repeats, the results so far
    (by case key) and the inputs several cases use, each built when first asked for."""

    def __init__(self, args, header):
        self.args, self.header = args, header
        self.reps = REPEATS["quick" if args.quick else "full"]
        self.threads, self.new_tokens = args.threads, args.new_tokens
        self.results = {}

    @functools.cached_property
    def models(self):
        """(gptc model, PyTorch model): GPT-2 124M with seed 123, eval mode."""
        progress("building GPT-2 124M (seed 123) in gptc, loading it into PyTorch")
        return build_models()[:2]

    @functools.cached_property
    def onnx(self):
        """The ONNX Runtime session of the PyTorch model, or None without onnxruntime."""
        return onnx_session(self.models[1], self.threads)

    @functools.cached_property
    def peak(self):
        """Case 11's measurement: GFLOP/s by kernel set and thread count."""
        return case_fma_peak(self.threads, self.reps["fma_iterations"])

    @functools.cached_property
    def bandwidth(self):
        """Case 7's measurement: the streaming-read bandwidth and the decode bound."""
        weight_bytes = (decode_bytes(self.models[0]) if "models" in self.__dict__
                        else DECODE_BYTES_124M)
        return case_bandwidth(self.threads, self.reps["bandwidth"], weight_bytes)


FORWARD_INPUTS = {  # case: (repeats key, token ids (built after numpy's import), label)
    1: ("fwd_2x4", lambda: np.array(BOOK_BATCH, dtype=np.int64), "(2, 4) book batch"),
    2: ("fwd_4x64", lambda: long_ids(64, batch=4), "(4, 64)"),
    3: ("fwd_1x1024", lambda: long_ids(1024), "(1, 1024)"),
}


def report_forward(run, number):
    reps_key, make_ids, label = FORWARD_INPUTS[number]
    gmodel, tmodel = run.models
    onnx = run.onnx
    r = case_forward(gmodel, tmodel, make_ids(), run.reps[reps_key], label, onnx)
    onnx_name = f"ONNX Runtime {onnx.version}" if onnx else "ONNX Runtime"
    row = [f"{number}. forward {label}", fmt_time(r["gptc"]), fmt_time(r["torch"]),
           f"{r['ratio']:.2f}", fmt_time(r["onnx"]) if onnx else "",
           f"{r['ratio_onnx']:.2f}" if onnx else "",
           f"{r['max_abs_logit_diff']:.1e}"
           + (f" / {r['max_abs_logit_diff_onnx']:.1e}" if onnx else "")]
    return r, [Table("GPT-2 124M forward, eval mode, all logits (float32)",
                     ["case", "gptc", "PyTorch", "ratio", onnx_name, "ratio",
                      "max |logit diff| (PyTorch / ONNX)"], [row],
                     ["ratio = other time / gptc time; ONNX Runtime runs the book's model "
                      "exported with torch.onnx.export (CPUExecutionProvider)"])]


def report_generate(run):
    gen = case_generate(*run.models, run.new_tokens, run.reps["generate"])
    n = run.new_tokens
    if gen["identical_ids"]:
        note = (f"both produce identical ids ({len(gen['gptc_ids'])} tokens; first new: "
                f"{gen['gptc_ids'][4:10]})")
    else:
        pairs = zip(gen["gptc_ids"], gen["torch_ids"])
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        note = (f"WARNING: gptc and PyTorch generated different ids (first difference at "
                f"position {first})")
    return gen, [Table(f'4. Greedy generation with a KV cache: "Hello, I am" + {n} tokens '
                       "(gptc.generate; PyTorch: the book's model with a KV cache, bench.py)",
                       ["", "gptc", "PyTorch", "ratio"],
                       [["tokens/s", fmt_rate(gen["gptc"], n, "tok/s"),
                         fmt_rate(gen["torch"], n, "tok/s"), f"{gen['ratio']:.2f}"],
                        ["total time", fmt_time(gen["gptc"]), fmt_time(gen["torch"]), ""]],
                       [note])]


def report_matmul(run):
    mm = case_matmul(run.reps["matmul"])
    isa = gptc._C.isa()
    top = run.peak[isa][run.threads]
    notes = ["GFLOP/s: median (range, n samples); the ratios are time ratios (other / gptc, "
             "> 1: gptc faster); 'of peak': of case 11's "
             f"{isa} FMA peak on {run.threads} threads ({top:.1f} GFLOP/s)"]
    worst = max(r["max_abs_diff_vs_numpy"] for r in mm)
    if worst > 1e-3:
        notes.append(f"WARNING: gptc._C.linear differs from NumPy by up to {worst:.2e}")
    return mm, [Table(f"5. Matmul GFLOP/s, x (M x K) · W.T, W stored (N x K); gptc kernel: "
                      f"{isa}; NumPy BLAS: {run.header['numpy_blas']}",
                      ["shape", "layer", "gptc", "of peak", "NumPy", "of peak", "PyTorch",
                       "NumPy/gptc", "PyTorch/gptc"],
                      [[r["shape"], r["layer"], fmt_rate(r["gptc"], r["gflop"], "", 1),
                        f"{r['gptc_gflops'] / top:.1%}",
                        fmt_rate(r["numpy"], r["gflop"], "", 1),
                        f"{r['numpy_gflops'] / top:.1%}",
                        fmt_rate(r["torch"], r["gflop"], "", 1),
                        f"{r['ratio_numpy']:.2f}", f"{r['ratio_torch']:.2f}"] for r in mm],
                      notes)]


def report_memory(run):
    mem = case_memory(run.threads)
    rows = []
    for impl, name in (("gptc", "gptc"), ("torch", "PyTorch")):
        r = mem[impl]
        rows.append([name, f"{r['param_bytes'] / MIB:.1f}",
                     f"{r['rss_after_import_kib'] / 1024:.1f}",
                     f"{r['rss_model_kib'] / 1024:.1f}",
                     f"{r['peak_forward_kib'] / 1024:.1f}",
                     f"{r['forward_delta_mib']:.1f}",
                     f"params + {r['extra_over_params_mib']:.1f}"])
    note = (f"the logits alone are {mem['gptc']['logits_bytes'] / MIB:.1f} MiB; peak = VmHWM "
            "after resetting it via /proc/self/clear_refs" if mem["gptc"]["hwm_reset"]
            else "peak = ru_maxrss (includes model building)")
    return mem, [Table("6. Peak resident memory, (1, 1024) forward, fresh subprocess each "
                       "(MiB)", ["", "params", "RSS after import", "RSS with model",
                                 "peak in forward", "forward adds", "peak over import RSS"],
                       rows, [note])]


def report_bandwidth(run):
    bw = run.bandwidth
    weight_bytes = bw["weight_bytes_per_token"]
    rows = [[f"read_bandwidth ({bw['isa']}), {k}", f"{v:.1f} GB/s"]
            for k, v in bw["readers"].items()]
    rows.append(["weights read per decoded token (float32; all but the embedding "
                 "tables)", f"{weight_bytes / MIB:.1f} MiB"])
    rows.append(["decode bound (bandwidth / weight bytes)",
                 f"{bw['decode_bound_tokens_per_s']:.1f} tok/s"])
    # a forward of a few tokens reads the same weights once, all its rows together
    floor = weight_bytes / (bw["bandwidth_gbs"] * 1e9)
    bw["weight_streaming_floor_s"] = floor
    rows.append(["weight-streaming floor of a few-token forward (weight bytes / "
                 "bandwidth)", f"{floor * 1e3:.1f} ms"])
    fwd = run.results.get(CASES[1].key)
    if fwd is not None:
        rows.append(["gptc forward (2, 4) (case 1)",
                     f"{fwd['gptc']['median'] * 1e3:.1f} ms = "
                     f"{fwd['gptc']['median'] / floor:.2f} x the floor"])
    gen = run.results.get(CASES[4].key)
    if gen is not None:
        for impl, name in (("gptc", "gptc"), ("torch", "PyTorch")):
            tps = gen[f"{impl}_tokens_per_s"]
            rows.append([f"{name} generation with a KV cache (case 4)",
                         f"{tps:.1f} tok/s = {tps / bw['decode_bound_tokens_per_s']:.1%} "
                         "of the bound"])
    return bw, [Table(f"7. Streaming-read bandwidth ({bw['array_mib']:.0f} MiB float32 array, "
                      f"L3 {bw['l3_mib']:.0f} MiB, best of {run.reps['bandwidth']}) and "
                      "decode bound", ["", "value"], rows)]


def report_train_step(run):
    tr = case_train_step(run.reps["train_step"])
    ntok = tr["tokens_per_step"]
    return tr, [Table(f"8. One training step, GPT-2 124M (context_length {TRAIN_BATCH[1]}), "
                      f"batch {TRAIN_BATCH}, train mode (dropout 0.1): forward, cross-entropy, "
                      "backward, AdamW (lr 0.0004, weight decay 0.1)",
                      ["", "gptc", "PyTorch", "ratio"],
                      [["time per step", fmt_time(tr["gptc"]), fmt_time(tr["torch"]),
                        f"{tr['ratio']:.2f}"],
                       ["tokens/s", fmt_rate(tr["gptc"], ntok, "tok/s"),
                        fmt_rate(tr["torch"], ntok, "tok/s"), ""],
                       ["loss, warm-up step", f"{tr['gptc_losses'][0]:.4f}",
                        f"{tr['torch_losses'][0]:.4f}", ""]],
                      ["the same weights and random token ids; the dropout masks differ, so "
                       "the losses agree only roughly"])]


def report_bfloat16(run):
    bf = case_bfloat16(run.models[0], run.new_tokens, run.reps["generate"])
    n = run.new_tokens
    rows = [["decode tokens/s (gptc.generate)", fmt_rate(bf["float32"], n, "tok/s"),
             fmt_rate(bf["bfloat16"], n, "tok/s"), f"{bf['speedup']:.2f}"],
            ["max |logit diff| against float32, book's batch", "",
             f"{bf['max_abs_logit_diff']:.2g}", ""],
            [f"top-1 agreement with float32 over {n} tokens", "",
             f"{bf['top1_agreement']:.0%}", ""],
            ["identical greedy ids", "", "yes" if bf["identical_ids"] else "no", ""]]
    bw = run.results.get(CASES[7].key)
    if bw is not None:
        bound16 = 2 * bw["decode_bound_tokens_per_s"]
        rows.append(["fraction of the bfloat16 decode bound (half the bytes of case 7)",
                     "", f"{bf['bfloat16_tokens_per_s'] / bound16:.1%}", ""])
    return bf, [Table(f'9. bfloat16 weights (model.to_dtype("bfloat16")), float32 '
                      f'accumulation: "Hello, I am" + {n} tokens',
                      ["", "float32", "bfloat16", "speed-up"], rows)]


def report_int8(run):
    args = run.args
    q8 = case_int8(run.models[0], run.new_tokens, run.reps["generate"],
                   run.bandwidth["bandwidth_gbs"], args.verdict_model, args.verdict_text,
                   args.verdict_epochs)
    n, dec, pre = run.new_tokens, q8["decode"], q8["prefill"]
    rate = {dtype: n / dec[dtype]["median"] for dtype in INT8_DTYPES}
    speedup = rate["int8"] / rate["bfloat16"]
    of_bound = rate["int8"] / q8["int8_bound_tokens_per_s"]
    prefill_ratio = pre["int8"]["median"] / pre["float32"]["median"]
    seed, tr, loss = q8["seed123"], q8["trained"], q8["val_loss"]
    loss_gap = loss["int8"] - loss["float32"]

    def verdict(ok):
        return "met" if ok else "MISSED"
    rows = [[f"decode tokens/s, {dtype} (gptc.generate, {n} tokens)",
             fmt_rate(dec[dtype], n, "tok/s"), "", ""] for dtype in INT8_DTYPES]
    rows += [["decode int8 / bfloat16", f"{speedup:.2f}", ">= 1.6", verdict(speedup >= 1.6)],
             [f"int8 bound: {q8['bandwidth_gbs']:.1f} GB/s (case 7) / "
              f"{q8['int8_bytes'] / MIB:.1f} MiB per token",
              f"{q8['int8_bound_tokens_per_s']:.1f} tok/s; int8 decode at {of_bound:.1%}",
              ">= 60%", verdict(of_bound >= 0.6)],
             ["prefill (1, 256), float32", fmt_time(pre["float32"]), "", ""],
             ["prefill (1, 256), int8", fmt_time(pre["int8"]), "", ""],
             ["prefill int8 / float32 time", f"{prefill_ratio:.2f}", "<= 1.1",
              verdict(prefill_ratio <= 1.1)],
             ["int8 copies, bytes per weight", f"{q8['bytes_per_weight']:.4f}", "<= 1.07",
              verdict(q8["bytes_per_weight"] <= 1.07)]]
    for name, qual, top1_target in (("seed-123 model", seed, None),
                                    (f"trained model ({q8['verdict_epochs']} epochs)", tr,
                                     0.98)):
        rows.append([f"{name}: max |logit diff| vs float32, book's batch",
                     f"{qual['max_abs_logit_diff']:.3g}", "", ""])
        for key, how in (("top1_forward", "one forward"), ("top1_decoder", "decoder steps")):
            ok = "" if top1_target is None else verdict(qual[key] >= top1_target)
            rows.append([f"{name}: top-1 agreement, {n} positions, {how}",
                         f"{qual[key]:.0%}", "" if top1_target is None else ">= 98%", ok])
    rows.append(["trained model: validation loss on The Verdict, float32 / bfloat16 / int8",
                 " / ".join(f"{loss[d]:.4f}" for d in INT8_DTYPES), "", ""])
    rows.append(["validation loss int8 - float32", f"{loss_gap:+.4f}", "|.| <= 0.02",
                 verdict(abs(loss_gap) <= 0.02)])
    return q8, [Table(f'10. int8 weights (model.to_dtype("int8")): blocks of 32, bfloat16 '
                      f'scales; decode and prefill rounds interleaved ({q8["rounds"]} rounds); '
                      f'kernel set {gptc._C.isa()}', ["", "value", "target", ""], rows,
                      ["one forward = many rows (int8 widened to float32 while packing); "
                       "decoder steps = one row (activations quantised to int8, integer dot "
                       "products)"])]


def report_forward_split(run):
    split = case_forward_split(run.models[0], run.reps["fwd_4x64"])
    isa = gptc._C.isa()
    top = run.peak[isa][run.threads]
    rows = [[f"{r['case']}. forward {r['label']}", fmt_time(r["forward"]),
             f"{r['products_s'] * 1e3:.1f} ms", f"{r['products_share']:.0%}",
             f"{(r['forward']['median'] - r['products_s']) * 1e3:.1f} ms",
             f"{r['products_gflops']:.1f} ({r['products_gflops'] / top:.1%})"]
            for r in split]
    return split, [Table(f"12. Where the forward's time goes (gptc, kernel set {isa})",
                         ["case", "forward", "its matrix products alone", "share",
                          "the rest", "products: GFLOP/s (of peak)"], rows,
                         [f"peak: case 11's {isa} FMA loop on {run.threads} threads "
                          f"({top:.1f} GFLOP/s); products timed alone may find their weights "
                          "in cache, so with few rows their share is a lower bound"])]


def report_fma_peak(run):
    peak = run.peak
    counts = next(iter(peak.values()))
    return peak, [Table("11. Arithmetic peak: each kernel set's register-only FMA loop, "
                        f"GFLOP/s (best of {PEAK_TRIES})",
                        ["kernel set"] + [f"{n} thread{'s' if n > 1 else ''}" for n in counts],
                        [[isa] + [f"{g:.1f}" for g in by_threads.values()]
                         for isa, by_threads in peak.items()])]


# A case: its key in the JSON results, and the function that measures it and returns
# (results, tables).
Case = collections.namedtuple("Case", "key report")

CASES = {
    1: Case("1_forward_2x4", lambda run: report_forward(run, 1)),
    2: Case("2_forward_4x64", lambda run: report_forward(run, 2)),
    3: Case("3_forward_1x1024", lambda run: report_forward(run, 3)),
    4: Case("4_generation", report_generate),
    5: Case("5_matmul", report_matmul),
    6: Case("6_memory", report_memory),
    7: Case("7_bandwidth", report_bandwidth),
    8: Case("8_train_step", report_train_step),
    9: Case("9_bfloat16", report_bfloat16),
    10: Case("10_int8", report_int8),
    11: Case("11_fma_peak", report_fma_peak),
    12: Case("12_forward_split", report_forward_split),
}


# ---------------------------------------------------------------- main

def main():
    global np, torch, gptc
    args = parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)   # NumPy's BLAS, before import
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    wall_start = time.perf_counter()
    import numpy as np
    import torch
    import gptc
    gptc.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    assert gptc.GPT_CONFIG_124M == CFG_124M, "gptc's GPT_CONFIG_124M changed"

    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "threads": args.threads,
        "gptc_threads": gptc.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
        "gptc_isa": gptc._C.isa(),
        "gptc": f"{gptc.__version__} ({os.path.dirname(gptc.__file__)})",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numpy_blas": numpy_blas(),
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "mode": "quick" if args.quick else "full",
        "command": command_line(),
    }
    print("gptc benchmark")
    for key, value in header.items():
        print(f"  {key:15s} {value}")
    print("  ratio = PyTorch time / gptc time (> 1: gptc is faster); "
          "times: median (min-max, n)", flush=True)

    run = Run(args, header)
    # Consecutive tables of one kind (the forward cases) print as one, once the next
    # kind of table, or the end, comes.
    pending = None
    for number in args.cases:
        progress(f"case {number}")
        result, tables = CASES[number].report(run)
        run.results[CASES[number].key] = result
        for table in tables:
            if pending is not None and pending._replace(rows=[]) == table._replace(rows=[]):
                pending.rows.extend(table.rows)
                continue
            if pending is not None:
                print_table(*pending)
            pending = table
    print_table(*pending)

    total = time.perf_counter() - wall_start
    results = {"header": header, "cases": run.results, "total_seconds": total}
    print(f"\ntotal run time: {total:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
