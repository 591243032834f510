"""The Redis MinHash index's log on the wire: its layout, the server-side scripts that append to it
and settle staged batches, the byte encoding of its entries, and the error a Redis that does not
answer is reported with (`synth.filters.redis_index` holds the index that reads and writes it).

Layout "log-v2" under `synth:minhash:{namespace}:{params hash}`, where the namespace is the
dataset's id from its manifest (or `minhash.namespace`, to share one index between datasets on
purpose):
- `:log`, a list of packed binary entries, appended to and never rewritten. An add entry holds
  records: per record its number of values and the length of its id, its band keys' low 32 bits
  (what the local index compares too), its shingle set (`verify: exact`) or signature
  (`estimate`), as little-endian uint32, then the ids; a staged add entry (`T`) is an add entry
  behind its batch's tag. A remove entry holds ids; a commit (`C`) or drop (`X`) entry, a tag.
- `:epoch`, a token made with the log's first entry (a dropped and rebuilt log has another);
  `:meta`, the parameters and the layout (an index of another layout is refused by `open`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

# KEYS: log, epoch, the writer's lease. ARGV: the log length the caller has replayed, the epoch it
# saw ("" if none), an epoch to set if there is none, the lease in ms ("" for committed records),
# then the entries. Appends them only if the log is unchanged; staged entries take the lease in
# the same step, so no pending tag is ever without one.
_APPEND = """
local epoch = redis.call('GET', KEYS[2])
if (epoch or '') ~= ARGV[2] or redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
if not epoch then redis.call('SET', KEYS[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[4])) end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
return 1
"""
# KEYS: log, tags, the owner's lease ("" to skip the check). ARGV: the tag, its outcome
# ("committed" or "dropped"), its entry. Settles a tag once: returns the outcome it has.
_SETTLE = """
if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return false end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[3])
  return ARGV[2]
end
return redis.call('HGET', KEYS[2], ARGV[1])
"""
_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_APPEND, _SETTLE)}


class RedisUnavailableError(RuntimeError):
    """Redis did not answer; the message names the URL."""


def _words(*parts: Sequence[int] | np.ndarray) -> bytes:
    return np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts]).astype("<u4").tobytes()


def _tag_entry(kind: bytes, tag: str) -> bytes:
    return kind + tag.encode()


def _split_ids(blob: bytes, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    return [blob[a:b].decode() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
