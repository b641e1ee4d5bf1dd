"""Forward hooks and forward pre-hooks behave as PyTorch's: the same calls, with
the same arguments, in the same order, and the same effect when they replace
an input or an output. Each test registers the same hooks on the book's PyTorch
model (tests/torch_reference.py) and on a gptc model holding the same weights."""
import gc

import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import (BOOK_BATCH, backward_both, compare_grads, gptc_grads, is_intel_cpu,
                      report, small_config, torch_grads, torch_state_to_gptc)
from gptc.nn import hooks as hooks_module

IDS = np.array([[3, 14, 159, 265, 358], [979, 323, 846, 264, 338]])


def _pair(torch, ref, cfg=None, seed=0):
    cfg = cfg or small_config()
    torch.manual_seed(seed)
    t_model = ref.GPTModel(cfg).eval()
    g_model = torch_state_to_gptc(t_model, gptc.GPTModel(cfg)).eval()
    return t_model, g_model


def _torch_logits(torch, t_model, ids=IDS):
    with torch.no_grad():
        return t_model(torch.from_numpy(ids)).numpy()


def _record_block_outputs(model, to_numpy):
    """A forward hook on every TransformerBlock that appends (name, output)."""
    seen = []
    handles = []
    for name, module in model.named_modules():
        if type(module).__name__ == "TransformerBlock":
            handles.append(module.register_forward_hook(
                lambda mod, args, out, name=name: seen.append((name, to_numpy(out)))))
    return seen, handles


@pytest.mark.parametrize("grad_mode", ["no_grad", "recording"])
def test_hook_on_every_block_sees_what_torch_sees(torch, ref, grad_mode):
    """A hook on each TransformerBlock is called once per block, in order, with
    the block's output; names and outputs match PyTorch's within 1e-5, and the
    logits are unchanged by a hook that returns None."""
    t_model, g_model = _pair(torch, ref)
    expected_logits = _torch_logits(torch, t_model)
    theirs, _ = _record_block_outputs(t_model, lambda t: t.detach().numpy().copy())
    _torch_logits(torch, t_model)
    ours, _ = _record_block_outputs(g_model, lambda t: np.array(t))
    if grad_mode == "no_grad":
        with gptc.no_grad():
            logits = g_model(IDS)
    else:
        logits = g_model(IDS)
        assert isinstance(logits, gptc.Tensor)
    assert [name for name, _ in ours] == [name for name, _ in theirs] == [
        "trf_blocks.0", "trf_blocks.1", "trf_blocks.2"]
    for (name, got), (_, expected) in zip(ours, theirs):
        report(f"{name} output ({grad_mode})", got, expected, rtol=1e-5, atol=1e-5)
    report(f"logits with recording hooks ({grad_mode})", np.asarray(logits), expected_logits,
           rtol=1e-5, atol=1e-5)


def test_forward_hook_that_returns_a_new_output_changes_the_logits_as_in_torch(torch, ref):
    """Halving the output of block 1 and replacing the final norm's output by
    its negation change gptc's logits exactly as they change PyTorch's."""
    t_model, g_model = _pair(torch, ref, seed=1)
    before = _torch_logits(torch, t_model)
    for model in (t_model, g_model):
        model.trf_blocks[1].register_forward_hook(lambda mod, args, out: out * 0.5)
        model.final_norm.register_forward_hook(lambda mod, args, out: -out)
    expected = _torch_logits(torch, t_model)
    assert not np.allclose(expected, before, atol=1e-3)
    with gptc.no_grad():
        got = g_model(IDS)
    report("logits with replaced outputs", got, expected, rtol=1e-5, atol=1e-5)


def test_pre_hook_replaces_the_input_with_a_tuple_or_a_single_value(torch, ref):
    """A pre-hook returning one array replaces the single argument (PyTorch
    wraps it in a tuple); one returning a tuple replaces the arguments."""
    t_model, g_model = _pair(torch, ref, seed=2)
    for model in (t_model, g_model):
        model.trf_blocks[0].register_forward_pre_hook(lambda mod, args: args[0] * 2.0)
        model.trf_blocks[2].register_forward_pre_hook(lambda mod, args: (args[0] - 1.0,))
    expected = _torch_logits(torch, t_model)
    with gptc.no_grad():
        got = g_model(IDS)
    report("logits with replaced inputs", got, expected, rtol=1e-5, atol=1e-5)

    received = []
    g_model.out_head.register_forward_pre_hook(lambda mod, args: received.append(args))
    with gptc.no_grad():
        g_model(IDS)
    assert len(received) == 1 and isinstance(received[0], tuple) and len(received[0]) == 1


