"""gptc.nn.Module, Parameter, Sequential and ModuleList behave like torch.nn's."""
from collections import OrderedDict

import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import example_deep_network, small_config


# -- helpers -------------------------------------------------------------------

class TwoLayer(nn.Module):
    """A user model written the PyTorch way: layers, a raw Parameter, a container."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.scale = nn.Parameter(np.full(4, 2.0, np.float32))
        self.head = nn.Sequential(nn.Linear(4, 2), nn.GELU())
        self.note = "not registered"

    def forward(self, x):
        return self.head(self.act(self.fc1(x)) * self.scale)


def _snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snapshot):
    state = model.state_dict()
    assert list(state) == list(snapshot)
    for key, value in snapshot.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


# -- registration and traversal ----------------------------------------------------

def test_assignment_registers_parameters_and_modules():
    """Parameters and Modules assigned in __init__ are registered, plain attributes are not."""
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "fc1.weight", "fc1.bias", "head.0.weight", "head.0.bias"]
    assert list(m._modules) == ["fc1", "act", "head"]
    assert m.note == "not registered" and "note" not in m.state_dict()
    assert m.scale is m._parameters["scale"]
    assert sum(p.numel() for p in m.parameters()) == 4 + 12 + 4 + 8 + 2


def test_named_parameters_match_torch_for_same_structure(torch):
    """A torch.nn model of the same structure names its parameters identically, in the same order."""

    class TorchTwoLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(3, 4)
            self.act = torch.nn.ReLU()
            self.scale = torch.nn.Parameter(torch.full((4,), 2.0))
            self.head = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.GELU())

    ours, theirs = TwoLayer(), TorchTwoLayer()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]


def test_gpt_model_names_match_the_books_model(ref):
    """GPTModel's named_parameters, named_modules and state_dict keys equal the book's, in order."""
    cfg = small_config(n_layers=2, qkv_bias=True)
    ours, theirs = gptc.GPTModel(cfg), ref.GPTModel(cfg)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (n1, p1), (_, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p1.shape == tuple(p2.shape), n1
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_tied_parameter_is_yielded_once_like_torch(ref):
    """A parameter shared by two modules appears once in parameters(), under its first name,
    but under both names in state_dict() (as in PyTorch)."""
    cfg = small_config(n_layers=1)
    ours = gptc.GPTModel(cfg, tie_weights=True)
    theirs = ref.GPTModel(cfg)
    theirs.out_head.weight = theirs.tok_emb.weight
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert "out_head.weight" not in dict(ours.named_parameters())
    params = list(ours.parameters())
    assert len(params) == len({id(p) for p in params})
    assert sum(p is ours.tok_emb.weight for p in params) == 1
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_children_modules_and_named_modules():
    """children() are the direct submodules; modules()/named_modules() walk the tree, self first."""
    m = TwoLayer()
    assert list(m.children()) == [m.fc1, m.act, m.head]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "head"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "act", "head", "head.0", "head.1"]
    mods = list(m.modules())
    assert mods[0] is m and mods[-1] is m.head[1] and len(mods) == 6


def test_shared_submodule_is_visited_once():
    """A module registered under two names is listed once by modules() and parameters()."""
    m = nn.Module()
    shared = nn.Linear(2, 2)
    m.a = shared
    m.b = shared
    assert [n for n, _ in m.named_modules()] == ["", "a"]
    assert len(list(m.parameters())) == 2
    assert list(m.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_mask_is_a_buffer_in_state_dict_not_a_parameter():
    """The attention mask is in state_dict() and buffers(), never in parameters()."""
    mha = nn.MultiHeadAttention(4, 4, 5, 0.0, 2)
    assert "mask" in mha.state_dict()
    assert "mask" not in dict(mha.named_parameters())
    assert all(p is not mha.mask for p in mha.parameters())
    assert [n for n, _ in mha.named_buffers()] == ["mask"]
    model = gptc.GPTModel(small_config(n_layers=2))
    names = {n for n, _ in model.named_parameters()}
    assert "trf_blocks.0.att.mask" in model.state_dict() and "trf_blocks.1.att.mask" in model.state_dict()
    assert not any(n.endswith("mask") for n in names)


def test_reassigning_a_child_keeps_its_position(torch):
    """Replacing a registered child or parameter keeps its place in the order, as in PyTorch
    (state_dict order and, for Sequential, the forward order depend on it)."""

    class Ours(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.ReLU()
            self.b = nn.GELU()

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.ReLU()
            self.b = torch.nn.GELU()

    ours, theirs = Ours(), Theirs()
    ours.a, theirs.a = nn.GELU(), torch.nn.GELU()
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    lin, tlin = nn.Linear(3, 3), torch.nn.Linear(3, 3)
    lin.weight = nn.Parameter(np.zeros((3, 3), np.float32))
    tlin.weight = torch.nn.Parameter(torch.zeros(3, 3))
    assert list(lin.state_dict()) == list(tlin.state_dict()) == ["weight", "bias"]


# -- user models ---------------------------------------------------------------

def test_user_subclass_forward():
    """A user Module composing Linear/ReLU/GELU/Sequential and a raw Parameter computes its forward."""
    m = TwoLayer()
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    h = np.maximum(x @ m.fc1.weight.T + m.fc1.bias, 0) * m.scale
    h = h @ m.head[0].weight.T + m.head[0].bias
    expected = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
    np.testing.assert_allclose(m(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_shortcut", [False, True])
def test_example_deep_neural_network_matches_torch(torch, ref, use_shortcut):
    """The chapter's five-layer ExampleDeepNeuralNetwork (ModuleList of Sequential(Linear, GELU)),
    built after the same manual_seed, has the book's weights, names and output."""
    sizes = [3, 3, 3, 3, 3, 1]
    torch.manual_seed(123)
    theirs = example_deep_network(torch.nn, ref.GELU, sizes, use_shortcut)
    gptc.manual_seed(123)
    ours = example_deep_network(nn, nn.GELU, sizes, use_shortcut)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert len(ours.layers) == 5 and isinstance(ours.layers[4], nn.Sequential)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_array_equal(p, q.detach().numpy(), err_msg=name)
    sample = np.array([[1.0, 0.0, -1.0]], np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(sample)).numpy()
    out = ours(sample)
    assert out.shape == (1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_example_deep_neural_network_shortcut_changes_the_output():
    """With use_shortcut the residual additions are taken (shapes match for layers 1-4)."""
    sizes = [3, 3, 3, 3, 3, 1]
    gptc.manual_seed(123)
    plain = example_deep_network(nn, nn.GELU, sizes, False)
    gptc.manual_seed(123)
    short = example_deep_network(nn, nn.GELU, sizes, True)
    x = np.array([[1.0, 0.0, -1.0]], np.float32)
    manual = x
    for layer in short.layers:
        out = layer(manual)
        manual = manual + out if out.shape == manual.shape else out
    np.testing.assert_allclose(short(x), manual, rtol=1e-6)
    assert not np.allclose(short(x), plain(x))


# -- containers ----------------------------------------------------------------

def test_sequential_indexing_len_iteration():
    """Sequential: int and negative indexing, slices give a Sequential, len and iteration."""
    a, b, c = nn.Linear(2, 2), nn.ReLU(), nn.GELU()
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and list(s) == [a, b, c]
    assert s[0] is a and s[-1] is c and s[-3] is a
    tail = s[1:]
    assert type(tail) is nn.Sequential and list(tail) == [b, c]
    assert list(s[::-1]) == [c, b, a]
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(s(x), c(b(a(x))))
    np.testing.assert_array_equal(tail(x), c(b(x)))


@pytest.mark.parametrize("idx", [3, -4, 100])
def test_sequential_index_out_of_range(idx):
    """An out-of-range index raises IndexError naming the index and the length."""
    s = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU())
    with pytest.raises(IndexError, match=rf"{idx}.*length 3"):
        s[idx]
    with pytest.raises(IndexError, match=rf"{idx}.*length 3"):
        s[idx] = nn.ReLU()


