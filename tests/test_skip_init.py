"""gptc.nn.utils.skip_init: a module built without drawing its initial weights."""
import numpy as np
import pytest

import gptc
from gptc.nn.utils import init_skipped, skip_init
from conftest import small_config


def test_builds_the_same_module_without_any_draw():
    """Same parameter names and shapes as GPTModel(cfg); the default generator does not
    move; layer norms still start at ones and zeros."""
    gptc.manual_seed(4)
    state = gptc.get_rng_state()
    model = skip_init(gptc.GPTModel, small_config(), tie_weights=True)
    assert np.array_equal(gptc.get_rng_state(), state)
    normal = gptc.GPTModel(small_config(), tie_weights=True)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in normal.state_dict().items()]
    assert model.out_head.weight is model.tok_emb.weight
    assert np.array_equal(model.final_norm.scale, np.ones(72, np.float32))


def test_initialisation_resumes_after_it_even_on_error():
    """Outside skip_init (also after an exception inside it) layers draw their weights
    again."""
    with pytest.raises(ValueError):
        skip_init(gptc.nn.Linear, 3, -1)
    assert not init_skipped()
    gptc.manual_seed(1)
    first = gptc.nn.Linear(3, 2).weight.copy()
    gptc.manual_seed(1)
    assert np.array_equal(gptc.nn.Linear(3, 2).weight, first)