def test_removed_hooks_stop_firing_and_the_one_call_forward_returns(torch, ref):
    """handle.remove() unregisters the hook (a second remove does nothing, as in
    PyTorch); with no hook left the model runs its one-call C forward again."""
    _, g_model = _pair(torch, ref)
    assert g_model._one_call_arguments() is not None
    calls = []
    handle = g_model.trf_blocks[0].att.register_forward_hook(
        lambda mod, args, out: calls.append(1))
    assert g_model._one_call_arguments() is None
    with gptc.no_grad():
        g_model(IDS)
    assert calls == [1]
    handle.remove()
    handle.remove()
    with gptc.no_grad():
        g_model(IDS)
    assert calls == [1]
    assert g_model._one_call_arguments() is not None

    with g_model.final_norm.register_forward_pre_hook(lambda mod, args: calls.append(2)):
        with gptc.no_grad():
            g_model(IDS)
    with gptc.no_grad():
        g_model(IDS)
    assert calls == [1, 2]
    assert not any(m in hooks_module._hooked_modules for m in g_model.modules())


def test_hooks_fire_in_registration_order_and_prepend_puts_one_first(torch):
    """The same registrations on torch.nn.Linear and gptc.nn.Linear give the same
    order of calls, pre-hooks before forward hooks, prepend first."""

    def register(layer, log):
        layer.register_forward_pre_hook(lambda m, a: log.append("pre A"))
        layer.register_forward_pre_hook(lambda m, a: log.append("pre B"))
        layer.register_forward_pre_hook(lambda m, a: log.append("pre first"), prepend=True)
        layer.register_forward_hook(lambda m, a, o: log.append("post A"))
        layer.register_forward_hook(lambda m, a, o: log.append("post first"), prepend=True)
        layer.register_forward_hook(lambda m, a, o: log.append("post B"))

    theirs, ours = [], []
    t_layer, g_layer = torch.nn.Linear(3, 2), nn.Linear(3, 2)
    register(t_layer, theirs)
    register(g_layer, ours)
    t_layer(torch.ones(1, 3))
    g_layer(np.ones((1, 3)))
    print("torch:", theirs, "\ngptc: ", ours)
    assert ours == theirs == ["pre first", "pre A", "pre B", "post first", "post A", "post B"]


def test_a_later_hook_sees_the_output_an_earlier_hook_returned(torch):
    def register(layer, log):
        layer.register_forward_hook(lambda m, a, o: o + 1)
        layer.register_forward_hook(lambda m, a, o: log.append(np.array(o.tolist())))
        layer.register_forward_hook(lambda m, a, o: o * 10)

    theirs, ours = [], []
    t_layer, g_layer = torch.nn.Linear(3, 2), nn.Linear(3, 2)
    g_layer.load_state_dict(t_layer.state_dict())
    register(t_layer, theirs)
    register(g_layer, ours)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with torch.no_grad():
        expected = t_layer(torch.from_numpy(x)).numpy()
    with gptc.no_grad():
        got = g_layer(x)
    report("hook chain: seen", ours[0], theirs[0], rtol=1e-6, atol=1e-6)
    report("hook chain: returned", got, expected, rtol=1e-6, atol=1e-6)


class _Scaled:
    """forward(x, scale=1.0) written for torch.nn and for gptc.nn."""

    @staticmethod
    def make(nn_mod):
        class Scaled(nn_mod.Module):
            def forward(self, x, scale=1.0):
                return x * scale
        return Scaled()


def test_hooks_with_kwargs_receive_and_replace_keyword_arguments(torch):
    """with_kwargs=True: the pre-hook gets (module, args, kwargs) and returns
    (args, kwargs); the forward hook gets (module, args, kwargs, output)."""

    def register(layer, log):
        layer.register_forward_pre_hook(
            lambda m, a, kw: (a, {**kw, "scale": kw["scale"] * 3}), with_kwargs=True)
        layer.register_forward_hook(
            lambda m, a, kw, o: log.append((len(a), dict(kw), float(o.sum()))), with_kwargs=True)

    theirs, ours = [], []
    t_layer, g_layer = _Scaled.make(torch.nn), _Scaled.make(nn)
    register(t_layer, theirs)
    register(g_layer, ours)
    t_layer(torch.ones(2), scale=2.0)
    g_layer(np.ones(2), scale=2.0)
    assert ours == theirs == [(1, {"scale": 6.0}, 12.0)]


