"""Checkpoints of `nlc train --fsdp` in torch.distributed.checkpoint (DCP) form: every rank writes its shards.

A DCP checkpoint folder RUN/checkpoints/step_NNNNNNNN holds

    __R_I.distcp        the pieces rank R holds: its shards of the parameters, of the optimizer state
                        and of the step levels' sums and momenta (and, from one rank, the RNG state)
    .metadata           DCP's index: which piece of which tensor lies where (rank 0 writes it)
    state.safetensors   the streaming state, every rank's rows (runs with --stream only; rank 0)
    meta.json           as in the ordinary format (nlc.train.checkpoint), with "format": "dcp": the step,
                        spec hash, trainer settings, and the size and sha256 of every file above

The tensors are saved under the names of the ordinary format, `model.<parameter>` and
`trainer.<entry>` (`trainer.optim.3.m2.running`, `trainer.steplevel.sum.<parameter>`,
`trainer.rng.torch`): a DCP checkpoint reads into the same Checkpoint, and every check of the
ordinary format (E621, E622) applies to it unchanged.

Saving (every rank, nlc.train.checkpoint.save_sharded): the folder is written as
RUN/checkpoints/.tmp_step_NNNNNNNN, which no reader looks at; DCP writes every rank's shards in
parallel and rank 0 the .metadata; each rank hashes its own files; rank 0 writes meta.json, then
renames the folder into place. A kill at any point before the rename leaves the previous
checkpoints as they were.

Reading (any number of processes, sharded or not, and `nlc eval`): the files are checked against
meta.json (size, sha256) like an ordinary checkpoint's; .metadata, a pickle, is read with only
DCP's own metadata classes allowed (a pickle may otherwise run code); every piece it indexes must
lie inside a listed shard file, and every tensor must be covered by pieces whose bytes are there
(so that an edited index can neither read outside the folder nor claim a huge tensor). DCP then
reads each tensor into a destination laid out as this process keeps it: a shard (DTensor) under
--fsdp, a whole tensor otherwise; DCP cuts the saved pieces to fit (resharding).
"""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from pathlib import Path

import torch

from nlc.train.errors import train_error

FORMAT = "dcp"  # meta.json's "format" of a DCP checkpoint
METADATA = ".metadata"
SHARD = re.compile(r"__(\d+)_(\d+)\.distcp")  # the files DCP's FileSystemWriter names (rank, file)
STATE = "state.safetensors"
TEMP_PREFIX = ".tmp_"  # a checkpoint being written: RUN/checkpoints/.tmp_step_NNNNNNNN
GROUPS = ("model", "trainer")


def is_file_name(name) -> bool:
    """Is `name` a file a DCP checkpoint may list?"""
    return isinstance(name, str) and (name in (METADATA, STATE) or SHARD.fullmatch(name) is not None)


# ---- reading ----------------------------------------------------------------------------------

def read_tensors(ckpt: Path, metadata: bytes, files: dict, like: dict | None = None) -> tuple[dict, dict]:
    """(model tensors, trainer tensors) of a verified DCP checkpoint: a shard of every tensor whose name,
    shape and dtype are those of like[group][name] (laid out as that one is: a DTensor is read as this
    rank's shard), the whole tensor otherwise (for the checks that refuse it, E622)."""
    import torch.distributed.checkpoint as tdcp

    index = _read_index(ckpt, metadata)
    try:  # the records' fields hold whatever the pickle gave them: one of another type is a damaged index
        _check_index(ckpt, index, files)
    except (TypeError, AttributeError, ValueError, OverflowError) as e:
        raise _corrupt(ckpt, f"{METADATA} is not a DCP index ({type(e).__name__}: {str(e)[:200]})") from None
    like = like or {}
    into = {group: {} for group in GROUPS}
    for fqn, md in index.state_dict_metadata.items():
        group, _, name = fqn.partition(".")
        want = like.get(group, {}).get(name)
        fits = (isinstance(want, torch.Tensor) and tuple(want.shape) == tuple(md.size)
                and want.dtype == md.properties.dtype)
        into[group][name] = torch.zeros_like(want) if fits else torch.zeros(tuple(md.size), dtype=md.properties.dtype)
    try:  # no collective: each process reads what it needs (a refused checkpoint then stops no one mid-way)
        with warnings.catch_warnings():  # DCP warns that it reads "in a single process": no_dist says so
            warnings.filterwarnings("ignore", message=r"torch.distributed is disabled")
            tdcp.load(into, storage_reader=_Reader(ckpt, index), no_dist=True)
    except Exception as e:  # noqa: BLE001 - a shard that does not parse is a damaged file
        raise _corrupt(ckpt, f"its shards cannot be read ({type(e).__name__}: {str(e).strip()[:300]})") from None
    return into["model"], into["trainer"]