def test_sequential_non_integer_index():
    """A string index raises TypeError."""
    with pytest.raises(TypeError, match="indices must be integers"):
        nn.Sequential(nn.ReLU())["0"]


def test_sequential_setitem_replaces_in_place(torch):
    """s[i] = module replaces the i-th module: same position, same forward order, as in PyTorch."""
    s = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.GELU())
    new = nn.Linear(2, 2)
    s[0] = new
    assert s[0] is new and type(s[1]) is nn.ReLU and type(s[2]) is nn.GELU
    assert list(s.state_dict()) == ["0.weight", "0.bias"]
    t = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.GELU())
    t[0] = torch.nn.Linear(2, 2)
    assert [n for n, _ in s.named_children()] == [n for n, _ in t.named_children()]
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(s(x), s[2](s[1](new(x))))


def test_sequential_setitem_last_and_negative():
    """s[-1] = module replaces the last module, and a non-Module raises TypeError."""
    s = nn.Sequential(nn.ReLU(), nn.ReLU())
    g = nn.GELU()
    s[-1] = g
    assert s[1] is g and len(s) == 2
    with pytest.raises(TypeError, match="str is not a gptc.nn.Module"):
        s[0] = "relu"


def test_sequential_from_ordered_dict():
    """Sequential(OrderedDict) names the children by the dict's keys."""
    s = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert [n for n, _ in s.named_children()] == ["fc", "act"]
    assert list(s.state_dict()) == ["fc.weight", "fc.bias"]


