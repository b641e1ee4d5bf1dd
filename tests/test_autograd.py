"""Gradients: the chapter's shortcut experiment, every layer and the whole model
against PyTorch autograd, and training steps with AdamW against PyTorch's."""
import numpy as np
import pytest

import gptc
from gptc import nn
from conftest import (backward_both, compare_grads, example_deep_network, gptc_grads, report,
                      small_config, torch_grads, torch_state_to_gptc)


def gradient_means(model, x):
    """The chapter's print_gradients, returning the numbers instead of printing."""
    output = model(x)
    target = np.array([[0.0]])
    loss = nn.MSELoss()(output, target)
    loss.backward()
    means = []
    for name, param in model.named_parameters():
        if "weight" in name:
            mean = param.grad.abs().mean().item()
            print(f"{name} has gradient mean of {mean}")
            means.append(mean)
    return means


BOOK_WITHOUT = [0.00020173587836325169, 0.00012011159560643137, 0.0007152039906941354,
                0.0013988736318424344, 0.005049645435065031]
BOOK_WITH = [0.22169792652130127, 0.20694106817245483, 0.32896995544433594,
             0.2665732204914093, 1.3258540630340576]


@pytest.mark.parametrize("use_shortcut,book", [(False, BOOK_WITHOUT), (True, BOOK_WITH)])
def test_print_gradients_gives_the_books_numbers(use_shortcut, book):
    """manual_seed(123), layer sizes [3, 3, 3, 3, 3, 1], input [[1., 0., -1.]], target
    [[0.]]: each weight's mean absolute gradient equals the book's to 5 significant
    digits, with and without shortcut connections (section 4.4)."""
    gptc.manual_seed(123)
    model = example_deep_network(nn, nn.GELU, [3, 3, 3, 3, 3, 1], use_shortcut)
    means = gradient_means(model, np.array([[1.0, 0.0, -1.0]]))
    np.testing.assert_allclose(means, book, rtol=5e-5)


def test_no_grad_and_generation_return_plain_arrays():
    """Under no_grad (and in generate_text_simple) layers return NumPy arrays and
    nothing is recorded; with gradients on they return Tensors."""
    model = gptc.GPTModel(small_config(n_layers=1)).eval()
    ids = np.array([[1, 2, 3]])
    with gptc.no_grad():
        out = model(ids)
    assert type(out) is np.ndarray
    assert isinstance(model(ids), gptc.Tensor)
    assert gptc.is_grad_enabled()
    frozen = nn.Linear(2, 2)
    for p in frozen.parameters():
        p.requires_grad_(False)
    assert type(frozen(np.ones((1, 2)))) is np.ndarray


def test_recorded_forward_equals_plain_forward():
    """The recorded (module-by-module) forward computes the same logits as the
    one-call C forward used for inference."""
    model = gptc.GPTModel(small_config(n_layers=2)).eval()
    ids = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    with gptc.no_grad():
        plain = model(ids)
    report("recorded vs one-call forward", np.asarray(model(ids)), plain, atol=1e-5)


@pytest.mark.parametrize("cfg", [small_config(n_layers=1), small_config(qkv_bias=True),
                                 small_config(emb_dim=16, n_heads=1, vocab_size=7,
                                              context_length=5, n_layers=2)],
                         ids=["L1", "L3-bias", "tiny"])
def test_gpt_model_gradients_match_torch(torch, ref, cfg):
    """Cross-entropy loss of the whole GPTModel (eval mode: no dropout): every
    parameter gradient equals PyTorch autograd's (relative error <= 1e-4)."""
    torch.manual_seed(1)
    t_model = ref.GPTModel(cfg).eval()
    g_model = gptc.GPTModel(cfg).eval()
    torch_state_to_gptc(t_model, g_model)
    rng = np.random.default_rng(2)
    T = cfg["context_length"]
    inputs = rng.integers(0, cfg["vocab_size"], (2, T))
    targets = rng.integers(0, cfg["vocab_size"], (2, T))
    backward_both(torch, t_model, g_model, inputs, targets, "loss")
    compare_grads("GPTModel", gptc_grads(g_model), torch_grads(t_model))


def test_gpt2_124m_gradients_match_torch(torch, ref):
    """GPT-2 124M with a short sequence: all 163M parameter gradients agree with
    PyTorch's within 1e-4 relative (per tensor, to its largest value)."""
    cfg = dict(gptc.GPT_CONFIG_124M)
    torch.manual_seed(123)
    t_model = ref.GPTModel(cfg).eval()
    gptc.manual_seed(123)
    g_model = gptc.GPTModel(cfg).eval()      # same seed: the same weights
    inputs = np.array([[6109, 3626, 6100, 345]])
    targets = np.array([[3626, 6100, 345, 11]])
    backward_both(torch, t_model, g_model, inputs, targets, "124M loss")
    compare_grads("GPT-2 124M", gptc_grads(g_model), torch_grads(t_model))


