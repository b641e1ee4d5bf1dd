"""gptc.nn: the layers and the chapter-4 model, with PyTorch's and the book's names."""
from .gpt import (DummyGPTModel, DummyLayerNorm, DummyTransformerBlock, FeedForward,
                  GPTModel, MultiHeadAttention, TransformerBlock)
from . import functional, utils
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, MSELoss, ReLU
from .module import Int8Weight, Module, ModuleList, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "Linear", "Embedding", "Dropout",
           "ReLU", "GELU", "LayerNorm", "FeedForward", "MultiHeadAttention", "TransformerBlock",
           "GPTModel", "DummyGPTModel", "DummyTransformerBlock", "DummyLayerNorm", "MSELoss",
           "Int8Weight", "functional", "utils"]
