"""Tasks: language modelling and synthetic tasks generated on the fly from a seed.

Every task hands out `Batch`es of byte tokens: `tokens[b, i]` is the input and
`targets[b, i]` the next byte (the sequence shifted by one), `mask` marks the targets that
are answers (accuracy counts them) and `loss_mask` the targets the training loss counts.
A batch depends only on (seed, split, step): training can resume at any step and get the
same data, and every model in a comparison sees the same examples.

    lm          bytes of a corpus (default: the Python standard library; --data for your own)
    mqar        multi-query associative recall: key-value pairs, then queries of the keys
    niah        needle in a haystack: a pass key hidden at a depth of a long filler text
                (variant single | multikey | multivalue)
    continual   a stream of text domains (stdlib packages, or one --data folder each),
                trained one after another; evaluated on every domain after each one
    parity      "1011=1": the parity of a bit string
    brackets    "([])[=Y": is a string of two kinds of brackets balanced

Task options follow the name: `mqar:kv=16`, `niah:variant=multikey,keys=4`,
`continual:domains=email+json`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from nlc.train.data import Corpus, load_corpus
from nlc.train.errors import train_error

PAD = 0
KEYS = range(1, 128)      # MQAR keys are bytes 1..127
VALUES = range(128, 256)  # MQAR values are bytes 128..255
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NAMES = ("apple", "river", "violet", "copper", "falcon", "maple", "orbit", "harbor", "quartz", "meadow",
         "lantern", "cedar", "pebble", "tundra", "saffron", "willow", "ember", "glacier", "juniper", "comet")
DEFAULT_DOMAINS = ("email", "asyncio", "tkinter", "pydoc_data")


@dataclass
class Batch:
    tokens: torch.Tensor     # [B, T] long
    targets: torch.Tensor    # [B, T] long: the next byte
    mask: torch.Tensor       # [B, T] bool: answers (accuracy)
    loss_mask: torch.Tensor  # [B, T] bool: what the training loss counts

    def map(self, fn) -> "Batch":
        """The batch with `fn` applied to each of its tensors."""
        return Batch(*(fn(t) for t in (self.tokens, self.targets, self.mask, self.loss_mask)))

    def to(self, device) -> "Batch":
        return self.map(lambda t: t.to(device))


def seed_for(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def _batch_from(seqs: Sequence[np.ndarray], answers: Sequence[Sequence[int]], loss_on: str) -> Batch:
    """Sequences of length T+1 and their answer indices -> a Batch (targets are seq[1:])."""
    s = torch.as_tensor(np.stack(seqs), dtype=torch.long)
    mask = torch.zeros(s.shape[0], s.shape[1] - 1, dtype=torch.bool)
    for b, idx in enumerate(answers):
        for i in idx:
            mask[b, i - 1] = True  # the answer at seq[i] is the target of input position i - 1
    loss_mask = torch.ones_like(mask) if loss_on == "all" else mask.clone()
    return Batch(s[:, :-1].contiguous(), s[:, 1:].contiguous(), mask, loss_mask)


def _encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


# ---- the generators: one example each; tests check their answers independently ----------

def mqar_example(rng: np.random.Generator, length: int, num_kv: int, num_queries: int | None = None):
    """Multi-query associative recall (Zoology): k1 v1 ... kN vN, then queries `k v` at random slots.

    Returns (seq [length], answer indices): every answer is the value that followed its key
    in the key-value part. Gaps between queries hold PAD.
    """
    q = num_kv if num_queries is None else num_queries
    slots = (length - 2 * num_kv) // 2
    if num_kv > len(KEYS) or slots < q or num_kv < 1:
        raise train_error("E614", f"MQAR with {num_kv} pairs and {q} queries does not fit in {length} tokens",
                          f"use at most {max(1, length // 4)} pairs (kv=...) or longer sequences (--seq)")
    keys = rng.choice(np.array(KEYS), num_kv, replace=False)
    values = rng.choice(np.array(VALUES), num_kv, replace=True)
    seq = np.full(length, PAD, dtype=np.int64)
    seq[0:2 * num_kv:2] = keys
    seq[1:2 * num_kv:2] = values
    which = rng.permutation(num_kv)[:q]
    where = np.sort(rng.choice(slots, q, replace=False))
    answers = []
    for i, slot in zip(which, where):
        p = 2 * num_kv + 2 * int(slot)
        seq[p], seq[p + 1] = keys[i], values[i]
        answers.append(p + 1)
    return seq, answers


def _passkey(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))


def niah_example(rng: np.random.Generator, length: int, depth: float, variant: str = "single",
                 keys: int = 4, values: int = 3, digits: int = 5):
    """Needle in a haystack: the filler text with needles, then a question and its answer.

    single:     "The pass key is 71432. Remember it. 71432 is the pass key." at `depth`
    multikey:   `keys` needles "The pass key for NAME is V."; the question asks for the one at `depth`
    multivalue: `values` needles for one name (the first at `depth`); the answer lists them all
    Returns (seq [length], answer indices (the digits of the answer), info).
    """
    if variant == "single":
        v = _passkey(rng, digits)
        needles = [(depth, f"The pass key is {v}. Remember it. {v} is the pass key. ")]
        question, answer = "What is the pass key? The pass key is ", v
    elif variant == "multikey":
        names = rng.choice(len(NAMES), keys, replace=False)
        vals = [_passkey(rng, digits) for _ in names]
        needles = [(depth if i == 0 else float(rng.random()), f"The pass key for {NAMES[n]} is {v}. ")
                   for i, (n, v) in enumerate(zip(names, vals))]
        name = NAMES[names[0]]
        question, answer = f"What is the pass key for {name}? The pass key for {name} is ", vals[0]
    elif variant == "multivalue":
        name = NAMES[int(rng.integers(len(NAMES)))]
        vals = [_passkey(rng, digits) for _ in range(values)]
        depths = [depth] + sorted(float(rng.random()) for _ in range(values - 1))
        needles = [(d, f"The pass key for {name} is {v}. ") for d, v in zip(depths, vals)]
        # listed in the order they appear in the text
        order = sorted(range(values), key=lambda i: (depths[i], i))
        question = f"What are the pass keys for {name}? The pass keys for {name} are "
        answer = ", ".join(vals[i] for i in order)
    else:
        raise train_error("E614", f"unknown NIAH variant `{variant}`", "use single, multikey or multivalue")
    tail = question + answer
    room = length - len(tail) - sum(len(n) for _, n in needles)
    if room < 0:
        raise train_error("E614", f"a {variant} NIAH example needs more than {length} tokens",
                          f"use at least {length - room + 64} tokens")
    hay = (FILLER * (room // len(FILLER) + 1))[:room]
    # insert at sentence ends, deepest first so earlier positions stay valid
    spots = []
    for d, text in needles:
        pos = int(round(min(max(d, 0.0), 1.0) * room))
        cut = hay.rfind(". ", 0, pos + 1)
        spots.append((cut + 2 if cut >= 0 and pos > 0 else 0, text))
    for pos, piece in sorted(spots, key=lambda s: -s[0]):
        hay = hay[:pos] + piece + hay[pos:]
    text = hay + tail
    seq = np.array(_encode(text), dtype=np.int64)
    start = len(text) - len(answer)
    answers = [start + i for i, ch in enumerate(answer) if ch.isdigit()]
    return seq, answers, {"needle_at": text.find(needles[0][1]) / length, "answer": answer}


def parity_bits(rng: np.random.Generator, n: int) -> str:
    return "".join("1" if b else "0" for b in rng.integers(0, 2, n))


def balanced(s: str) -> bool:
    """Is a string of ()[] balanced (a stack)."""
    pairs, stack = {")": "(", "]": "["}, []
    for ch in s:
        if ch in "([":
            stack.append(ch)
        elif not stack or stack.pop() != pairs[ch]:
            return False
    return not stack


def dyck_word(rng: np.random.Generator, n: int) -> str:
    """A uniformly-ish random balanced word of even length n over ()[]."""
    out, stack = [], []
    for r in range(n, 0, -1):
        d = len(stack)
        if d == 0 or (d < r and rng.random() < 0.5):
            ch = "([" [int(rng.integers(2))]
            stack.append(ch)
            out.append(ch)
        else:
            out.append(")" if stack.pop() == "(" else "]")
    return "".join(out)


def brackets_string(rng: np.random.Generator, max_len: int) -> str:
    """Half balanced words, half corrupted ones (their label is recomputed, never assumed)."""
    n = 2 * int(rng.integers(1, max_len // 2 + 1))
    s = list(dyck_word(rng, n))
    if rng.random() < 0.5:
        i = int(rng.integers(n))
        how = int(rng.integers(3))
        if how == 0:  # change the kind of one bracket
            s[i] = {"(": "[", "[": "(", ")": "]", "]": ")"}[s[i]]
        elif how == 1:  # turn it the other way
            s[i] = {"(": ")", ")": "(", "[": "]", "]": "["}[s[i]]
        else:  # swap two positions
            j = int(rng.integers(n))
            s[i], s[j] = s[j], s[i]
    return "".join(s)


def packed_examples(rng: np.random.Generator, length: int, make: Callable[[], tuple[str, str]]):
    """Examples "QUESTION=A\\n" packed into a sequence of `length` bytes; answer indices of complete ones."""
    text, answers = "", []
    while len(text) < length:
        q, a = make()
        piece = f"{q}={a}\n"
        if len(text) + len(piece) <= length:
            answers.append(len(text) + len(q) + 1)
        text += piece
    text = text[:length]
    return np.array(_encode(text), dtype=np.int64), answers


# ---- tasks ------------------------------------------------------------------------------

@dataclass
class Task:
    name: str
    options: dict = field(default_factory=dict)
    loss_on: str = "answers"  # "answers" or "all"
    metric: str = "accuracy"  # the headline metric: "accuracy" or "loss"

    def describe(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}

    def batch(self, step: int, batch_size: int, seq_len: int, seed: int, split: str = "train") -> Batch:
        rng = np.random.default_rng(seed_for(seed, self.name, split, step))
        seqs, answers = [], []
        for _ in range(batch_size):
            s, a = self.example(rng, seq_len + 1)
            seqs.append(s)
            answers.append(a)
        return _batch_from(seqs, answers, self.loss_on)

    def example(self, rng, length):  # pragma: no cover - every synthetic task overrides it
        raise NotImplementedError

    def check(self, seq_len: int) -> None:
        """Raise E614 when the options do not fit sequences of seq_len tokens."""
        self.batch(0, 1, seq_len, 0)


class MQAR(Task):
    def __init__(self, kv: int | None = None, min_kv: int | None = None, queries: int | None = None):
        super().__init__("mqar", {k: v for k, v in (("kv", kv), ("min_kv", min_kv), ("queries", queries))
                                  if v is not None})

    def kv_range(self, length: int) -> tuple[int, int]:
        kv = self.options.get("kv") or max(1, min(64, length // 4))
        lo = self.options.get("min_kv") or max(1, kv // 4)
        return min(lo, kv), kv

    def example(self, rng, length, num_kv: int | None = None):
        lo, hi = self.kv_range(length)
        n = num_kv if num_kv is not None else int(rng.integers(lo, hi + 1))
        return mqar_example(rng, length, n, self.options.get("queries"))

    def check(self, seq_len: int) -> None:
        lo, hi = self.kv_range(seq_len + 1)
        self.example(np.random.default_rng(0), seq_len + 1, num_kv=hi)

    def eval_counts(self, length: int) -> list[int]:
        lo, hi = self.kv_range(length)
        return sorted({lo, max(lo, hi // 2), hi})


class NIAH(Task):
    VARIANTS = ("single", "multikey", "multivalue")

    def __init__(self, variant: str = "single", keys: int = 4, values: int = 3, digits: int = 5):
        if variant not in self.VARIANTS + ("mix",):
            raise train_error("E614", f"unknown NIAH variant `{variant}`", "use single, multikey, multivalue or mix")
        super().__init__("niah", {"variant": variant, "keys": keys, "values": values, "digits": digits}, "all")

    def example(self, rng, length, depth: float | None = None, variant: str | None = None):
        o = self.options
        v = variant or o["variant"]
        if v == "mix":
            v = self.VARIANTS[int(rng.integers(3))]
        d = float(rng.random()) if depth is None else depth
        s, a, _ = niah_example(rng, length, d, v, o["keys"], o["values"], o["digits"])
        return s, a

    def eval_variant(self) -> str:
        return "single" if self.options["variant"] == "mix" else self.options["variant"]


class Parity(Task):
    def __init__(self, min_bits: int = 1, max_bits: int = 16):
        super().__init__("parity", {"min_bits": min_bits, "max_bits": max_bits})

    def example(self, rng, length):
        o = self.options

        def make():
            bits = parity_bits(rng, int(rng.integers(o["min_bits"], o["max_bits"] + 1)))
            return bits, str(bits.count("1") % 2)
        return packed_examples(rng, length, make)


class Brackets(Task):
    def __init__(self, max_len: int = 16):
        super().__init__("brackets", {"max_len": max_len})

    def example(self, rng, length):
        def make():
            s = brackets_string(rng, self.options["max_len"])
            return s, "Y" if balanced(s) else "N"
        return packed_examples(rng, length, make)


class LanguageModel(Task):
    """Next-byte prediction on a corpus: random windows (or, streaming, consecutive ones)."""

    def __init__(self, corpus: Corpus):
        super().__init__("lm", {"corpus": corpus.name}, "all", "loss")
        self.corpus = corpus

    def _buffer(self, split: str, seq_len: int) -> torch.Tensor:
        buf = self.corpus.tokens(split)
        if len(buf) < seq_len + 2:
            raise train_error("E612", f"the {split} split of `{self.corpus.name}` has {len(buf)} bytes, too few "
                              f"for sequences of {seq_len} tokens", "pass more text, or use a shorter --seq")
        return buf

    def batch(self, step, batch_size, seq_len, seed, split="train") -> Batch:
        buf = self._buffer(split, seq_len)
        g = torch.Generator().manual_seed(seed_for(seed, "lm", split, step))
        starts = torch.randint(0, len(buf) - seq_len - 1, (batch_size,), generator=g)
        return self._rows(buf, starts, seq_len)

    def stream_batch(self, step, batch_size, seq_len, seed, split="train") -> Batch:
        """Row b reads the corpus consecutively from its own start: step s is the s-th piece."""
        buf = self._buffer(split, seq_len)
        g = torch.Generator().manual_seed(seed_for(seed, "lm-stream", split))
        span = len(buf) - seq_len - 1
        starts = (torch.randint(0, span, (batch_size,), generator=g) + step * seq_len) % span
        return self._rows(buf, starts, seq_len)

    @staticmethod
    def _rows(buf, starts, seq_len) -> Batch:
        idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
        s = buf[idx].long()
        ones = torch.ones(s.shape[0], seq_len, dtype=torch.bool)
        return Batch(s[:, :-1].contiguous(), s[:, 1:].contiguous(), ones, ones.clone())

    def check(self, seq_len: int) -> None:
        self._buffer("train", seq_len)


class Continual(Task):
    """Text domains one after another: step s trains on domain s * n // total_steps."""

    def __init__(self, domains: Sequence[tuple[str, Corpus]]):
        super().__init__("continual", {"domains": "+".join(n for n, _ in domains)}, "all", "loss")
        self.domains = [(n, LanguageModel(c)) for n, c in domains]
        self.total_steps = 1

    def schedule(self, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)

    def domain_of(self, step: int) -> int:
        n = len(self.domains)
        return min(n - 1, step * n // self.total_steps)

    def phase_ends(self) -> list[int]:
        """The last step of each domain's phase."""
        ends = []
        for s in range(self.total_steps):
            if s == self.total_steps - 1 or self.domain_of(s + 1) != self.domain_of(s):
                ends.append(s)
        return ends

    def batch(self, step, batch_size, seq_len, seed, split="train") -> Batch:
        return self.domains[self.domain_of(step)][1].batch(step, batch_size, seq_len, seed, split)

    def check(self, seq_len: int) -> None:
        for _, t in self.domains:
            t.check(seq_len)
            t._buffer("val", seq_len)


# ---- task names and options -------------------------------------------------------------

TASKS = ("lm", "mqar", "niah", "continual", "parity", "brackets")
_OPTIONS = {
    "lm": {},
    "mqar": {"kv": int, "min_kv": int, "queries": int},
    "niah": {"variant": str, "keys": int, "values": int, "digits": int},
    "continual": {"domains": str},
    "parity": {"min_bits": int, "max_bits": int},
    "brackets": {"max_len": int},
}


def parse_task(text: str) -> tuple[str, dict]:
    """"niah:variant=multikey,keys=4" -> ("niah", {"variant": "multikey", "keys": 4})."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        raise train_error("E614", f"unknown task `{name}`",
                          (f"did you mean `{close[0]}`? " if close else "") + "tasks: " + ", ".join(TASKS))
    options = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        kinds = _OPTIONS[name]
        if not sep or key not in kinds:
            raise train_error("E614", f"task `{name}` has no option `{key}`",
                              "options: " + (", ".join(f"{k}=..." for k in kinds) or "none"))
        try:
            options[key] = kinds[key](value)
        except ValueError:
            raise train_error("E614", f"task option {key}={value!r} is not a {kinds[key].__name__}") from None
        if kinds[key] is int and options[key] < 1:
            raise train_error("E614", f"task option {key}={value} must be at least 1")
    return name, options


def make_task(text: str, data: Sequence[str] | None = None) -> Task:
    """The task named by `text` ("name" or "name:opt=value,...") over user data or the stdlib."""
    name, options = parse_task(text)
    if name == "lm":
        return LanguageModel(load_corpus(data))
    if name == "continual":
        if data:
            if len(data) < 2:
                raise train_error("E614", "a continual stream needs at least two domains",
                                  "pass --data once per domain (a folder or file each)")
            domains = [(str(p).rstrip("/").split("/")[-1], load_corpus([p])) for p in data]
        else:
            names = options.get("domains", "+".join(DEFAULT_DOMAINS)).split("+")
            if len(names) < 2:
                raise train_error("E614", "a continual stream needs at least two domains",
                                  "e.g. continual:domains=email+asyncio")
            domains = [(n, load_corpus(packages=[n])) for n in names]
        return Continual(domains)
    return {"mqar": MQAR, "niah": NIAH, "parity": Parity, "brackets": Brackets}[name](**options)


def parse_length(text: str) -> int:
    """"4k" -> 4096, "512" -> 512."""
    m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", text)
    if not m:
        raise train_error("E614", f"not a length: {text!r}", "write lengths like 512, 1k, 4k, 16k")
    return int(m.group(1)) * (1024 if m.group(2) else 1)


def accuracy_counts(logits: torch.Tensor, batch: Batch) -> tuple[int, int, int, int]:
    """(correct answer tokens, answer tokens, fully correct sequences, sequences with answers)."""
    pred = logits.argmax(-1)
    right = (pred == batch.targets) & batch.mask
    has = batch.mask.any(-1)
    whole = ((right | ~batch.mask).all(-1) & has)
    return int(right.sum()), int(batch.mask.sum()), int(whole.sum()), int(has.sum())


def bits_per_byte(loss_nats: float) -> float:
    return loss_nats / math.log(2)