def test_modulelist_append_extend_index():
    """ModuleList: append/extend register the modules (and return the list), indexing works."""
    a, b, c = nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)
    ml = nn.ModuleList([a])
    assert ml.append(b) is ml
    assert ml.extend([c]) is ml
    assert len(ml) == 3 and ml[0] is a and ml[-1] is c and list(ml) == [a, b, c]
    assert type(ml[1:]) is nn.ModuleList and list(ml[1:]) == [b, c]
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(IndexError, match="3.*length 3"):
        ml[3]
    with pytest.raises(TypeError, match="int is not a gptc.nn.Module"):
        ml.append(3)


def test_modulelist_is_not_callable():
    """Calling a ModuleList raises TypeError (it is a container, not a layer)."""
    with pytest.raises(TypeError, match="container"):
        nn.ModuleList([nn.ReLU()])(np.zeros(2, np.float32))


# -- training mode -------------------------------------------------------------

def test_train_eval_recursive_and_return_self():
    """train()/eval() set .training on every module of the tree and return the module."""
    model = gptc.GPTModel(small_config(n_layers=2))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    assert model.train(False) is model and not model.trf_blocks[1].att.dropout.training
    with pytest.raises(TypeError, match="bool"):
        model.train(1)


def test_dropout_obeys_training_flag_through_parent():
    """A Dropout inside a model drops in train mode and is the identity after model.eval()."""
    model = nn.Sequential(nn.Dropout(0.5))
    x = np.ones((50, 40), np.float32)
    out = model.train()(x)
    assert (out == 0).any() and set(np.unique(out)) <= {0.0, 2.0}
    np.testing.assert_array_equal(model.eval()(x), x)


def test_gpt_model_eval_is_deterministic_train_is_not():
    """GPTModel in eval mode returns the same logits twice; in train mode dropout changes them."""
    model = gptc.GPTModel(small_config(drop_rate=0.5, n_layers=1))
    ids = np.array([[1, 2, 3, 4]])
    model.eval()
    np.testing.assert_array_equal(model(ids), model(ids))
    model.train()
    assert not np.array_equal(model(ids), model(ids))


# -- Parameter -------------------------------------------------------------------

def test_parameter_is_float32_contiguous_ndarray():
    """Parameter is an ndarray subclass, float32 and C-contiguous whatever it is built from."""
    for data in ([[1, 2], [3, 4]], np.arange(6.0).reshape(2, 3),
                 np.ones((4, 6), np.float32)[:, ::2], np.arange(4, dtype=np.int64)):
        p = nn.Parameter(data)
        assert isinstance(p, np.ndarray) and isinstance(p, nn.Parameter)
        assert p.dtype == np.float32 and p.flags.c_contiguous
        np.testing.assert_array_equal(p, np.asarray(data, np.float32))
    assert nn.Parameter(np.zeros((3, 5))).numel() == 15
    assert nn.Parameter(np.zeros(0)).numel() == 0


def test_parameter_shares_memory_with_float32_array():
    """Parameter(existing contiguous float32 array) shares its memory; float64 input is copied."""
    a = np.zeros(4, np.float32)
    p = nn.Parameter(a)
    a[1] = 5.0
    assert p[1] == 5.0 and np.shares_memory(a, p)
    q = nn.Parameter(p)
    assert np.shares_memory(p, q)
    d = np.zeros(4)
    assert not np.shares_memory(d, nn.Parameter(d))