def _corrupt(ckpt: Path, what: str):
    return train_error("E621", f"checkpoint {ckpt} is corrupt: {what}", "it was edited or damaged")


def _index_classes() -> dict:
    """The classes .metadata may name: DCP's own metadata records, torch.Size and dtypes, a path."""
    dtypes = {name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}
    return {"torch.distributed.checkpoint.metadata": {
                "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING"},
            "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
            "torch": {"Size", *dtypes},
            "torch.serialization": {"_get_layout"},
            "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"}}


class _IndexUnpickler(pickle.Unpickler):
    allowed: dict = {}

    def find_class(self, module, name):
        if name not in self.allowed.get(module, ()):
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a DCP index never holds")
        return super().find_class(module, name)


def _read_index(ckpt: Path, raw: bytes):
    """DCP's Metadata from the bytes of .metadata, unpickled with only DCP's own classes allowed."""
    from torch.distributed.checkpoint import metadata

    unpickler = _IndexUnpickler(io.BytesIO(raw))
    unpickler.allowed = _index_classes()
    try:
        index = unpickler.load()
    except Exception as e:  # noqa: BLE001 - anything that is not a DCP index
        raise _corrupt(ckpt, f"{METADATA} is not a DCP index ({type(e).__name__}: {str(e)[:200]})") from None
    if not (isinstance(index, metadata.Metadata) and isinstance(index.state_dict_metadata, dict)
            and isinstance(index.storage_data, dict)):
        raise _corrupt(ckpt, f"{METADATA} is not a DCP index of a file system checkpoint")
    return index


def _check_index(ckpt: Path, index, files: dict) -> None:
    """Every tensor of the index is an nlc checkpoint entry whose pieces cover it and lie, whole, inside
    the listed shard files (E621 otherwise)."""
    from torch.distributed.checkpoint import filesystem, metadata

    lengths: dict[str, int] = {}  # bytes of the pieces of each tensor
    for key, info in index.storage_data.items():
        if not (isinstance(key, metadata.MetadataIndex) and isinstance(info, filesystem._StorageInfo)):
            raise _corrupt(ckpt, f"{METADATA} indexes something that is not a piece of a file")
        name = info.relative_path
        if not (isinstance(name, str) and SHARD.fullmatch(name) and name in files):
            raise _corrupt(ckpt, f"{METADATA} points into `{name}`, not a shard file the checkpoint lists")
        if not (_whole(info.offset) and _whole(info.length) and info.offset + info.length <= files[name]["bytes"]):
            raise _corrupt(ckpt, f"{METADATA} points past the end of {name}")
        if info.transform_descriptors:
            raise _corrupt(ckpt, f"{METADATA} asks for transforms ({info.transform_descriptors!r}) nlc never writes")
        lengths[key.fqn] = lengths.get(key.fqn, 0) + info.length
    for fqn, md in index.state_dict_metadata.items():
        group, _, name = fqn.partition(".") if isinstance(fqn, str) else ("", "", "")
        if group not in GROUPS or not name:
            raise _corrupt(ckpt, f"{METADATA} holds `{fqn}`, not a model or trainer entry")
        if not (isinstance(md, metadata.TensorStorageMetadata) and isinstance(md.properties.dtype, torch.dtype)
                and all(_whole(n) for n in md.size)):
            raise _corrupt(ckpt, f"{METADATA}: `{fqn}` is not a tensor")
        covered = 0
        for chunk in md.chunks:
            if not (len(chunk.offsets) == len(chunk.sizes) == len(md.size)
                    and all(map(_whole, chunk.offsets)) and all(map(_whole, chunk.sizes))
                    and all(o + s <= n for o, s, n in zip(chunk.offsets, chunk.sizes, md.size))):
                raise _corrupt(ckpt, f"{METADATA}: a piece of `{fqn}` lies outside its shape {tuple(md.size)}")
            covered += math.prod(chunk.sizes)
        numel = math.prod(md.size)
        if covered != numel or numel * md.properties.dtype.itemsize > lengths.get(fqn, 0):
            raise _corrupt(ckpt, f"{METADATA}: the pieces of `{fqn}` do not make up its shape {tuple(md.size)}")


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _reader_class():
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        """DCP's file reader, with the index already read and checked (DCP's own would unpickle .metadata
        with pickle.load, which runs whatever a pickle says)."""

        def __init__(self, path, index):
            super().__init__(path)
            self.index = index

        def read_metadata(self, *args, **kwargs):
            if getattr(self.index, "storage_meta", None) is None:
                self.index.storage_meta = StorageMeta()
            self.index.storage_meta.load_id = self.load_id
            return self.index

    return Reader


def _Reader(ckpt: Path, index):  # noqa: N802 - built on first use: torch.distributed.checkpoint is imported then
    return _reader_class()(ckpt, index)
