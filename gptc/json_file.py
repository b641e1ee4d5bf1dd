"""Small JSON files that come with checkpoints (config.json, hparams.json, shard
indexes): read with a size bound and parsed, every failure naming the file."""
import json

from .io import CheckpointFormatError

__all__ = ["read_json_object"]


def read_json_object(path, what, max_bytes=1 << 20):
    """The JSON object in ``path``. A file larger than ``max_bytes``, not JSON or
    not an object raises CheckpointFormatError; ``what`` says what the object
    should hold. A missing file raises FileNotFoundError naming it."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise CheckpointFormatError(f"{path}: more than {max_bytes} bytes, too large for "
                                    f"{what}")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object of {what}")
    return value
