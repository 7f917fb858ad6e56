"""The spec as torch modules (used by backends/torch_eager.py; imports torch at once).

The modules hold the parameters under their canonical nanoGPT names (`h.0.attn.c_attn.weight`
...), so canonical weights load by name. The arithmetic goes through `ops`, the backend's op
functions, so that level 1 of the conformance ladder tests exactly what the model runs and a
subclass swaps one op (attention, for a kernel) without touching the model.
"""

from __future__ import annotations

from torch import nn

from gptspec.spec import LN_EPS, MLP_RATIO


class CausalSelfAttention(nn.Module):
    def __init__(self, spec, ops):
        super().__init__()
        self.c_attn = nn.Linear(spec.n_embd, 3 * spec.n_embd)
        self.c_proj = nn.Linear(spec.n_embd, spec.n_embd)
        self.n_head, self.ops = spec.n_head, ops

    def forward(self, x, kv=None, start=0):
        B, T, C = x.shape
        qkv = self.ops.linear(x, self.c_attn.weight, self.c_attn.bias)  # (B, T, 3C)
        q, k, v = qkv.view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS)
        if kv is not None:  # generation: write this step's keys and values, attend over all so far
            K, V = kv
            K[:, :, start:start + T] = k
            V[:, :, start:start + T] = v
            k, v = K[:, :, :start + T], V[:, :, :start + T]
        y = self.ops.attention(q, k, v)  # (B, NH, T, HS)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.ops.linear(y, self.c_proj.weight, self.c_proj.bias)


class MLP(nn.Module):
    def __init__(self, spec, ops):
        super().__init__()
        self.c_fc = nn.Linear(spec.n_embd, MLP_RATIO * spec.n_embd)
        self.c_proj = nn.Linear(MLP_RATIO * spec.n_embd, spec.n_embd)
        self.ops = ops

    def forward(self, x):
        h = self.ops.linear_gelu(x, self.c_fc.weight, self.c_fc.bias)  # (B, T, 4C)
        return self.ops.linear(h, self.c_proj.weight, self.c_proj.bias)


class Block(nn.Module):
    def __init__(self, spec, ops):
        super().__init__()
        self.ln_1 = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.attn = CausalSelfAttention(spec, ops)
        self.ln_2 = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.mlp = MLP(spec, ops)
        self.ops = ops

    def forward(self, x, kv=None, start=0):
        x = x + self.attn(self.ops.layernorm(x, self.ln_1.weight, self.ln_1.bias), kv, start)
        return x + self.mlp(self.ops.layernorm(x, self.ln_2.weight, self.ln_2.bias))


class GPT(nn.Module):
    def __init__(self, spec, ops):
        super().__init__()
        self.wte = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.wpe = nn.Embedding(spec.block_size, spec.n_embd)
        self.h = nn.ModuleList(Block(spec, ops) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.ops = ops

    def hidden(self, idx, kv=None, start=0):
        """idx (B, T) at positions start.. -> final hidden states (B, T, C) after ln_f.
        kv: per-layer (K, V) caches (B, NH, block_size, HS) to fill and attend over."""
        x = self.ops.embedding(idx, self.wte.weight, self.wpe.weight, start)  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, None if kv is None else kv[i], start)
        return self.ops.layernorm(x, self.ln_f.weight, self.ln_f.bias)

    def forward(self, idx, targets=None):
        logits = self.ops.linear(self.hidden(idx), self.wte.weight)  # (B, T, V), lm_head tied to wte
        loss = None if targets is None else self.ops.cross_entropy(logits, targets)
        return logits, loss