def test_pre_hook_with_kwargs_must_return_args_and_kwargs(torch):
    g_layer = _Scaled.make(nn)
    g_layer.register_forward_pre_hook(lambda m, a, kw: a, with_kwargs=True)
    t_layer = _Scaled.make(torch.nn)
    t_layer.register_forward_pre_hook(lambda m, a, kw: a, with_kwargs=True)
    with pytest.raises(RuntimeError, match="new_args, new_kwargs"):
        t_layer(torch.ones(2))
    with pytest.raises(RuntimeError, match="new_args, new_kwargs"):
        g_layer(np.ones(2))


def test_always_call_hook_runs_when_forward_raises(torch):
    """A hook registered with always_call=True runs with output None when
    forward raises, and the error of forward propagates; other hooks do not run."""

    def register(layer, log):
        layer.register_forward_hook(lambda m, a, o: log.append(("plain", o)))
        layer.register_forward_hook(lambda m, a, o: log.append(("always", o)), always_call=True)

    theirs, ours = [], []
    t_layer, g_layer = torch.nn.Linear(3, 2), nn.Linear(3, 2)
    register(t_layer, theirs)
    register(g_layer, ours)
    with pytest.raises(RuntimeError):
        t_layer(torch.ones(1, 4))
    with pytest.raises(ValueError):
        g_layer(np.ones((1, 4), np.float32))
    assert ours == theirs == [("always", None)]


def test_hook_must_be_callable():
    relu = nn.ReLU()
    with pytest.raises(TypeError, match="hook must be callable, got int"):
        relu.register_forward_hook(3)
    with pytest.raises(TypeError, match="hook must be callable, got str"):
        relu.register_forward_pre_hook("print")
    assert relu not in hooks_module._hooked_modules and not relu._forward_hooks


def test_a_model_dropped_with_its_hooks_is_forgotten():
    """Hooks that were never removed do not outlive their module, so models
    without hooks go back to skipping the walk over their modules."""
    before = len(hooks_module._hooked_modules)
    layer = nn.Linear(2, 2)
    layer.register_forward_hook(lambda m, a, o: None)
    assert len(hooks_module._hooked_modules) == before + 1
    del layer
    gc.collect()
    assert len(hooks_module._hooked_modules) == before


def test_gradients_flow_through_a_replaced_output_as_in_torch(torch, ref):
    """While gradients are recorded, a hook's replacement output is part of the
    graph: the gradients of the parameters equal PyTorch's."""
    t_model, g_model = _pair(torch, ref, seed=3)
    for model in (t_model, g_model):
        model.trf_blocks[0].register_forward_hook(lambda mod, args, out: out * 3.0)
    targets = np.random.default_rng(0).integers(0, 1000, IDS.shape)
    t_loss = torch.nn.functional.cross_entropy(t_model(torch.from_numpy(IDS)).flatten(0, 1),
                                               torch.from_numpy(targets).flatten())
    t_loss.backward()
    g_loss = gptc.nn.functional.cross_entropy(g_model(IDS).flatten(0, 1), targets.flatten())
    g_loss.backward()
    report("loss", g_loss.item(), t_loss.item(), rtol=1e-5)
    t_params = dict(t_model.named_parameters())
    for name in ("trf_blocks.0.att.W_query.weight", "trf_blocks.0.ff.layers.0.weight",
                 "tok_emb.weight"):
        report(f"grad {name}", np.asarray(dict(g_model.named_parameters())[name].grad),
               t_params[name].grad.numpy(), rtol=1e-4, atol=1e-6)


def test_hook_on_the_model_itself_fires_once_per_call(torch, ref):
    _, g_model = _pair(torch, ref)
    outputs = []
    g_model.register_forward_hook(lambda mod, args, out: outputs.append(out.shape))
    with gptc.no_grad():
        g_model(IDS)
    assert outputs == [(2, 5, 1000)]


