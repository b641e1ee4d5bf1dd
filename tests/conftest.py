"""Shared test set-up: PyTorch (the oracle) when installed, and comparison helpers."""
import os
import platform
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# The GPT-2 tokenizer files come with the package (gptc/gpt2_bpe); $GPTC_BPE_DIR,
# if set, still overrides them.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "The Verdict", the text chapter 5 trains on, kept in the repository.
VERDICT_PATH = os.path.join(REPO_ROOT, "data", "the-verdict.txt")

BOOK_BATCH = [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]   # "Every effort moves you", "Every day holds a"
HELLO_IDS = [15496, 11, 314, 716]                                    # "Hello, I am"


def small_config(**overrides):
    """An odd little GPT config: emb_dim 72 with 6 heads (head_dim 12), vocab 1000."""
    cfg = {"vocab_size": 1000, "context_length": 16, "emb_dim": 72, "n_heads": 6,
           "n_layers": 3, "drop_rate": 0.1, "qkv_bias": False}
    cfg.update(overrides)
    return cfg


def c_entry_points():
    """Every function and type of gptc._C and gptc._C._testing, and the methods of its
    types ("Decoder.step"): what test_bad_input.py and fuzz_c_api.py must cover."""
    from gptc import _C
    names = set()
    for prefix, module in (("", _C), ("_testing.", _C._testing)):
        for name in dir(module):
            value = getattr(module, name)
            if name.startswith("__") or not callable(value):
                continue
            names.add(prefix + name)
            if isinstance(value, type):
                names.update(f"{name}.{m}" for m in vars(value)
                             if not m.startswith("__") and callable(getattr(value, m)))
    return sorted(names)


def gpt2_124m_against_float32(dtype):
    """GPT-2 124M (seed 123) in float32, then after to_dtype(dtype), on the book's batch
    and teacher-forced along float32's greedy continuation of "Hello, I am" (100 new
    tokens). Returns (the model, now in dtype, the continuation, the largest logit
    difference on the book's batch, float32's and dtype's top-1 choices at each of the
    100 positions)."""
    import gptc
    gptc.manual_seed(123)
    model = gptc.GPTModel(gptc.GPT_CONFIG_124M).eval()
    with gptc.no_grad():
        f32 = model(np.array(BOOK_BATCH))
        text = gptc.generate(model, np.array([HELLO_IDS]), max_new_tokens=100, context_size=1024)
        ref_next = model(text[:, :-1]).argmax(-1)[0, len(HELLO_IDS) - 1:]
        model.to_dtype(dtype)
        low = model(np.array(BOOK_BATCH))
        low_next = model(text[:, :-1]).argmax(-1)[0, len(HELLO_IDS) - 1:]
    return model, text, float(np.abs(low - f32).max()), ref_next, low_next


def pytest_generate_tests(metafunc):
    """A test that takes `isa` runs once per kernel set this build and CPU support."""
    if "isa" in metafunc.fixturenames:
        from gptc import _C
        metafunc.parametrize("isa", _C.supported_isas(), indirect=True)


@pytest.fixture
def isa(request):
    """Every operation of the test runs on the kernel set named by the parameter
    (gptc._C.set_isa); the one in use before is restored afterwards."""
    from gptc import _C
    before = _C.isa()
    _C.set_isa(request.param)
    assert _C.isa() == request.param
    yield request.param
    _C.set_isa(before)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or skip the test: gptc itself never needs it."""
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def ref(torch):
    """The book's model in PyTorch (tests/torch_reference.py)."""
    import torch_reference
    return torch_reference


def report(name, got, expected, rtol=0.0, atol=0.0):
    """Assert got ~= expected elementwise and print the largest errors seen."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    err = np.abs(got - expected)
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float((err / np.maximum(np.abs(expected), 1e-30)).max()) if err.size else 0.0
    print(f"{name}: max abs error {max_abs:.3g}, max rel error {max_rel:.3g}")
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)
    return max_abs


def is_intel_cpu():
    """True on Intel CPUs, where PyTorch's bernoulli_ (and so dropout) takes its MKL
    path: a random stream gptc does not reproduce."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "GenuineIntel" in line
    except OSError:
        pass
    info = " ".join([platform.processor(), platform.uname().processor, platform.machine()])
    return "intel" in info.lower() or "genuineintel" in info.lower()


def torch_grads(module):
    """The gradients of a PyTorch module's parameters that have one, by name."""
    return {k: p.grad.numpy() for k, p in module.named_parameters() if p.grad is not None}


def gptc_grads(module):
    """The gradients of a gptc module's parameters that have one, by name."""
    return {k: np.asarray(p.grad) for k, p in module.named_parameters() if p.grad is not None}


def compare_grads(name, got, expected, tol=1e-4):
    """Per tensor, max |error| relative to that tensor's largest gradient; the same
    parameters must have gradients on both sides. The key bias gradient is zero in
    exact arithmetic (softmax ignores a shift shared by all keys), so both sides hold
    rounding noise: the scale used is never below 1e-4 of the largest gradient of the
    whole model."""
    assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
    floor = 1e-4 * max(float(np.abs(g).max()) for g in expected.values())
    worst = 0.0
    for key in expected:
        ref = expected[key]
        err = np.abs(got[key] - ref).max() / max(float(np.abs(ref).max()), floor)
        worst = max(worst, float(err))
        assert err <= tol, f"{name}: gradient of {key} off by {err:.3g} (relative)"
    print(f"{name}: max relative gradient error {worst:.3g}")
    return worst


def backward_both(torch, t_model, g_model, inputs, targets, name):
    """Cross-entropy of both models on the same batch, backpropagated; the losses
    must agree. Returns nothing: the gradients are in the parameters."""
    import gptc
    t_loss = torch.nn.functional.cross_entropy(
        t_model(torch.from_numpy(inputs)).flatten(0, 1), torch.from_numpy(targets).flatten())
    t_loss.backward()
    g_loss = gptc.nn.functional.cross_entropy(g_model(inputs).flatten(0, 1), targets.flatten())
    g_loss.backward()
    report(name, g_loss.item(), t_loss.item(), rtol=1e-5)


def torch_state_to_gptc(torch_module, gptc_module):
    """Copy a PyTorch module's weights into the gptc module through state_dict."""
    gptc_module.load_state_dict(torch_module.state_dict())
    return gptc_module


def example_deep_network(nn_mod, gelu_cls, layer_sizes, use_shortcut):
    """The chapter's ExampleDeepNeuralNetwork, written against either torch.nn or gptc.nn."""

    class ExampleDeepNeuralNetwork(nn_mod.Module):
        def __init__(self, layer_sizes, use_shortcut):
            super().__init__()
            self.use_shortcut = use_shortcut
            self.layers = nn_mod.ModuleList([
                nn_mod.Sequential(nn_mod.Linear(layer_sizes[i], layer_sizes[i + 1]), gelu_cls())
                for i in range(5)])

        def forward(self, x):
            for layer in self.layers:
                layer_output = layer(x)
                if self.use_shortcut and x.shape == layer_output.shape:
                    x = x + layer_output
                else:
                    x = layer_output
            return x

    return ExampleDeepNeuralNetwork(layer_sizes, use_shortcut)