def test_parameter_from_read_only_array_is_writable():
    """A Parameter built from a read-only array is a writable copy."""
    a = np.zeros(3, np.float32)
    a.flags.writeable = False
    p = nn.Parameter(a)
    assert p.flags.writeable
    p[0] = 1.0
    assert a[0] == 0.0


def test_parameter_arithmetic_returns_plain_arrays():
    """Arithmetic, ufuncs, reductions and indexing on a Parameter give plain ndarrays."""
    p = nn.Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    for r in (p * 2, p + p, -p, p @ p.T, np.exp(p), p.sum(axis=0), p[0], p[:, 1:], p[None]):
        assert type(r) is np.ndarray, type(r)
    assert not isinstance(p.sum(), nn.Parameter)
    m = nn.Module()
    m.doubled = p * 2                 # a value, not a parameter
    assert list(m.named_parameters()) == []


def test_views_and_conversions_cannot_become_parameters():
    """NumPy hands p.T, p.astype(float64), p.reshape back as Parameter objects, but
    registering a non-contiguous or non-float32 one raises TypeError (as PyTorch
    refuses `lin.weight = lin.weight.T`), so every registered parameter stays
    a C-contiguous float32 array the C code can read; a contiguous float32 copy is fine."""
    lin = nn.Linear(3, 3)
    weight = lin.weight
    for bad in (weight.T, weight.astype(np.float64), weight[:, ::2]):
        with pytest.raises(TypeError, match=r"'weight' must be a C-contiguous float32 array"):
            lin.weight = nn.Parameter.__new__(nn.Parameter, 0) if False else bad.view(nn.Parameter)
        assert lin.weight is weight
    with pytest.raises(TypeError, match="C-contiguous float32"):
        lin.register_parameter("extra", weight.T.view(nn.Parameter))
    lin.weight = nn.Parameter(weight.T)      # an explicit Parameter(...) converts: accepted
    np.testing.assert_array_equal(lin.weight, weight.T)
    assert lin.weight.flags.c_contiguous and lin.weight.dtype == np.float32


def test_assigning_plain_array_to_parameter_name_raises():
    """Assigning an ndarray to a registered parameter name raises TypeError; None is allowed."""
    lin = nn.Linear(2, 2)
    weight = lin.weight
    with pytest.raises(TypeError, match=r"ndarray.*'weight'.*Parameter"):
        lin.weight = np.zeros((2, 2), np.float32)
    assert lin.weight is weight
    lin.bias = None
    assert lin.bias is None and list(lin.state_dict()) == ["weight"]


def test_assigning_plain_value_to_child_module_name_raises():
    """Assigning a non-Module to a registered child module name raises TypeError."""
    m = TwoLayer()
    with pytest.raises(TypeError, match=r"'fc1'"):
        m.fc1 = 3


