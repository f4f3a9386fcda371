"""Small inline specs shared by the tests (independent of examples/)."""

TITANS = """\
# Titans neural memory (inline test spec)
model titans_lmm(dim = 32, chunk = 4, depth = 2) {
  repeat depth {
    block memory_layer {
      let h = rmsnorm(x)
      let q = l2norm(silu(conv(linear(h, dim), 4)))
      let k = l2norm(silu(conv(linear(h, dim), 4)))  # keys
      let v = silu(conv(linear(h, dim), 4))

      # the long-term memory
      level memory {
        state mlp(dim, 4 * dim, depth = 2, residual = true)
        init learned
        context (k, v)
        objective l2
        update momentum(beta = sigmoid(linear(h, 1)))
        lr sigmoid(linear(h, 1)) * 0.1
        retain 1 - sigmoid(linear(h, 1)) * 0.01
        period chunk tokens
        online
      }

      out = linear(memory(q), dim)
    }
  }
}
"""

TITANS_YAML = """\
model: titans_lmm
params: {dim: 32, chunk: 4, depth: 2}
body:
  - repeat depth:
      - block memory_layer:
          - let h: rmsnorm(x)
          - let q: l2norm(silu(conv(linear(h, dim), 4)))
          - let k: l2norm(silu(conv(linear(h, dim), 4)))
          - let v: silu(conv(linear(h, dim), 4))
          - level memory:
              state: mlp(dim, 4 * dim, depth = 2, residual = true)
              init: learned
              context: (k, v)
              objective: l2
              update: momentum(beta = sigmoid(linear(h, 1)))
              lr: sigmoid(linear(h, 1)) * 0.1
              retain: 1 - sigmoid(linear(h, 1)) * 0.01
              period: chunk tokens
              online: true
          - out: linear(memory(q), dim)
"""

SGD = """\
optimizer sgd_momentum(lr = 0.01, momentum = 0.9) {
  level m {
    state like(param)
    init zeros
    context grad(loss)
    objective dot
    update gd
    lr 1
    retain momentum
    period 1 steps
  }

  level weights {
    state params
    init zeros
    context grad(loss)
    update m
    lr lr
    period 1 steps
  }
}
"""

CMS = """\
model cms(dim = 16) {
  block continuum {
    level fast {
      state mlp(dim)
      init learned
      context loss
      objective dot
      update gd
      period 1 steps
    }

    level mid {
      state mlp(dim)
      init learned
      context loss
      objective dot
      update gd
      period 4 steps
    }

    level slow {
      state mlp(dim)
      init learned
      context loss
      objective dot
      update gd
      period 16 steps
    }

    out = slow(mid(fast(x)))
  }
}
"""


# two levels of different periods in one block: a fast one every chunk, a slow MLP every `ratio` chunks
TWO_PERIODS = """
model two_periods(dim = 8, chunk = 4, ratio = 2) {
  block b {
    let k = l2norm(linear(x, dim))
    let v = linear(x, dim)
    level fast {
      state linear(dim, dim)
      init zeros
      context (k, v)
      update gd
      lr 0.1
      period chunk tokens
    }
    level slow {
      state mlp(dim, 2 * dim, depth = 2, residual = true)
      init learned
      context (k, v)
      update momentum(beta = 0.9)
      lr sigmoid(linear(x, 1)) * 0.1
      period ratio * chunk tokens
    }
    out = fast(k) + slow(k)
  }
}
"""

# An attention inside the chunk loop (its output feeds the level's keys) over a sliding window: its cache
# has a fixed length from the first chunk (runtime.layers.Attention.capacity), so every chunk step has the
# same shapes. WHOLE_PAST: the same without the window, a cache that grows chunk by chunk.
WINDOWED = """
model windowed(dim = 8, chunk = 4) {
  block b {
    let q = l2norm(linear(x, dim))
    let y = attention(x, 2, window = 6, memory = mem(q))
    let k = l2norm(linear(y, dim))
    level mem {
      state linear(dim, dim)
      init zeros
      context (k, linear(y, dim))
      update gd
      lr 0.1
      period chunk tokens
    }
    out = y
  }
}
"""
WHOLE_PAST = WINDOWED.replace("model windowed", "model whole_past").replace(", window = 6", "")