def test_train_mode_gradients_with_dropout_match_torch(torch, ref):
    """Training mode with dropout: same masks (same seed), same gradients."""
    cfg = small_config(n_layers=2, drop_rate=0.2, qkv_bias=True)
    torch.manual_seed(3)
    t_model = ref.GPTModel(cfg)
    g_model = gptc.GPTModel(cfg)
    torch_state_to_gptc(t_model, g_model)
    inputs = np.random.default_rng(4).integers(0, cfg["vocab_size"], (2, 9))
    targets = np.roll(inputs, -1, axis=1)
    torch.manual_seed(5)
    gptc.manual_seed(5)
    backward_both(torch, t_model, g_model, inputs, targets, "train-mode loss")
    compare_grads("GPTModel train mode", gptc_grads(g_model), torch_grads(t_model))


def test_tensor_arithmetic_gradients_match_torch(torch):
    """Broadcast add/sub/mul/div, indexing, flatten, sum and mean of Tensors give
    PyTorch's gradients."""
    rng = np.random.default_rng(6)
    a0 = rng.normal(size=(2, 3, 4)).astype(np.float32)
    b0 = rng.normal(size=(3, 1)).astype(np.float32) + 3.0
    ta = torch.tensor(a0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    ga = gptc.tensor(a0, requires_grad=True)
    gb = gptc.tensor(b0, requires_grad=True)

    def f(a, b):
        x = (a + b) * a - b / (a * a + 1.0)
        y = x[1] - 2.0 * x[0]
        return y.flatten(0, 1).sum(0).mean() + x.mean()

    t_out, g_out = f(ta, tb), f(ga, gb)
    t_out.backward()
    g_out.backward()
    report("value", g_out.item(), t_out.item(), rtol=1e-5)
    report("d/da", ga.grad, ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    report("d/db", gb.grad, tb.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_training_steps_match_torch(torch, ref):
    """A small model trained for 8 AdamW steps (lr 0.0004, weight decay 0.1) on the
    same batches: the loss falls and equals PyTorch's at every step (1e-3 relative)."""
    cfg = small_config(n_layers=2, drop_rate=0.0)
    torch.manual_seed(8)
    t_model = ref.GPTModel(cfg)
    g_model = gptc.GPTModel(cfg)
    torch_state_to_gptc(t_model, g_model)
    t_opt = torch.optim.AdamW(t_model.parameters(), lr=0.0004, weight_decay=0.1)
    g_opt = gptc.optim.AdamW(g_model.parameters(), lr=0.0004, weight_decay=0.1)
    rng = np.random.default_rng(9)
    data = rng.integers(0, 50, (4, cfg["context_length"] + 1))   # a small, learnable vocabulary
    t_losses, g_losses = [], []
    for step in range(8):
        inputs, targets = data[:, :-1], data[:, 1:]
        t_opt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(
            t_model(torch.from_numpy(inputs)).flatten(0, 1),
            torch.from_numpy(targets).flatten())
        t_loss.backward()
        t_opt.step()
        g_opt.zero_grad()
        g_loss = nn.functional.cross_entropy(g_model(inputs).flatten(0, 1), targets.flatten())
        g_loss.backward()
        g_opt.step()
        t_losses.append(t_loss.item())
        g_losses.append(g_loss.item())
    print("torch:", np.round(t_losses, 5).tolist())
    print("gptc :", np.round(g_losses, 5).tolist())
    np.testing.assert_allclose(g_losses, t_losses, rtol=1e-3)
    assert g_losses[-1] < g_losses[0] - 0.1
    # The weights themselves followed PyTorch's AdamW trajectory (moments and
    # bias correction carried across steps, decoupled weight decay).
    t_state = t_model.state_dict()
    worst = max(float(np.abs(np.asarray(v) - t_state[k].numpy()).max())
                for k, v in g_model.state_dict().items())
    print(f"max weight difference after 8 steps: {worst:.3g}")
    assert worst < 1e-5


def test_adamw_matches_torch_on_one_parameter(torch):
    """AdamW on a single parameter with a fixed gradient sequence follows
    torch.optim.AdamW to float32 rounding, step after step (state is kept per
    parameter across steps; weight decay is decoupled)."""
    rng = np.random.default_rng(10)
    w0 = rng.normal(size=(4, 5)).astype(np.float32)
    t_w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    g_w = nn.Parameter(w0.copy())
    t_opt = torch.optim.AdamW([t_w], lr=0.01, weight_decay=0.1)
    g_opt = gptc.optim.AdamW([g_w], lr=0.01, weight_decay=0.1)
    for step in range(20):
        grad = rng.normal(size=(4, 5)).astype(np.float32)
        t_w.grad = torch.from_numpy(grad.copy())
        g_w.grad = gptc.tensor(grad)
        t_opt.step()
        g_opt.step()
        np.testing.assert_allclose(g_w, t_w.detach().numpy(), rtol=0, atol=2e-6,
                                   err_msg=f"step {step}")
    assert len(g_opt.state) == 1


def test_backward_frees_the_graph_and_refuses_a_second_pass():
    """After backward() the saved activations are released (a training step never
    holds two graphs), and a second backward() through the same graph raises
    RuntimeError instead of returning wrong gradients."""
    model = gptc.GPTModel(small_config(n_layers=1))
    ids = np.array([[1, 2, 3]])
    loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), np.array([2, 3, 4]))
    loss.backward()
    assert loss._parents == ()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