def test_assigning_before_super_init_raises_helpfully():
    """Assigning a Parameter or Module before super().__init__() raises AttributeError that
    says to call super().__init__() first."""

    class ForgotParam(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2, np.float32))
            super().__init__()

    class ForgotModule(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
            super().__init__()

    with pytest.raises(AttributeError, match=r"'w'.*super\(\).__init__\(\).*ForgotParam"):
        ForgotParam()
    with pytest.raises(AttributeError, match=r"'fc'.*super\(\).__init__\(\).*ForgotModule"):
        ForgotModule()


def test_missing_attribute_message():
    """Reading an unknown attribute raises AttributeError naming the class and the attribute."""
    with pytest.raises(AttributeError, match=r"'Linear'.*'wieght'"):
        nn.Linear(2, 2).wieght


def test_module_without_forward_raises():
    """Calling a Module subclass that defines no forward raises TypeError."""

    class NoForward(nn.Module):
        pass

    with pytest.raises(TypeError, match="NoForward does not define forward"):
        NoForward()(1)


# -- state_dict / load_state_dict ---------------------------------------------------

def test_state_dict_shares_memory_both_ways():
    """state_dict() values share memory with the parameters: writes go both ways."""
    lin = nn.Linear(3, 2)
    sd = lin.state_dict()
    assert type(sd["weight"]) is np.ndarray
    sd["weight"][0, 0] = 42.0
    assert lin.weight[0, 0] == 42.0
    lin.bias[1] = -7.0
    assert sd["bias"][1] == -7.0
    model = gptc.GPTModel(small_config(n_layers=1)).eval()
    ids = np.array([[1, 2, 3]])
    before = model(ids)
    model.state_dict()["out_head.weight"][:] = 0.0
    np.testing.assert_array_equal(model(ids), np.zeros_like(before))


def test_load_state_dict_numpy_float64_and_lists():
    """load_state_dict accepts numpy arrays of any real dtype, converts them to float32 and
    copies in place (the Parameter objects keep their identity)."""
    lin = nn.Linear(3, 2)
    weight = lin.weight
    result = lin.load_state_dict({"weight": np.arange(6.0).reshape(2, 3),
                                  "bias": np.array([1, 2], np.int64)})
    assert lin.weight is weight and lin.weight.dtype == np.float32
    np.testing.assert_array_equal(lin.weight, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(lin.bias, [1.0, 2.0])
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_load_state_dict_from_torch_model(torch, ref):
    """A torch state dict (tensors) loads directly, and the model then equals the torch one."""
    cfg = small_config(n_layers=1)
    torch.manual_seed(0)
    theirs = ref.GPTModel(cfg).eval()
    ours = gptc.GPTModel(cfg).eval()
    ours.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=key)
    theirs_lin, ours_lin = torch.nn.Linear(4, 3).double(), nn.Linear(4, 3)
    ours_lin.load_state_dict(theirs_lin.state_dict())      # float64 tensors are converted
    np.testing.assert_array_equal(ours_lin.weight,
                                  theirs_lin.weight.detach().numpy().astype(np.float32))


def test_load_state_dict_missing_key_raises_and_changes_nothing():
    """A missing key raises KeyError naming it, and no parameter is modified."""
    model = gptc.GPTModel(small_config(n_layers=2))
    snap = _snapshot(model)
    sd = {k: v + 1 for k, v in snap.items() if not k.endswith("mask")}
    sd.update({k: v for k, v in snap.items() if k.endswith("mask")})
    del sd["trf_blocks.1.ff.layers.2.bias"]
    with pytest.raises(KeyError, match=r"missing keys: 'trf_blocks.1.ff.layers.2.bias'"):
        model.load_state_dict(sd)
    _assert_unchanged(model, snap)


def test_load_state_dict_unexpected_key_raises_and_changes_nothing():
    """An unexpected key raises KeyError naming it, and no parameter is modified."""
    lin = nn.Linear(3, 2)
    snap = _snapshot(lin)
    with pytest.raises(KeyError, match=r"unexpected keys: 'weights'"):
        lin.load_state_dict({"weight": np.ones((2, 3)), "bias": np.ones(2),
                             "weights": np.ones((2, 3))})
    _assert_unchanged(lin, snap)


def test_load_state_dict_non_strict_returns_keys():
    """strict=False loads what matches and returns (missing_keys, unexpected_keys)."""
    lin = nn.Linear(3, 2)
    bias = lin.bias.copy()
    missing, unexpected = lin.load_state_dict({"weight": np.full((2, 3), 3.0), "extra": 1},
                                              strict=False)
    assert missing == ["bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(lin.weight, np.full((2, 3), 3.0))
    np.testing.assert_array_equal(lin.bias, bias)


def test_load_state_dict_shape_mismatch_raises_and_changes_nothing():
    """A shape mismatch on the LAST key raises ValueError naming the key and both shapes,
    and the keys before it (which were fine) were not written either."""
    model = gptc.GPTModel(small_config(n_layers=2))
    snap = _snapshot(model)
    sd = {k: (v if k.endswith("mask") else v + 1) for k, v in snap.items()}
    sd["out_head.weight"] = sd["out_head.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"'out_head.weight'.*\(1000, 71\).*\(1000, 72\)"):
        model.load_state_dict(sd)
    _assert_unchanged(model, snap)


def test_load_state_dict_bad_dtype_raises_and_changes_nothing():
    """A complex or string value raises TypeError naming the key; nothing is modified."""
    lin = nn.Linear(2, 2)
    snap = _snapshot(lin)
    with pytest.raises(TypeError, match=r"'bias'.*real numbers.*complex"):
        lin.load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(2, complex)})
    _assert_unchanged(lin, snap)
    with pytest.raises(TypeError, match="mapping"):
        lin.load_state_dict([("weight", np.ones((2, 2)))])


def test_load_state_dict_different_mask_raises():
    """Loading a mask that differs from the causal mask raises ValueError and changes nothing;
    the book's mask (any dtype) loads."""
    mha = nn.MultiHeadAttention(4, 4, 5, 0.0, 2)
    snap = _snapshot(mha)
    sd = {k: v + 1 for k, v in snap.items()}
    sd["mask"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match=r"'mask'.*different"):
        mha.load_state_dict(sd)
    _assert_unchanged(mha, snap)
    sd["mask"] = np.triu(np.ones((5, 5)), k=1)
    mha.load_state_dict(sd)
    np.testing.assert_array_equal(mha.W_query.weight, snap["W_query.weight"] + 1)
    np.testing.assert_array_equal(mha.mask, np.triu(np.ones((5, 5)), k=1))


def test_tied_model_load_state_dict():
    """A tied model refuses different values for tok_emb.weight and out_head.weight (ValueError,
    nothing modified) and loads equal values keeping the tie."""
    model = gptc.GPTModel(small_config(n_layers=1), tie_weights=True)
    snap = _snapshot(model)
    sd = {k: (v if k.endswith("mask") else v + 1) for k, v in snap.items()}
    sd["out_head.weight"] = sd["tok_emb.weight"] + 1
    with pytest.raises(ValueError, match=r"'out_head.weight'.*'tok_emb.weight'.*tied"):
        model.load_state_dict(sd)
    _assert_unchanged(model, snap)
    sd["out_head.weight"] = sd["tok_emb.weight"].copy()
    model.load_state_dict(sd)
    assert model.out_head.weight is model.tok_emb.weight
    np.testing.assert_array_equal(model.tok_emb.weight, snap["tok_emb.weight"] + 1)
    np.testing.assert_array_equal(model.trf_blocks[0].norm1.scale,
                                  snap["trf_blocks.0.norm1.scale"] + 1)


def test_untied_state_dict_round_trip():
    """state_dict() of one model loads into a fresh model of the same config, bit for bit."""
    cfg = small_config(n_layers=2, qkv_bias=True)
    a, b = gptc.GPTModel(cfg).eval(), gptc.GPTModel(cfg).eval()
    b.load_state_dict(a.state_dict())
    ids = np.array([[5, 6, 7]])
    np.testing.assert_array_equal(a(ids), b(ids))


# -- repr ------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda nn_: nn_.Linear(3, 4),
    lambda nn_: nn_.Linear(768, 50257, bias=False),
    lambda nn_: nn_.Embedding(50257, 768),
    lambda nn_: nn_.Dropout(0.1),
    lambda nn_: nn_.Dropout(),
    lambda nn_: nn_.Dropout(0.0),
    lambda nn_: nn_.ReLU(),
    lambda nn_: nn_.Sequential(nn_.Linear(2, 3), nn_.ReLU()),
    lambda nn_: nn_.ModuleList([nn_.ReLU(), nn_.Dropout(0.2)]),
    lambda nn_: nn_.Sequential(),
], ids=["linear", "linear-nobias", "embedding", "dropout", "dropout-default", "dropout-0.0",
        "relu", "sequential", "modulelist", "empty-sequential"])
def test_layer_repr_is_torchs(torch, make):
    """repr of each layer equals torch.nn's for the same arguments."""
    assert repr(make(nn)) == repr(make(torch.nn))


def test_dropout_repr_with_integer_p_is_torchs(torch):
    """Dropout(0) and Dropout(1) print p as torch does."""
    assert repr(nn.Dropout(0)) == repr(torch.nn.Dropout(0))
    assert repr(nn.Dropout(1)) == repr(torch.nn.Dropout(1))


def test_book_layer_norm_and_gelu_repr(ref):
    """The book's LayerNorm and GELU print as "LayerNorm()" and "GELU()", as in PyTorch."""
    assert repr(nn.LayerNorm(768)) == "LayerNorm()" == repr(ref.LayerNorm(768))
    assert repr(nn.GELU()) == "GELU()" == repr(ref.GELU())


def test_parameter_repr():
    """A Parameter prints as "Parameter containing:" and its values."""
    assert repr(nn.Parameter([1.0, 2.0])).startswith("Parameter containing:\narray([1., 2.]")