def test_generate_runs_the_modules_while_hooks_are_registered(torch, ref):
    """gptc.generate uses its KV cache only without hooks; with a hook on the
    last block it calls the model at every step (the hook fires once per new
    token) and produces the same tokens."""
    _, g_model = _pair(torch, ref, seed=4)
    prompt = np.array(BOOK_BATCH) % 1000
    plain = gptc.generate(g_model, prompt, max_new_tokens=5, context_size=16)
    steps = []
    handle = g_model.trf_blocks[-1].register_forward_hook(
        lambda mod, args, out: steps.append(out.shape))
    hooked = gptc.generate(g_model, prompt, max_new_tokens=5, context_size=16)
    handle.remove()
    assert steps == [(2, n, 72) for n in range(4, 9)]
    np.testing.assert_array_equal(hooked, plain)


def test_hooks_inside_the_attention_fire_without_gradients_too(torch, ref):
    """MultiHeadAttention skips its one-call C path while one of its projections
    has a hook: a hook on W_query sees torch's queries, and replacing the
    output of out_proj changes the logits as it does in torch."""
    t_model, g_model = _pair(torch, ref, seed=5)
    theirs, ours = [], []
    t_model.trf_blocks[1].att.W_query.register_forward_hook(
        lambda m, a, out: theirs.append(out.numpy().copy()))
    g_model.trf_blocks[1].att.W_query.register_forward_hook(
        lambda m, a, out: ours.append(np.array(out)))
    for model in (t_model, g_model):
        model.trf_blocks[2].att.out_proj.register_forward_hook(lambda m, a, out: out * 0.0)
    expected = _torch_logits(torch, t_model)
    with gptc.no_grad():
        got = g_model(IDS)
    assert len(ours) == len(theirs) == 1
    report("queries of block 1", ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    report("logits with block 2's attention silenced", got, expected, rtol=1e-5, atol=1e-5)


# -- hooks on the attention dropout ----------------------------------------------------------
# The C kernels apply MultiHeadAttention's dropout themselves; with a hook on att.dropout the
# attention computes the (batch, heads, T, T) weights, calls the module and multiplies the
# values by what it returns, as the book's forward does.

def _forward(model, grad_mode, ids=IDS):
    if grad_mode == "no_grad":
        with gptc.no_grad():
            return model(ids)
    out = model(ids)
    assert isinstance(out, gptc.Tensor)
    return out


def _check_weight_rows(name, weights):
    """Rows of causal softmax weights: non-negative, zero above the diagonal, summing to 1."""
    above_diagonal = np.triu(np.ones(weights.shape[-2:], bool), k=1)
    assert np.all(weights[..., above_diagonal] == 0) and np.all(weights >= 0), name
    report(f"{name}: row sums", weights.sum(axis=-1), np.ones(weights.shape[:-1]), atol=1e-6)


@pytest.mark.parametrize("grad_mode", ["no_grad", "recording"])
def test_a_hook_on_the_attention_dropout_fires_once_per_block_with_the_weights(torch, ref,
                                                                              grad_mode):
    """In eval mode the hook on each block's att.dropout is called once per forward, block
    after block, with the (batch, heads, T, T) softmax weights as its input (a Tensor
    while recording): torch's within 1e-6, rows of probabilities that are zero above the
    diagonal, and returned unchanged. The logits are torch's."""
    t_model, g_model = _pair(torch, ref, seed=9)
    theirs, ours = [], []
    for model, seen, as_array in ((t_model, theirs, lambda t: t.detach().numpy().copy()),
                                  (g_model, ours, lambda t: np.array(t))):
        for i, block in enumerate(model.trf_blocks):
            block.att.dropout.register_forward_hook(
                lambda m, args, out, i=i, seen=seen, as_array=as_array: seen.append(
                    (i, type(args[0]), as_array(args[0]), as_array(out))))
    expected = _torch_logits(torch, t_model)
    logits = _forward(g_model, grad_mode)
    assert [i for i, *_ in ours] == [i for i, *_ in theirs] == [0, 1, 2]
    for (i, kind, weights, out), (_, _, t_weights, _) in zip(ours, theirs):
        assert weights.shape == (2, 6, 5, 5)
        assert kind is (gptc.Tensor if grad_mode == "recording" else np.ndarray)
        report(f"block {i} dropout input ({grad_mode})", weights, t_weights, atol=1e-6)
        _check_weight_rows(f"block {i} dropout input", weights)
        np.testing.assert_array_equal(out, weights)
    report(f"logits with hooked attention dropouts ({grad_mode})", np.asarray(logits), expected,
           rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(is_intel_cpu(), reason="on Intel CPUs PyTorch's dropout draws its masks "
                    "through MKL, which gptc does not reproduce")
def test_train_mode_with_a_hook_on_the_attention_dropout_matches_torch(torch, ref):
    """Training mode, a hook that returns None on every att.dropout: the Dropout module
    drops the (batch, heads, T, T) weights with the draws torch's nn.Dropout makes, so
    after the same seed a MultiHeadAttention gives the book's output and gradients, and
    the whole model its logits (under no_grad too), loss and gradients; the fused kernel
    without the hook gives the same logits."""
    cfg = small_config(drop_rate=0.2, qkv_bias=True)
    t_model, g_model = _pair(torch, ref, cfg, seed=10)
    t_model.train()
    g_model.train()
    def hook_every_dropout(model):
        return [block.att.dropout.register_forward_hook(lambda m, args, out: None)
                for block in model.trf_blocks]
    hook_every_dropout(t_model)
    handles = hook_every_dropout(g_model)
    rng = np.random.default_rng(11)
    inputs = rng.integers(0, cfg["vocab_size"], (2, 9))
    targets = np.roll(inputs, -1, axis=1)

    # one MultiHeadAttention, input gradient included
    t_att, g_att = t_model.trf_blocks[0].att, g_model.trf_blocks[0].att
    x = rng.standard_normal((2, 9, cfg["emb_dim"])).astype(np.float32)
    tx, gx = torch.tensor(x, requires_grad=True), gptc.tensor(x, requires_grad=True)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    torch.manual_seed(12)
    gptc.manual_seed(12)
    t_out, g_out = t_att(tx), g_att(gx)
    report("MultiHeadAttention output, train mode, hooked dropout", np.asarray(g_out),
           t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    t_out.backward(torch.from_numpy(dout))
    g_out.backward(dout)
    report("MultiHeadAttention input gradient", np.asarray(gx.grad), tx.grad.numpy(),
           rtol=1e-4, atol=1e-6)
    got, theirs = gptc_grads(g_att), torch_grads(t_att)
    assert sorted(got) == sorted(theirs)
    for name in theirs:
        # (W_key.bias's gradient is 0 in exact arithmetic: both hold rounding noise)
        report(f"MultiHeadAttention grad {name}", got[name], theirs[name], rtol=1e-4, atol=1e-6)
    t_model.zero_grad()
    g_model.zero_grad()

    torch.manual_seed(13)
    with torch.no_grad():
        expected = t_model(torch.from_numpy(inputs)).numpy()
    gptc.manual_seed(13)
    hooked = _forward(g_model, "no_grad", inputs)
    report("train-mode logits, hooked dropout (no_grad)", hooked, expected, rtol=1e-5,
           atol=1e-5)
    for handle in handles:
        handle.remove()
    gptc.manual_seed(13)
    report("train-mode logits, hooked dropout vs fused kernel", hooked,
           _forward(g_model, "no_grad", inputs), rtol=1e-5, atol=1e-6)
    hook_every_dropout(g_model)

    torch.manual_seed(14)
    gptc.manual_seed(14)
    backward_both(torch, t_model, g_model, inputs, targets, "train-mode loss, hooked dropout")
    compare_grads("GPTModel, train mode, hooked dropout", gptc_grads(g_model),
                  torch_grads(t_model))


def _uniform_causal(shape):
    """Weights that spread each token's attention evenly over itself and the tokens
    before it: row i holds 1 / (i + 1) up to the diagonal."""
    T = shape[-1]
    rows = np.tril(np.ones((T, T), np.float32)) / np.arange(1, T + 1, dtype=np.float32)[:, None]
    return np.broadcast_to(rows, shape)


# name -> (the torch hook's replacement, gptc's) of the dropout's output
REPLACEMENTS = {
    "zeros": (lambda torch, out: out * 0.0, lambda out: out * 0.0),
    "uniform causal": (lambda torch, out: torch.from_numpy(_uniform_causal(out.shape).copy()),
                       lambda out: _uniform_causal(out.shape)),
    "squared": (lambda torch, out: out * out, lambda out: out * out),
}


@pytest.mark.parametrize("grad_mode", ["no_grad", "recording"])
@pytest.mark.parametrize("replacement", sorted(REPLACEMENTS))
def test_a_hook_that_replaces_the_attention_weights_acts_as_in_torch(torch, ref, replacement,
                                                                    grad_mode):
    """A forward hook on block 1's att.dropout whose output replaces the weights (zeros,
    a uniform causal matrix as a plain array, the weights squared) changes gptc's logits
    as it changes torch's, with and without gradients; while recording, the loss and the
    gradient of every parameter (none for block 1's query and key projections when the
    replacement does not depend on them) are torch's."""
    t_model, g_model = _pair(torch, ref, seed=15)
    before = _torch_logits(torch, t_model)
    t_replace, g_replace = REPLACEMENTS[replacement]
    t_model.trf_blocks[1].att.dropout.register_forward_hook(
        lambda m, args, out: t_replace(torch, out))
    g_model.trf_blocks[1].att.dropout.register_forward_hook(lambda m, args, out: g_replace(out))
    expected = _torch_logits(torch, t_model)
    assert not np.allclose(expected, before, atol=1e-3)
    logits = _forward(g_model, grad_mode)
    report(f"logits, weights replaced by {replacement} ({grad_mode})", np.asarray(logits),
           expected, rtol=1e-5, atol=1e-5)
    if grad_mode == "recording":
        targets = np.random.default_rng(16).integers(0, 1000, IDS.shape)
        backward_both(torch, t_model, g_model, IDS, targets, f"loss, {replacement} weights")
        got, theirs = gptc_grads(g_model), torch_grads(t_model)
        compare_grads(f"gradients, weights replaced by {replacement}", got, theirs)
        frozen = replacement == "uniform causal"
        assert ("trf_blocks.1.att.W_query.weight" not in got) == frozen


@pytest.mark.parametrize("grad_mode", ["no_grad", "recording"])
def test_a_pre_hook_on_the_attention_dropout_replaces_its_input_as_in_torch(torch, ref,
                                                                           grad_mode):
    """A pre-hook on att.dropout sees the weights and may replace them (here: halved)."""
    t_model, g_model = _pair(torch, ref, seed=17)
    seen = []
    for model in (t_model, g_model):
        model.trf_blocks[2].att.dropout.register_forward_pre_hook(
            lambda m, args: args[0] * 0.5)
    g_model.trf_blocks[2].att.dropout.register_forward_pre_hook(
        lambda m, args: seen.append(np.array(args[0])))
    expected = _torch_logits(torch, t_model)
    logits = _forward(g_model, grad_mode)
    assert len(seen) == 1
    _check_weight_rows("pre-hook input", seen[0] * 2.0)
    report(f"logits, weights halved by a pre-hook ({grad_mode})", np.asarray(logits), expected,
           rtol=1e-5, atol=1e-5)


def test_removing_the_attention_dropout_hook_returns_to_the_fused_kernel(torch, ref,
                                                                        monkeypatch):
    """With the hook, each forward computes the weights once per block through
    F.attention_weights; once it is removed, no forward does (recording or not), the
    model runs its one-call C forward again, and the logits are the same."""
    _, g_model = _pair(torch, ref, seed=18)
    calls = []
    original = nn.functional.attention_weights

    def counted(*args):
        calls.append(1)
        return original(*args)
    monkeypatch.setattr(nn.functional, "attention_weights", counted)
    handles = [block.att.dropout.register_forward_hook(lambda m, args, out: None)
               for block in g_model.trf_blocks]
    hooked = [np.asarray(_forward(g_model, mode)) for mode in ("no_grad", "recording")]
    assert len(calls) == 2 * len(g_model.trf_blocks)
    for handle in handles:
        handle.remove()
    assert g_model._one_call_arguments() is not None
    fused = [np.asarray(_forward(g_model, mode)) for mode in ("no_grad", "recording")]
    assert len(calls) == 2 * len(g_model.trf_blocks)
    for mode, got, expected in zip(("no_grad", "recording"), hooked, fused):
        report(f"logits with and without the dropout hook ({mode})", got, expected,
               rtol=1e-5, atol=1e-6)
