"""The whole model under every kernel set this build and CPU support (the
`isa` fixture of conftest.py switches with gptc._C.set_isa): logits, greedy
generation with the KV cache (past the context window) and every parameter
gradient agree with the book's PyTorch model."""
import numpy as np

import gptc


def test_model_matches_torch_under_each_instruction_set(isa, torch, ref):
    """Logits, KV-cache greedy ids past the window and every gradient agree with
    the book's PyTorch model under each kernel set."""
    cfg = {"vocab_size": 500, "context_length": 16, "emb_dim": 96, "n_heads": 6,
           "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}
    gptc.manual_seed(7)
    model = gptc.GPTModel(cfg).eval()
    tmodel = ref.GPTModel(cfg).eval()
    tmodel.load_state_dict({k: torch.from_numpy(np.array(v))
                            for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab_size"], (3, 16))
    targets = rng.integers(0, cfg["vocab_size"], (3, 16))

    def rel(got, want):
        # relative to the tensor's scale, with a floor: the key biases' gradients
        # are zero in exact arithmetic (a constant added to every score of a row
        # does not change its softmax), so both sides hold only rounding noise
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-4))

    # the one-call forward: 48 rows take the packed matmul, attention the blocked kernel
    with gptc.no_grad():
        logits = model(ids)
    with torch.no_grad():
        tlogits = tmodel(torch.from_numpy(ids)).numpy()
    worst = rel(logits, tlogits)

    # greedy generation with the KV cache, sliding past context_length 16
    out = gptc.generate(model, ids[:1, :5], max_new_tokens=25, context_size=16)
    with torch.no_grad():
        tout = ref.generate_text_simple(tmodel, torch.from_numpy(ids[:1, :5]),
                                        max_new_tokens=25, context_size=16).numpy()
    if not np.array_equal(out, tout):
        worst = max(worst, 1.0)

    # every parameter gradient of a cross-entropy loss (training, module by module)
    model.train()
    tmodel.train()
    loss = gptc.nn.functional.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(ids)).flatten(0, 1),
                                              torch.from_numpy(targets).flatten())
    tloss.backward()
    worst = max(worst, rel(loss.item(), tloss.item()))
    tparams = dict(tmodel.named_parameters())
    for name, param in model.named_parameters():
        worst = max(worst, rel(param.grad, tparams[name].grad.numpy()))
    print(f"{isa}: logits, generated ids and gradients against PyTorch: "
          f"max error relative to scale {worst:.3g}")
    assert worst < 1e-4
