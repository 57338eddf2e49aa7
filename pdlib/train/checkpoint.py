"""Checkpoints that are written atomically and never unpickle arbitrary objects.

``.safetensors`` files hold a flat dict of tensors (weights for sharing); any other suffix holds a
nested training state (tensors, numbers, strings, lists, dicts) written by ``torch.save`` and read
back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import CheckpointError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomically(path: Path, write, verify=None, keep_previous: bool = False) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, ``verify(tmp_path)`` on the result,
    then rename it over ``path``.

    A crash or a failed verification leaves the old file untouched and no temporary file behind. With
    ``keep_previous`` the old file is also kept as ``PATH.prev`` (hard-linked before the rename, so a
    file is at ``path`` at every moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give the usual permissions
        if keep_previous and path.is_file():
            previous = path.with_name(path.name + ".prev")
            previous.unlink(missing_ok=True)
            try:
                os.link(path, previous)
            except OSError:  # file systems without hard links
                shutil.copy2(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 4 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path, state: dict, *, keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically and verified: the new file is read back before it replaces
    the old one. A ``.safetensors`` path takes a flat ``{name: tensor}`` dict (string metadata may go
    under the key ``"__metadata__"``); other paths take any nested dict of tensors and plain Python
    values. ``keep_previous=True`` keeps the replaced file as ``PATH.prev``."""
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = state.get("__metadata__")
        bad = [k for k, v in state.items() if k != "__metadata__" and not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"safetensors holds tensors only; not tensors: {bad}")
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items() if k != "__metadata__"}
        write = lambda tmp: save_file(tensors, tmp, metadata=metadata)  # noqa: E731
    else:
        write = lambda tmp: torch.save(state, tmp)  # noqa: E731
    is_st = path.suffix == ".safetensors"
    _write_atomically(path, write, verify=lambda tmp: _read(Path(tmp), is_st), keep_previous=keep_previous)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint`` without running any code stored in it.

    Raises ``CheckpointError`` when the file is missing, truncated, or would need arbitrary unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return _read(path, path.suffix == ".safetensors", map_location)


def _read(path: Path, safetensors: bool, map_location="cpu") -> dict:
    if safetensors:
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            state = load_file(path, device=str(map_location))
            with safe_open(path, "pt") as f:
                metadata = f.metadata()
        except Exception as err:
            raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err
        if metadata:
            state["__metadata__"] = metadata
        return state
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refusing to load {path}: it holds objects beyond tensors and plain "
                              f"values, which could run code when unpickled ({err})") from err
    except Exception as err:  # truncated or foreign files fail in many ways inside the unpickler
        raise CheckpointError(f"{path} is truncated or not a checkpoint: {type(err).__name__}: {err}") from err
