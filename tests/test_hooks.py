"""Forward hooks and forward pre-hooks behave as PyTorch's: the same calls, with
the same arguments, in the same order, and the same effect when they replace
an input or an output. Each test registers the same hooks on the book's PyTorch
model (tests/torch_reference.py) and on a gptc model holding the same weights."""
import gc

import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import BOOK_BATCH, report, small_config, torch_state_to_gptc
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


def test_a_hook_on_the_attention_dropout_warns_that_it_cannot_fire():
    """gptc applies the attention dropout inside the C kernel: a hook on
    att.dropout is never called, and the forward says so instead of staying silent."""
    gptc.manual_seed(9)
    model = gptc.GPTModel(small_config()).eval()
    calls = []
    model.trf_blocks[0].att.dropout.register_forward_hook(lambda m, a, out: calls.append(1))
    with pytest.warns(UserWarning, match=r"hook on MultiHeadAttention\.dropout is not called.*"
                                         r"gptc\.attention_weights"):
        with gptc.no_grad():
            model(IDS)
    assert calls == []
